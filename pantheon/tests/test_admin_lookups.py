"""Every changelist of the staff console survives a NUL byte in its query string (PostgreSQL
refuses NUL in text): the admin's invalid-lookup redirect, never a 500. Walks every registered
admin, so one added later without the guard fails here."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from pantheon.admin import SafeLookupsMixin
from testing import factories

pytestmark = pytest.mark.django_db

REGISTERED = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


@pytest.mark.parametrize(
    ("model", "model_admin"), REGISTERED, ids=[m._meta.label for m, _ in REGISTERED]
)
def test_a_nul_byte_in_a_changelist_query_is_invalid(client, model, model_admin) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(model_admin, SafeLookupsMixin), f"{type(model_admin).__name__} lacks it"
    staff = factories.make_user(is_staff=True, is_superuser=True)
    client.force_login(staff)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    text_fields = [
        f.name
        for f in model._meta.get_fields()
        if getattr(f, "get_internal_type", lambda: "")() in ("CharField", "TextField")
    ]
    queries = [{"q": "a\x00b"}, *({f"{name}__exact": "\x00"} for name in text_fields[:3])]
    for query in queries:
        response = client.get(url, query)
        assert response.status_code in (200, 302), (url, query, response.status_code)
        if response.status_code == 302:
            assert response["Location"].endswith("?e=1")
