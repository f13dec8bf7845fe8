"""Usage background tasks: the sweep that expires abandoned credit reservations (run by
celery beat; the schedule lives with the Celery settings)."""

from __future__ import annotations

from celery import shared_task

from usage.services import reservations_expire


@shared_task(name="usage.expire_reservations", ignore_result=True)
def expire_reservations() -> int:
    """Release every active reservation past its expiry; returns how many. Idempotent."""
    return reservations_expire()
