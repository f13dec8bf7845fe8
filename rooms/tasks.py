"""Background tasks of the rooms app: there are none, and none are missing.

Rooms and agents change only through the API and the admin, synchronously; a soft-deleted room
or agent needs no clean-up, since every read goes through the ownership guard, which hides it.
The periodic work around a room's conversations (pending summaries, stale turns, idempotency
keys) belongs to its sessions, in `sessions.tasks`.

The module is here so every app has the same layout (Celery's autodiscovery imports it): a
background task of rooms would be written here.
"""
