"""The Celery app. Tasks are long LLM calls: late acks, prefetch of one, re-queue when a worker
dies, and a visibility timeout longer than any task limit or retry countdown."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")

app = Celery("pantheon")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def broker_reachable(timeout: float = 0.5) -> bool:
    """True when the broker answers within `timeout` seconds."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)
        return True
    except Exception:  # any broker failure means "unavailable"
        return False
