"""The Celery app. Tasks are long LLM calls: late acks, prefetch of one, re-queue when a worker
dies, and a visibility timeout longer than any task limit or retry countdown.

An empty CELERY_BROKER_URL means "no broker" (settings, "Celery"): the app is still configured,
but nothing here connects anywhere, and `summary_enqueue` generates summaries in-process."""

from __future__ import annotations

import os

from celery import Celery
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")

app = Celery("pantheon")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def broker_configured() -> bool:
    """False when CELERY_BROKER_URL is empty: there is no broker to send to or to probe."""
    return bool(settings.CELERY_BROKER_URL)


def broker_reachable(timeout: float = 0.5) -> bool:
    """True when the broker answers within `timeout` seconds (never tries without one: an empty
    URL would make kombu fall back to amqp://localhost)."""
    if not broker_configured():
        return False
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)
        return True
    except Exception:  # any broker failure means "unavailable"
        return False
