"""The usage management commands: grant_credits, publish_pricing, verify_ledger,
reprice_events."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from usage.models import (
    CreditAccount,
    LedgerEntry,
    LlmCallEvent,
    PricingVersion,
    Reservation,
)
from usage.services import credits_reserve
from usage.tests.builders import MINI, SONNET, WORKED_EXAMPLE_MICRO, grant, record

pytestmark = pytest.mark.django_db


def run(*args: Any) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def balance_of(user) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(user=user).balance_micro


# --- grant_credits ---------------------------------------------------------------------------


def test_grant_credits_with_a_key_grants_once(user) -> None:  # type: ignore[no-untyped-def]
    args = ("grant_credits", "--email", user.email.upper(), "--amount", "2.5")
    out, _ = run(*args, "--note", "welcome", "--idempotency-key", "welcome-1")
    run(*args, "--note", "welcome", "--idempotency-key", "welcome-1")

    assert "2.500000" in out
    assert balance_of(user) == 2_500_000
    entry = LedgerEntry.objects.get(account__user=user)
    assert (entry.kind, entry.note, entry.idempotency_key) == ("grant", "welcome", "welcome-1")


def test_grant_credits_without_a_key_grants_each_time(user) -> None:  # type: ignore[no-untyped-def]
    run("grant_credits", "--email", user.email, "--amount", "1")
    run("grant_credits", "--email", user.email, "--amount", "1")
    assert balance_of(user) == 2_000_000


def test_grant_credits_dry_run_writes_nothing(user) -> None:  # type: ignore[no-untyped-def]
    out, _ = run("grant_credits", "--email", user.email, "--amount", "3", "--dry-run")
    assert "Dry run" in out
    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize("amount", ["0", "-1", "abc", "0.0000001", "NaN", "Infinity"])
def test_grant_credits_refuses_a_bad_amount(user, amount) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError, match="--amount"):
        run("grant_credits", "--email", user.email, "--amount", amount)
    assert not LedgerEntry.objects.exists()


def test_grant_credits_refuses_an_unknown_user(db) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError, match="No user"):
        run("grant_credits", "--email", "ghost@example.com", "--amount", "1")


def test_grant_credits_refuses_a_reused_key_for_another_amount(user) -> None:  # type: ignore[no-untyped-def]
    run("grant_credits", "--email", user.email, "--amount", "1", "--idempotency-key", "k")
    with pytest.raises(CommandError):
        run("grant_credits", "--email", user.email, "--amount", "2", "--idempotency-key", "k")
    assert balance_of(user) == 1_000_000


# --- publish_pricing -------------------------------------------------------------------------


def pricing_file(tmp_path: Path, **overrides: Any) -> str:
    document: dict[str, Any] = {
        "label": "v2",
        "effective_from": (timezone.now() + timedelta(days=1)).isoformat(),
        "credits_per_usd": "100",
        "markup": "1.10",
        "prices": {
            MINI: {"input": "0.15", "output": 0.60, "cached_input": "0.075"},
            SONNET: {"input": 3, "output": "15", "cached_input": "0.30", "cache_write": "3.75"},
        },
    }
    document.update(overrides)
    path = tmp_path / "pricing.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return str(path)


def test_publish_pricing_creates_an_active_version(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, err = run("publish_pricing", pricing_file(tmp_path))

    assert "Published v2" in out
    version = PricingVersion.objects.get(label="v2")
    assert version.status == "active"
    assert str(version.markup) == "1.1000"
    prices = {p.model_id: p for p in version.prices.all()}
    assert str(prices[MINI].output) == "0.6000"  # a JSON number, read exactly
    assert prices[SONNET].reasoning is None
    # v1 priced 14 models; this file prices 2: the operator is warned about the others.
    assert "12 model(s)" in err


def test_publish_pricing_twice_is_a_no_op(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = pricing_file(tmp_path)
    run("publish_pricing", path)
    out, _ = run("publish_pricing", path)
    assert "nothing to do" in out
    assert PricingVersion.objects.filter(label="v2").count() == 1


def test_publish_pricing_refuses_to_change_a_published_version(tmp_path) -> None:  # type: ignore[no-untyped-def]
    when = (timezone.now() + timedelta(days=1)).isoformat()
    run("publish_pricing", pricing_file(tmp_path, effective_from=when))
    changed = pricing_file(tmp_path, effective_from=when, markup="2")

    with pytest.raises(CommandError, match="Refused"):
        run("publish_pricing", changed)

    assert str(PricingVersion.objects.get(label="v2").markup) == "1.1000"


def test_publish_pricing_refuses_to_change_v1(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError, match="Refused"):
        run("publish_pricing", pricing_file(tmp_path, label="v1"))
    assert PricingVersion.objects.get(label="v1").prices.count() == 14


def test_publish_pricing_dry_run_checks_everything_and_writes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, _ = run("publish_pricing", pricing_file(tmp_path), "--dry-run")
    assert "would be created" in out
    assert not PricingVersion.objects.filter(label="v2").exists()
    assert PricingVersion.objects.get(label="v1").status == "active"

    with pytest.raises(CommandError, match="ahead"):
        run(
            "publish_pricing",
            pricing_file(tmp_path, effective_from="2026-01-02T00:00:00Z"),
            "--dry-run",
        )


def test_publish_pricing_refuses_a_version_inside_the_lead_time(tmp_path, process_clock) -> None:  # type: ignore[no-untyped-def]
    lead = timedelta(seconds=120)  # PRICING_PUBLISH_LEAD_SECONDS' default
    too_soon = (timezone.now() + lead - timedelta(seconds=1)).isoformat()
    with pytest.raises(CommandError, match="at least 120 seconds ahead"):
        run("publish_pricing", pricing_file(tmp_path, effective_from=too_soon))
    assert not PricingVersion.objects.filter(label="v2").exists()

    out, _ = run(
        "publish_pricing",
        pricing_file(tmp_path, effective_from=(timezone.now() + lead).isoformat()),
    )
    assert "Published v2" in out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"effective_from": "2030-01-01T00:00:00"}, "time zone"),
        ({"effective_from": "tomorrow"}, "effective_from"),
        ({"effective_from": "2026-01-02T00:00:00Z"}, "ahead"),
        ({"credits_per_usd": "lots"}, "credits_per_usd"),
        ({"markup": "0"}, "markup"),
        ({"prices": {MINI: {"input": "0.123456", "output": "1"}}}, "decimal"),
        ({"prices": {MINI: {"input": "1"}}}, "output"),
        ({"prices": {MINI: {"input": "1", "output": "1", "bonus": "1"}}}, "bonus"),
        ({"prices": {MINI: {"input": True, "output": "1"}}}, "input"),
        ({"prices": []}, "prices"),
        ({"colour": "blue"}, "unknown"),
    ],
)
def test_publish_pricing_validates_the_file(tmp_path, overrides, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError, match=message):
        run("publish_pricing", pricing_file(tmp_path, **overrides))
    assert not PricingVersion.objects.filter(label="v2").exists()


def test_publish_pricing_refuses_malformed_json_and_missing_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CommandError, match="JSON"):
        run("publish_pricing", str(broken))
    with pytest.raises(CommandError, match="Cannot read"):
        run("publish_pricing", str(tmp_path / "missing.json"))
    missing_fields = tmp_path / "partial.json"
    missing_fields.write_text(json.dumps({"label": "v2"}))
    with pytest.raises(CommandError, match="missing"):
        run("publish_pricing", str(missing_fields))


# --- verify_ledger ---------------------------------------------------------------------------


def test_verify_ledger_passes_on_a_consistent_ledger(funded_user) -> None:  # type: ignore[no-untyped-def]
    reservation = credits_reserve(
        user=funded_user,
        model_id=SONNET,
        estimated_input_tokens=100,
        output_reserve=100,
        purpose="agent_reply",
    )
    record(funded_user, reservation=reservation)
    credits_reserve(
        user=funded_user,
        model_id=MINI,
        estimated_input_tokens=100,
        output_reserve=100,
        purpose="routing",
    )

    out, err = run("verify_ledger", "--batch-size", "1")

    assert out.splitlines()[-1] == "ledger ok"
    assert "… 1 accounts checked" in out
    assert "… 1 billed call events checked" in out
    assert err == ""


def test_verify_ledger_detects_a_tampered_balance(funded_user) -> None:  # type: ignore[no-untyped-def]
    record(funded_user)
    account = CreditAccount.objects.get(user=funded_user)
    CreditAccount.objects.filter(pk=account.pk).update(balance_micro=account.balance_micro + 1)

    err = StringIO()
    with pytest.raises(CommandError, match="1 problem"):
        call_command("verify_ledger", stdout=StringIO(), stderr=err)

    assert f"account {account.pk}" in err.getvalue()
    assert "balance 96.910001 != sum of its ledger entries 96.910000" in err.getvalue()


def test_verify_ledger_exits_non_zero_from_the_command_line(funded_user) -> None:  # type: ignore[no-untyped-def]
    CreditAccount.objects.filter(user=funded_user).update(balance_micro=1)
    with pytest.raises(SystemExit) as exited:
        from django.core.management import ManagementUtility

        ManagementUtility(["manage.py", "verify_ledger"]).execute()
    assert exited.value.code != 0


def test_verify_ledger_detects_reserved_credits_without_reservations(funded_user) -> None:  # type: ignore[no-untyped-def]
    CreditAccount.objects.filter(user=funded_user).update(reserved_micro=5)
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_ledger", stdout=StringIO(), stderr=err)
    assert "reserved 0.000005 != sum of its active reservations 0.000000" in err.getvalue()


def test_verify_ledger_detects_a_billed_call_without_burn(funded_user) -> None:  # type: ignore[no-untyped-def]
    event = LlmCallEvent.objects.create(
        user=funded_user,
        started_at=timezone.now(),
        purpose="agent_reply",
        provider="openrouter",
        model=SONNET,
        status="ok",
        usage_source="provider",
        idempotency_key="written-behind-the-services-back",
        pricing_version=PricingVersion.objects.get(label="v1"),
        input_tokens=10,
        credits_burned=3_000,
    )
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_ledger", stdout=StringIO(), stderr=err)
    assert f"event {event.pk}: credits_burned > 0 but 0 burn entries" in err.getvalue()


def test_verify_ledger_detects_a_reservation_left_active_long_past_expiry(funded_user) -> None:  # type: ignore[no-untyped-def]
    reservation = credits_reserve(
        user=funded_user,
        model_id=MINI,
        estimated_input_tokens=10,
        output_reserve=10,
        purpose="agent_reply",
    )
    Reservation.objects.filter(pk=reservation.pk).update(
        expires_at=timezone.now() - timedelta(hours=2)
    )
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_ledger", stdout=StringIO(), stderr=err)
    assert f"reservation {reservation.pk}: still active" in err.getvalue()
    # A wider margin accepts it.
    out, _ = run("verify_ledger", "--expiry-margin-minutes", "180")
    assert "ledger ok" in out


# --- reprice_events --------------------------------------------------------------------------


@pytest.fixture
def dearer_v2(tmp_path):  # type: ignore[no-untyped-def]
    """v2 doubles Sonnet's prices (and has no price for GPT-4o mini)."""
    run(
        "publish_pricing",
        pricing_file(
            tmp_path,
            markup="1",
            prices={
                SONNET: {"input": "6", "output": "30", "cached_input": "0.6", "cache_write": "7.5"}
            },
        ),
    )
    return PricingVersion.objects.get(label="v2")


