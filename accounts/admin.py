"""Staff admin for users and API keys. Key secrets are never shown (only their hash is stored,
and even that stays out of every form); keys are revoked through `accounts.services`.

Privileges are granted by superusers only: for any other staff user the permission fields are
read-only (and left out of the submitted form, so a crafted POST cannot set them), and accounts
holding privileges other than their own — staff and superusers — are view-only, since setting
such an account's password or e-mail would take its privileges over.

Also here: the admins of Django's groups and of django-axes' login records (both identity
concerns), re-registered with the changelist NUL guard.
"""

from __future__ import annotations

from typing import Any

from axes.admin import AccessAttemptAdmin as AxesAccessAttemptAdmin
from axes.admin import AccessFailureLogAdmin as AxesAccessFailureLogAdmin
from axes.admin import AccessLogAdmin as AxesAccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from accounts.models import ApiKey, User
from accounts.services import api_key_revoke, api_keys_revoke_for_users
from pantheon.admin import ReadOnlyInline, SafeLookupsMixin

_API_KEY_FIELDS = (
    "prefix",
    "name",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
)
# What only a superuser may change: who is staff or superuser, and what anyone may do.
_PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")


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


class ApiKeyInline(ReadOnlyInline):
    """A user's keys, read-only: revoke them with the admin actions."""

    model = ApiKey
    fk_name = "user"
    fields = _API_KEY_FIELDS
    readonly_fields = _API_KEY_FIELDS
    ordering = ("-created_at",)


def _may_edit_account(request: HttpRequest, account: User | None) -> bool:
    """A superuser edits anyone; other staff edit their own account and accounts without
    privileges (an account's e-mail and password are its privileges, for whoever sets them)."""
    user = request.user
    return (
        user.is_superuser
        or account is None
        or account.pk == user.pk
        or not (account.is_staff or account.is_superuser)
    )


@admin.register(User)
class UserAdmin(SafeLookupsMixin, DjangoUserAdmin):
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

    def get_readonly_fields(self, request: HttpRequest, obj: User | None = None) -> Any:
        readonly = tuple(super().get_readonly_fields(request, obj))
        if request.user.is_superuser:
            return readonly
        # Read-only fields are also left out of the form, so posted values are ignored.
        return readonly + _PRIVILEGE_FIELDS

    def has_change_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        # Also guards the password form (`user_change_password` asks this for its user).
        return super().has_change_permission(request, obj) and _may_edit_account(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        return super().has_delete_permission(request, obj) and _may_edit_account(request, obj)

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
class ApiKeyAdmin(SafeLookupsMixin, admin.ModelAdmin):
    """Read-only view of every key; the one write is the "revoke" action."""

    # What staff scan; when a key was created is on its page.
    list_display = ("prefix", "name", "user", "last_used_at", "expires_at", "revoked_at")
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


# --- Django's groups and django-axes' login records, with the NUL guard ----------------------
# The login records list what staff scan; the browser's user agent is on each record's page.


def _without_user_agent(columns: Any) -> list[str]:
    return [column for column in columns if column != "user_agent"]


admin.site.unregister(Group)
admin.site.unregister(AccessAttempt)
admin.site.unregister(AccessLog)
admin.site.unregister(AccessFailureLog)


@admin.register(Group)
class GroupAdmin(SafeLookupsMixin, DjangoGroupAdmin):
    """Django's group admin."""


@admin.register(AccessAttempt)
class AccessAttemptAdmin(SafeLookupsMixin, AxesAccessAttemptAdmin):
    """Failed admin logins counting towards a lockout (django-axes)."""

    list_display = _without_user_agent(AxesAccessAttemptAdmin.list_display)


@admin.register(AccessLog)
class AccessLogAdmin(SafeLookupsMixin, AxesAccessLogAdmin):
    """Successful admin logins and logouts (django-axes)."""

    list_display = _without_user_agent(AxesAccessLogAdmin.list_display)


@admin.register(AccessFailureLog)
class AccessFailureLogAdmin(SafeLookupsMixin, AxesAccessFailureLogAdmin):
    """Every failed admin login, when AXES_ENABLE_ACCESS_FAILURE_LOG is on (django-axes)."""

    list_display = _without_user_agent(AxesAccessFailureLogAdmin.list_display)
