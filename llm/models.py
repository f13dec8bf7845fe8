"""The model catalog (and, from the gateway issue on, providers)."""

from __future__ import annotations

from django.db import models


class ModelConfig(models.Model):
    """One model a room's agents may use, identified by its OpenRouter-style id
    (`openai/gpt-4o-mini`). The context window drives the context budget."""

    id = models.CharField(primary_key=True, max_length=128)
    display_name = models.CharField(max_length=128, blank=True, default="")
    context_window = models.PositiveIntegerField()
    max_output_tokens = models.PositiveIntegerField()
    supports_structured_output = models.BooleanField(default=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        db_table = "llm_models"
        ordering = ("id",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(context_window__gt=0), name="llm_models_context_window_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(max_output_tokens__gt=0)
                & models.Q(max_output_tokens__lte=models.F("context_window")),
                name="llm_models_max_output_within_window",
            ),
        ]

    def __str__(self) -> str:
        return self.id
