"""Admin: a provider's API key can be set but is never displayed; the model catalog is editable."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.test import Client
from django.urls import reverse

from accounts.models import User
from llm.models import ModelConfig, Provider
from llm.services import provider_create

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
