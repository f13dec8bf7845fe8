"""Staff admin for rooms and agents. Changelists load related rows with the page
(`list_select_related`, annotations), so their query count does not grow with the rows shown."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from llm.models import ModelConfig
from pantheon.admin import DeletedFilter, SafeLookupsMixin, admin_link
from rooms.models import HANDLE_UNIQUE_CONSTRAINT, Agent, Room


class AgentInline(admin.TabularInline):
    """The room's agents, read-only here (each links to its own page, where it is edited)."""

    model = Agent
    extra = 0
    can_delete = False
    show_change_link = True
    fields = (
        "position",
        "name",
        "handle",
        "model_id",
        "temperature",
        "max_output_tokens",
        "is_active",
        "deleted_at",
    )
    readonly_fields = fields
    ordering = ("position", "created_at")

    def has_add_permission(self, request: HttpRequest, obj: Room | None = None) -> bool:
        return False


@admin.register(Room)
class RoomAdmin(SafeLookupsMixin, admin.ModelAdmin):
    # What staff scan; the manager model and the description are on the room's page.
    list_display = (
        "name",
        "owner_link",
        "default_mode",
        "agent_count",
        "created_at",
        "deleted_at",
    )
    list_select_related = ("owner",)
    list_filter = ("default_mode", DeletedFilter)
    search_fields = ("name", "owner__email")
    raw_id_fields = ("owner",)
    # Deleting is the product's (`room_delete`, through the API), never a date typed here.
    readonly_fields = ("id", "created_at", "updated_at", "deleted_at")
    date_hierarchy = "created_at"
    show_full_result_count = False
    inlines = (AgentInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Room]:
        return (
            super()
            .get_queryset(request)
            .annotate(_agent_count=Count("agents", filter=Q(agents__deleted_at__isnull=True)))
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):  # type: ignore[no-untyped-def]
        # Like the API: a manager model must be active in the catalog.
        if db_field.name == "manager_model":
            kwargs["queryset"] = ModelConfig.objects.filter(is_active=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="owner", ordering="owner__email")
    def owner_link(self, room: Room) -> str:
        return admin_link(room.owner)

    @admin.display(description="agents", ordering="_agent_count")
    def agent_count(self, room: Room) -> int:
        return room._agent_count  # type: ignore[attr-defined]


class AgentForm(forms.ModelForm):
    """The agent change form (its fields are the admin's). Django skips a constraint whose
    condition reads a field the form leaves out, and `deleted_at` is read-only here: the handle's
    uniqueness among the room's live agents is checked again, with it, so a taken handle is a
    form error, never a 500."""

    def validate_unique(self) -> None:
        super().validate_unique()
        (handle_unique,) = (
            c for c in Agent._meta.constraints if c.name == HANDLE_UNIQUE_CONSTRAINT
        )
        try:
            handle_unique.validate(Agent, self.instance, exclude=set(self.errors))
        except ValidationError:
            handle = self.instance.handle
            self.add_error(
                "handle", f"An agent with the handle '{handle}' is already in this room."
            )


@admin.register(Agent)
class AgentAdmin(SafeLookupsMixin, admin.ModelAdmin):
    form = AgentForm
    list_display = (
        "handle",
        "name",
        "room_link",
        "model_id",
        "position",
        "is_active",
        "deleted_at",
    )
    list_select_related = ("room",)
    list_filter = ("is_active", DeletedFilter)
    search_fields = ("handle", "name", "room__name", "room__owner__email")
    raw_id_fields = ("room",)
    # Deleting is the product's (`agent_delete`, through the API), never a date typed here.
    readonly_fields = ("id", "created_at", "updated_at", "deleted_at")
    show_full_result_count = False

    @admin.display(description="room", ordering="room__name")
    def room_link(self, agent: Agent) -> str:
        return admin_link(agent.room)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):  # type: ignore[no-untyped-def]
        # Like the API: an agent's model must be active in the catalog.
        if db_field.name == "model":
            kwargs["queryset"] = ModelConfig.objects.filter(is_active=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
