"""Background tasks of the accounts app: there are none, and none are missing.

Keys are issued, rotated and revoked inside a request, an admin action or a management command.
Nothing about a key needs a sweep: an expired key, or a rotated key whose grace period is over,
stops working because authentication compares `expires_at` with the clock on every request.

The module is here so every app has the same layout (Celery's autodiscovery imports it): a
background task of accounts would be written here.
"""