def test_reprice_writes_the_differences_as_adjustments(funded_user, dearer_v2) -> None:  # type: ignore[no-untyped-def]
    sonnet_calls = [record(funded_user), record(funded_user)]
    mini_call = record(funded_user, model_id=MINI)
    before = {e.pk: (e.credits_burned, e.cost_usd) for e in LlmCallEvent.objects.all()}
    balance_before = balance_of(funded_user)

    out, _ = run("reprice_events", "--version", "v2")

    adjustments = LedgerEntry.objects.filter(kind="adjustment")
    assert adjustments.count() == 2
    for event in sonnet_calls:
        adjustment = adjustments.get(event=event)
        assert adjustment.amount_micro == -WORKED_EXAMPLE_MICRO  # twice the price: pay again
    assert not adjustments.filter(event=mini_call).exists()
    assert balance_of(funded_user) == balance_before - 2 * WORKED_EXAMPLE_MICRO
    # The event rows are untouched.
    after = {e.pk: (e.credits_burned, e.cost_usd) for e in LlmCallEvent.objects.all()}
    assert after == before
    assert "Wrote 2 adjustment(s) over 3 event(s)" in out
    assert "1 event(s)" in out  # the unpriced mini call
    run("verify_ledger")


def test_reprice_twice_writes_nothing_more(funded_user, dearer_v2) -> None:  # type: ignore[no-untyped-def]
    record(funded_user)
    run("reprice_events", "--version", "v2")
    out, _ = run("reprice_events", "--version", "v2")
    assert "Wrote 0 adjustment(s)" in out
    assert LedgerEntry.objects.filter(kind="adjustment").count() == 1


