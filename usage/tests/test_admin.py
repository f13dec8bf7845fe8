"""The usage admin: read-only records, the grant action, pricing versions locked once
published."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from testing.factories import make_user
from usage.models import CreditAccount, LedgerEntry, PricingVersion
from usage.tests.builders import MINI, grant, record

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    admin_user = make_user(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def billed_user():  # type: ignore[no-untyped-def]
    user = make_user()
    grant(user, 10_000_000)
    record(user, session_id=uuid.UUID("11111111-2222-3333-4444-555555555555"))
    return user


@pytest.mark.parametrize(
    "url",
    [
        "/admin/usage/llmcallevent/",
        "/admin/usage/ledgerentry/",
        "/admin/usage/creditaccount/",
        "/admin/usage/pricingversion/",
        "/admin/usage/llmcallevent/?purpose__exact=agent_reply&status__exact=ok",
        "/admin/usage/ledgerentry/?kind__exact=burn",
    ],
)
def test_changelists_load(staff, billed_user, url) -> None:  # type: ignore[no-untyped-def]
    response = staff.get(url)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("term", "found"),
    [
        ("11111111-2222-3333-4444-555555555555", True),
        ("not-a-uuid", False),
    ],
)
def test_events_search_by_session_id_and_email(staff, billed_user, term, found) -> None:  # type: ignore[no-untyped-def]
    by_session = staff.get("/admin/usage/llmcallevent/", {"q": term})
    by_email = staff.get("/admin/usage/llmcallevent/", {"q": billed_user.email})

    assert by_session.status_code == 200
    assert (billed_user.email in by_session.content.decode()) is found
    assert billed_user.email in by_email.content.decode()


def test_records_are_read_only(staff, billed_user) -> None:  # type: ignore[no-untyped-def]
    entry = LedgerEntry.objects.filter(account__user=billed_user).first()
    event = billed_user.llm_call_events.get()

    assert staff.get("/admin/usage/ledgerentry/add/").status_code == 403
    assert staff.get("/admin/usage/llmcallevent/add/").status_code == 403
    assert staff.post(f"/admin/usage/ledgerentry/{entry.pk}/delete/").status_code == 403
    page = staff.get(f"/admin/usage/llmcallevent/{event.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()


def test_grant_action_grants_through_the_ledger_once(staff, billed_user) -> None:  # type: ignore[no-untyped-def]
    account = CreditAccount.objects.get(user=billed_user)
    selection = {"action": "grant_credits", "_selected_action": [str(account.pk)]}

    form = staff.post("/admin/usage/creditaccount/", selection)
    assert form.status_code == 200
    token = re.search(r'name="token" value="([0-9a-f]+)"', form.content.decode()).group(1)

    submit = {**selection, "apply": "1", "amount": "2.5", "note": "goodwill", "token": token}
    first = staff.post("/admin/usage/creditaccount/", submit)
    again = staff.post("/admin/usage/creditaccount/", submit)  # a double submit

    assert first.status_code == 302
    assert again.status_code == 302
    grants = LedgerEntry.objects.filter(account=account, kind="grant", note="goodwill")
    assert grants.count() == 1
    assert grants.get().amount_micro == 2_500_000
    assert grants.get().created_by is not None
    account.refresh_from_db()
    assert account.balance_micro == 10_000_000 - 3_090_000 + 2_500_000


def test_grant_action_rejects_a_bad_amount(staff, billed_user) -> None:  # type: ignore[no-untyped-def]
    account = CreditAccount.objects.get(user=billed_user)
    entries_before = LedgerEntry.objects.count()
    response = staff.post(
        "/admin/usage/creditaccount/",
        {
            "action": "grant_credits",
            "_selected_action": [str(account.pk)],
            "apply": "1",
            "amount": "-1",
            "note": "",
            "token": "abc",
        },
    )
    assert response.status_code == 200  # the form again, with its error
    assert "errorlist" in response.content.decode()
    assert LedgerEntry.objects.count() == entries_before


def test_a_published_version_is_read_only(staff) -> None:  # type: ignore[no-untyped-def]
    v1 = PricingVersion.objects.get(label="v1")

    page = staff.get(f"/admin/usage/pricingversion/{v1.pk}/change/")
    post = staff.post(
        f"/admin/usage/pricingversion/{v1.pk}/change/",
        {
            "label": "v1",
            "effective_from_0": "2026-01-01",
            "effective_from_1": "00:00:00",
            "credits_per_usd": "1",
            "markup": "1",
        },
    )

    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert post.status_code == 403
    v1.refresh_from_db()
    assert v1.credits_per_usd == Decimal("100")
    assert staff.post(f"/admin/usage/pricingversion/{v1.pk}/delete/").status_code == 403


def test_a_draft_is_prepared_and_published_in_the_admin(staff) -> None:  # type: ignore[no-untyped-def]
    when = timezone.now() + timedelta(days=1)
    response = staff.post(
        "/admin/usage/pricingversion/add/",
        {
            "label": "v2",
            "effective_from_0": when.strftime("%Y-%m-%d"),
            "effective_from_1": when.strftime("%H:%M:%S"),
            "credits_per_usd": "100",
            "markup": "1",
            "prices-TOTAL_FORMS": "1",
            "prices-INITIAL_FORMS": "0",
            "prices-MIN_NUM_FORMS": "0",
            "prices-MAX_NUM_FORMS": "1000",
            "prices-0-model_id": MINI,
            "prices-0-input": "0.2",
            "prices-0-output": "0.8",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    draft = PricingVersion.objects.get(label="v2")
    assert draft.status == "draft"
    assert draft.prices.get().input == Decimal("0.2")

    staff.post(
        "/admin/usage/pricingversion/",
        {"action": "publish_drafts", "_selected_action": [str(draft.pk)]},
    )

    draft.refresh_from_db()
    assert draft.status == "active"


def test_the_admin_refuses_to_publish_a_draft_inside_the_lead_time(staff) -> None:  # type: ignore[no-untyped-def]
    draft = PricingVersion.objects.create(
        label="v2",
        effective_from=timezone.now() + timedelta(seconds=60),  # PRICING_PUBLISH_LEAD_SECONDS: 120
        credits_per_usd=Decimal("100"),
        markup=Decimal("1"),
    )
    draft.prices.create(model_id=MINI, input=Decimal("0.2"), output=Decimal("0.8"))

    response = staff.post(
        "/admin/usage/pricingversion/",
        {"action": "publish_drafts", "_selected_action": [str(draft.pk)]},
        follow=True,
    )

    assert "at least 120 seconds ahead" in response.content.decode()
    draft.refresh_from_db()
    assert draft.status == "draft"
