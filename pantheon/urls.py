"""URLs: the admin, the v1 API (no trailing slashes), the OpenAPI schema and docs.

Also the composition root: `accounts` and `llm` know nothing of `usage`, nor `usage` of `rooms`
(dependencies run one way), so their routes are built here with the readers they need — the
caller's credits and spending warnings for `auth/me`, current prices for `models`, whether a room
is the caller's for a room's spending limit."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from accounts.api.urls import api_urls as accounts_api_urls
from llm.api.urls import api_urls as llm_api_urls
from pantheon.api.views import (
    DocsView,
    HealthView,
    NotFoundView,
    SchemaView,
    SlashRedirectView,
)
from rooms.selectors import room_is_owned
from usage.api.serializers import spending_warnings_for
from usage.api.urls import api_urls as usage_api_urls
from usage.selectors import credits_for_user, current_prices

api_v1 = [
    path("health", HealthView.as_view(), name="health"),
    path(
        "",
        include(
            accounts_api_urls(
                credits_for=credits_for_user, spending_warnings_for=spending_warnings_for
            )
        ),
    ),
    path("", include(llm_api_urls(prices_for=current_prices))),
    path("", include("rooms.api.urls")),
    path("", include("sessions.api.urls")),
    path("", include(usage_api_urls(room_owned=room_is_owned))),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/api/docs/", permanent=False)),
    # The two pages people type without their slash; the API itself never redirects.
    path("admin", SlashRedirectView.as_view()),
    path("api/docs", SlashRedirectView.as_view()),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", DocsView.as_view(url_name="schema"), name="docs"),
    # Last: any other /api/ path, whatever the method, is a JSON 404.
    re_path(r"^api/", NotFoundView.as_view()),
]

handler400 = "pantheon.api.handlers.bad_request"
handler403 = "pantheon.api.handlers.permission_denied"
handler404 = "pantheon.api.handlers.not_found"
handler500 = "pantheon.api.handlers.server_error"