def test_reprice_back_to_the_original_version_restores_the_original_charge(
    funded_user,  # type: ignore[no-untyped-def]
    dearer_v2,  # type: ignore[no-untyped-def]
) -> None:
    event = record(funded_user)
    run("reprice_events", "--version", "v2")
    run("reprice_events", "--version", "v1")

    net = sum(e.amount_micro for e in LedgerEntry.objects.filter(event=event))
    assert net == -WORKED_EXAMPLE_MICRO
    assert LedgerEntry.objects.filter(kind="adjustment", event=event).count() == 2
    run("verify_ledger")


def test_reprice_dry_run_writes_nothing(funded_user, dearer_v2) -> None:  # type: ignore[no-untyped-def]
    record(funded_user)
    out, _ = run("reprice_events", "--version", "v2", "--dry-run")
    assert "Dry run: would write 1 adjustment(s)" in out
    assert "3.090000 credits charged" in out
    assert not LedgerEntry.objects.filter(kind="adjustment").exists()


def test_reprice_limits_to_a_date_range(funded_user, dearer_v2) -> None:  # type: ignore[no-untyped-def]
    old = record(funded_user, created_at=timezone.now() - timedelta(days=10))
    record(funded_user)
    day = old.created_at.date().isoformat()
    run("reprice_events", "--version", "v2", "--from", day, "--to", day)
    assert list(LedgerEntry.objects.filter(kind="adjustment").values_list("event", flat=True)) == [
        old.pk
    ]


def test_reprice_refuses_unknown_or_draft_versions_and_bad_dates(db) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError, match="No pricing version"):
        run("reprice_events", "--version", "v9")
    PricingVersion.objects.create(
        label="draft", effective_from=timezone.now(), credits_per_usd=1, markup=1
    )
    with pytest.raises(CommandError, match="draft"):
        run("reprice_events", "--version", "draft")
    with pytest.raises(CommandError, match="--from"):
        run("reprice_events", "--version", "v1", "--from", "last week")


def test_reprice_walks_in_batches(funded_user, dearer_v2) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        record(funded_user)
    out, _ = run("reprice_events", "--version", "v2", "--batch-size", "2")
    assert "… 2 events examined" in out
    assert "… 5 events examined" in out
    assert LedgerEntry.objects.filter(kind="adjustment").count() == 5


def test_grant_then_burn_keep_balance_after_in_order(user) -> None:  # type: ignore[no-untyped-def]
    grant(user, 5_000_000)
    event = record(user)
    burn = LedgerEntry.objects.get(event=event)
    assert burn.balance_after_micro == 5_000_000 - WORKED_EXAMPLE_MICRO
