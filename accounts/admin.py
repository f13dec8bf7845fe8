"""Staff admin for users and API keys. Key secrets are never shown (only their hash is stored,
and even that stays out of every form); keys are revoked through `accounts.services`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from accounts.models import ApiKey, User
from accounts.services import api_key_revoke, api_keys_revoke_for_users

_API_KEY_FIELDS = (
    "prefix",
    "name",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
)


class _LowerCaseEmailMixin:
    """Users are stored with lower-case e-mails (see UserManager); the admin keeps that true."""

    cleaned_data: dict[str, Any]

    def clean_email(self) -> str:
        return User.objects.normalize_email(self.cleaned_data["email"]).lower()


class UserCreationForm(_LowerCaseEmailMixin, AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "display_name")
        field_classes = {"email": forms.EmailField}


class UserChangeAdminForm(_LowerCaseEmailMixin, UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"
        field_classes = {"email": forms.EmailField}


class ApiKeyInline(admin.TabularInline):
    """A user's keys, read-only: revoke them with the admin actions."""

    model = ApiKey
    fk_name = "user"
    fields = _API_KEY_FIELDS
    readonly_fields = _API_KEY_FIELDS
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-created_at",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserChangeAdminForm
    add_form = UserCreationForm
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        (_("Profile"), {"fields": ("display_name", "auth_subject")}),
        (
            _("Permissions"),
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        (_("Important dates"), {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "display_name", "usable_password", "password1", "password2"),
            },
        ),
    )
    # The external identity binding is set by authentication only: editing it could hand one
    # person's Supabase login to another account.
    readonly_fields = ("auth_subject", "last_login", "date_joined")
    list_display = ("email", "display_name", "is_staff", "is_active", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email", "display_name")
    ordering = ("email",)
    inlines = (ApiKeyInline,)
    actions = ("revoke_all_api_keys",)
    show_full_result_count = False

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return self.inlines if obj is not None else ()

    @admin.action(description=_("Revoke all API keys of selected users"), permissions=("change",))
    def revoke_all_api_keys(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        count = api_keys_revoke_for_users(users=queryset)
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)


class RevokedFilter(admin.SimpleListFilter):
    title = _("revoked")
    parameter_name = "revoked"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() == "yes":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(revoked_at__isnull=True)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Read-only view of every key; the one write is the "revoke" action."""

    list_display = ("prefix", "name", "user", *_API_KEY_FIELDS[2:])
    list_filter = (RevokedFilter,)
    search_fields = ("prefix", "user__email")
    list_select_related = ("user",)
    fields = ("id", "user", *_API_KEY_FIELDS, "predecessor")
    readonly_fields = fields
    ordering = ("-created_at",)
    actions = ("revoke_selected",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are issued through the API or `manage.py create_api_key`

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).select_related("user", "predecessor")

    @admin.action(description=_("Revoke selected keys"), permissions=("change",))
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        keys = list(queryset.filter(revoked_at__isnull=True))
        for api_key in keys:
            api_key_revoke(api_key=api_key)
        self.message_user(request, f"Revoked {len(keys)} API key(s).", messages.SUCCESS)
