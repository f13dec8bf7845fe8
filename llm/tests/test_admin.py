"""Admin: a provider's API key can be set but is never displayed (whatever the staff user may
do), follows its provider to no other address, and the model catalog is editable."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from accounts.models import User
from llm.models import ModelConfig, Provider
from llm.services import provider_create
from testing import factories

pytestmark = pytest.mark.django_db

SECRET = "sk-admin-visible-never-42"


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(email="staff@example.com", password="x"))
    return client


def test_add_form_has_a_password_field(staff: Client) -> None:
    html = staff.get("/admin/llm/provider/add/").content.decode()
    assert 'type="password"' in html and 'name="api_key"' in html
    assert 'name="api_key_encrypted"' not in html


def test_setting_a_key_stores_it_encrypted(staff: Client) -> None:
    response = staff.post(
        "/admin/llm/provider/add/",
        {
            "name": "vllm",
            "kind": "openai_compatible",
            "base_url": "https://vllm.example/v1",
            "is_active": "on",
            "api_key": SECRET,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    provider = Provider.objects.get(name="vllm")
    assert provider.api_key == SECRET
    assert SECRET not in provider.api_key_encrypted


def test_change_page_and_list_never_show_the_key(staff: Client) -> None:
    provider = provider_create(name="p", base_url="https://p.example/v1", api_key=SECRET)
    for url in (f"/admin/llm/provider/{provider.pk}/change/", "/admin/llm/provider/"):
        html = staff.get(url).content.decode()
        assert SECRET not in html
        assert provider.api_key_encrypted not in html
        assert SECRET[:6] not in html  # not even a masked prefix


def test_saving_without_a_new_key_keeps_the_old_one(staff: Client) -> None:
    provider = provider_create(name="p", base_url="https://p.example/v1", api_key=SECRET)
    response = staff.post(
        f"/admin/llm/provider/{provider.pk}/change/",
        {
            "name": "p2",
            "kind": "openai_compatible",
            "base_url": "https://p.example/v1",
            "api_key": "",
        },
    )
    assert response.status_code == 302
    provider.refresh_from_db()
    assert (provider.name, provider.is_active, provider.api_key) == ("p2", False, SECRET)


def test_the_key_can_be_removed(staff: Client) -> None:
    provider = provider_create(name="p", base_url="https://p.example/v1", api_key=SECRET)
    staff.post(
        f"/admin/llm/provider/{provider.pk}/change/",
        {
            "name": "p",
            "kind": "openai_compatible",
            "base_url": "https://p.example/v1",
            "is_active": "on",
            "clear_api_key": "on",
        },
    )
    provider.refresh_from_db()
    assert provider.api_key_encrypted == "" and provider.api_key == ""


def test_openai_compatible_provider_needs_a_base_url(staff: Client) -> None:
    response = staff.post(
        "/admin/llm/provider/add/", {"name": "x", "kind": "openai_compatible", "base_url": ""}
    )
    assert response.status_code == 200
    assert not Provider.objects.filter(name="x").exists()


def test_model_catalog_list_filters_and_editable_active_flag(staff: Client) -> None:
    provider = provider_create(name="local", base_url="https://local.example/v1")
    ModelConfig.objects.filter(pk="openai/gpt-4o").update(provider=provider)
    ModelConfig.objects.filter(pk="deepseek/deepseek-chat").update(is_active=False)

    html = staff.get("/admin/llm/modelconfig/").content.decode()
    assert 'name="form-0-is_active"' in html  # list_editable
    by_provider = staff.get(f"/admin/llm/modelconfig/?provider__id__exact={provider.pk}")
    assert "openai/gpt-4o<" in by_provider.content.decode()
    assert "openai/gpt-4o-mini" not in by_provider.content.decode()
    inactive = staff.get("/admin/llm/modelconfig/?is_active__exact=0").content.decode()
    assert "deepseek/deepseek-chat" in inactive and "openai/gpt-4o-mini" not in inactive


def test_model_change_page_keeps_the_id_fixed(staff: Client) -> None:
    url = reverse("admin:llm_modelconfig_change", args=[quote("openai/gpt-4o-mini")])
    response = staff.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="context_window"' in html
    assert 'name="id"' not in html
    assert ModelConfig.objects.filter(pk="openai/gpt-4o-mini").exists()


def _staff_client(*codenames: str) -> Client:
    """A logged-in staff user (not a superuser) holding exactly these llm permissions."""
    user = factories.make_user(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="llm", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "who", ["view_only", "change", "superuser"], ids=["view-only", "change", "superuser"]
)
def test_no_permission_ever_renders_the_key(staff: Client, who: str) -> None:
    provider = provider_create(name="p", base_url="https://p.example/v1", api_key=SECRET)
    client = {
        "view_only": lambda: _staff_client("view_provider"),
        "change": lambda: _staff_client("view_provider", "change_provider"),
        "superuser": lambda: staff,
    }[who]()

    response = client.get(f"/admin/llm/provider/{provider.pk}/change/")

    assert response.status_code == 200
    html = response.content.decode()
    assert SECRET not in html and SECRET[:6] not in html
    assert provider.api_key_encrypted not in html
    assert "API key set" in html  # what the page does say
    if who == "view_only":
        assert 'name="api_key"' not in html and 'name="_save"' not in html


def _change(client: Client, provider: Provider, **fields: Any) -> Any:
    data = {"name": provider.name, "kind": "openai_compatible", "is_active": "on", **fields}
    return client.post(f"/admin/llm/provider/{provider.pk}/change/", data)


def test_a_new_base_url_without_the_key_again_is_refused(staff: Client) -> None:
    provider = provider_create(name="p", base_url="https://p.example/v1", api_key=SECRET)

    response = _change(staff, provider, base_url="https://elsewhere.example/v1", api_key="")

    assert response.status_code == 200  # the form again
    assert "enter the API key again" in response.content.decode()
    provider.refresh_from_db()
    assert (provider.base_url, provider.api_key) == ("https://p.example/v1", SECRET)


def test_a_new_base_url_with_the_key_again_or_without_a_key_is_saved(staff: Client) -> None:
    provider = provider_create(name="p", base_url="https://p.example/v1", api_key=SECRET)
    response = _change(staff, provider, base_url="https://new.example/v1", api_key="sk-new-1")
    assert response.status_code == 302, response.content.decode()[:2000]
    provider.refresh_from_db()
    assert (provider.base_url, provider.api_key) == ("https://new.example/v1", "sk-new-1")

    response = _change(staff, provider, base_url="https://third.example/v1", clear_api_key="on")
    assert response.status_code == 302
    provider.refresh_from_db()
    assert (provider.base_url, provider.has_api_key) == ("https://third.example/v1", False)

    keyless = provider_create(name="keyless", base_url="https://k.example/v1")
    assert _change(staff, keyless, base_url="https://k2.example/v1").status_code == 302


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://vllm.example/v1", True),
        ("http://vllm.example/v1", False),
        ("http://10.0.0.5:8000/v1", False),
        ("http://127.0.0.1:11434/v1", True),
        ("http://localhost:1234/v1", True),
        ("http://[::1]:8000/v1", True),
    ],
)
def test_provider_urls_are_https_except_to_loopback(staff: Client, url: str, allowed: bool) -> None:
    response = staff.post(
        "/admin/llm/provider/add/",
        {"name": "local", "kind": "openai_compatible", "base_url": url, "is_active": "on"},
    )
    assert Provider.objects.filter(name="local").exists() is allowed
    if not allowed:
        assert response.status_code == 200
        assert "Use an https:// URL" in response.content.decode()


def test_plain_http_anywhere_when_the_operator_allows_it(staff: Client, settings: Any) -> None:
    settings.PANTHEON_ALLOW_HTTP_PROVIDERS = True
    response = staff.post(
        "/admin/llm/provider/add/",
        {"name": "lan", "kind": "openai_compatible", "base_url": "http://gpu-box.lan:8000/v1"},
    )
    assert response.status_code == 302
    assert Provider.objects.get(name="lan").base_url == "http://gpu-box.lan:8000/v1"


@pytest.mark.parametrize(
    ("url", "query"),
    [
        ("/admin/llm/modelconfig/", {"id__in": "\x00"}),
        ("/admin/llm/modelconfig/", {"q": "gpt\x00"}),
        ("/admin/llm/provider/", {"name": "\x00"}),
    ],
)
def test_a_nul_byte_in_a_filter_is_an_invalid_lookup_not_an_error(
    staff: Client, url: str, query: dict[str, str]
) -> None:
    response = staff.get(url, query)
    assert response.status_code == 302
    assert response["Location"] == f"{url}?e=1"
