"""The usage part of the staff console: totals of the filtered set on the changelists, the ledger
filtered by model, links from call events to what they belong to, and query counts that do not
grow with the rows shown."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from pantheon.credits import format_credits
from testing.factories import make_user
from usage.models import CreditAccount, LedgerEntry
from usage.services import credits_reserve
from usage.tests.builders import MINI, SONNET, grant, record

pytestmark = pytest.mark.django_db

EVENTS = "/admin/usage/llmcallevent/"
LEDGER = "/admin/usage/ledgerentry/"
ACCOUNTS = "/admin/usage/creditaccount/"


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client


def _totals(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-total="([\w-]+)">([^<]*)<', html))


def _count(client: Client, url: str) -> int:
    client.get(url)  # fills process-wide caches (content types); only the second request counts
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


def _same_count_for_1_and_100(client: Client, url: str, add_rows: Callable[[int], None]) -> None:
    add_rows(1)
    one = _count(client, url)
    add_rows(99)
    hundred = _count(client, url)
    assert hundred == one, f"{url}: {one} queries for 1 row, {hundred} for 100"


# --- totals of the filtered set ----------------------------------------------------------------


def test_call_event_totals_follow_the_filters(staff: Client) -> None:
    user = make_user()
    grant(user, 100_000_000)
    sonnet = [record(user, model_id=SONNET) for _ in range(2)]
    mini = record(user, model_id=MINI)

    everything = _totals(staff.get(EVENTS).content.decode())
    only_mini = _totals(staff.get(EVENTS, {"model__exact": MINI}).content.decode())

    assert everything["calls"] == "3"
    assert everything["credits"] == format_credits(sum(e.credits_burned for e in [*sonnet, mini]))
    assert only_mini["calls"] == "1"
    assert only_mini["credits"] == format_credits(mini.credits_burned)
    assert only_mini["oe-tokens"] == str(mini.oe_tokens)
    assert only_mini["tokens"] == str(mini.input_tokens + mini.output_tokens)
    assert only_mini["input-tokens"] == str(mini.input_tokens)


def test_ledger_filtered_by_model_lists_and_totals_only_that_models_burns(staff: Client) -> None:
    user = make_user()
    grant(user, 100_000_000)
    sonnet = record(user, model_id=SONNET)
    mini = record(user, model_id=MINI)
    sonnet_burn = LedgerEntry.objects.get(event=sonnet)
    mini_burn = LedgerEntry.objects.get(event=mini)

    html = staff.get(LEDGER, {"model": MINI}).content.decode()

    assert reverse("admin:usage_llmcallevent_change", args=[mini.pk]) in html
    assert reverse("admin:usage_llmcallevent_change", args=[sonnet.pk]) not in html
    totals = _totals(html)
    assert totals["entries"] == "1"
    assert totals["credits-burned"] == format_credits(-mini_burn.amount_micro)
    assert totals["oe-tokens"] == str(mini.oe_tokens)
    # The filter offers the models of the calls in the ledger.
    unfiltered = staff.get(LEDGER).content.decode()
    assert f"?{urlencode({'model': MINI})}" in unfiltered
    assert f"?{urlencode({'model': SONNET})}" in unfiltered
    assert _totals(unfiltered)["entries"] == "3"  # the grant and both burns
    assert _totals(unfiltered)["net-credits"] == format_credits(
        100_000_000 + sonnet_burn.amount_micro + mini_burn.amount_micro
    )


def test_credit_account_totals_and_columns(staff: Client) -> None:
    rich, poor = make_user(email="rich@example.com"), make_user(email="poor@example.com")
    grant(rich, 50_000_000)
    grant(poor, 2_000_000)
    credits_reserve(
        user=rich,
        model_id=MINI,
        estimated_input_tokens=1000,
        output_reserve=1000,
        purpose="agent_reply",
    )
    reserved = CreditAccount.objects.get(user=rich).reserved_micro
    assert reserved > 0

    html = staff.get(ACCOUNTS).content.decode()
    totals = _totals(html)
    assert totals["balance"] == format_credits(52_000_000)
    assert totals["reserved"] == format_credits(reserved)
    assert totals["available"] == format_credits(52_000_000 - reserved)
    assert format_credits(50_000_000 - reserved) in html  # rich's available credits
    only_poor = _totals(staff.get(ACCOUNTS, {"q": "poor@"}).content.decode())
    assert only_poor["balance"] == format_credits(2_000_000)
    sorted_by_available = staff.get(ACCOUNTS, {"o": "4"})
    assert sorted_by_available.status_code == 200


# --- links -------------------------------------------------------------------------------------


def test_call_event_page_links_to_its_room_session_turn_agent_user_and_ledger(
    staff: Client,
) -> None:
    user = make_user()
    grant(user, 10_000_000)
    ids = {name: uuid.uuid4() for name in ("room", "session", "turn", "agent")}
    event = record(
        user,
        room_id=ids["room"],
        session_id=ids["session"],
        turn_id=ids["turn"],
        agent_id=ids["agent"],
    )

    html = staff.get(reverse("admin:usage_llmcallevent_change", args=[event.pk])).content.decode()

    assert reverse("admin:rooms_room_change", args=[ids["room"]]) in html
    assert reverse("admin:chat_sessions_session_change", args=[ids["session"]]) in html
    assert reverse("admin:chat_sessions_turn_change", args=[ids["turn"]]) in html
    assert reverse("admin:rooms_agent_change", args=[ids["agent"]]) in html
    assert reverse("admin:accounts_user_change", args=[user.pk]) in html
    assert f"{LEDGER}?event={event.pk}" in html
    burns = staff.get(LEDGER, {"event": str(event.pk)}).content.decode()
    assert _totals(burns)["entries"] == "1"


def test_call_events_list_links_to_the_dashboard(staff: Client) -> None:
    html = staff.get(EVENTS).content.decode()
    assert reverse("admin:usage_dashboard") in html


# --- query counts ------------------------------------------------------------------------------


def test_call_event_changelist_queries_do_not_grow(staff: Client) -> None:
    def add(n: int) -> None:
        for _ in range(n):
            user = make_user()  # a distinct user per row: nothing shared hides an N+1
            grant(user, 10_000_000)
            record(user, turn_id=uuid.uuid4(), session_id=uuid.uuid4())

    _same_count_for_1_and_100(staff, EVENTS, add)


def test_ledger_changelist_queries_do_not_grow(staff: Client) -> None:
    def add(n: int) -> None:
        for _ in range(n):
            user = make_user()
            grant(user, 10_000_000)
            record(user)

    _same_count_for_1_and_100(staff, LEDGER, add)
    _same_count_for_1_and_100(staff, f"{LEDGER}?model={SONNET}", lambda n: None)


def test_credit_account_changelist_queries_do_not_grow(staff: Client) -> None:
    def add(n: int) -> None:
        for _ in range(n):
            grant(make_user(), 1_000_000)

    _same_count_for_1_and_100(staff, ACCOUNTS, add)


@pytest.mark.parametrize(
    ("url", "query"),
    [
        (EVENTS, {"q": "a\x00b"}),
        (EVENTS, {"model__exact": "\x00"}),
        (LEDGER, {"model": "openai/\x00"}),
        (LEDGER, {"q": "\x00"}),
        (ACCOUNTS, {"q": "x\x00"}),
        ("/admin/usage/pricingversion/", {"q": "\x00"}),
    ],
)
def test_a_nul_byte_in_a_filter_is_an_invalid_lookup_not_an_error(
    staff: Client, url: str, query: dict[str, str]
) -> None:
    response = staff.get(url, query)
    assert response.status_code == 302
    assert response["Location"] == f"{url}?e=1"
