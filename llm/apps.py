from django.apps import AppConfig


class LlmConfig(AppConfig):
    name = "llm"
    label = "llm"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from llm import checks  # noqa: F401  (registers the tool settings' system check)
