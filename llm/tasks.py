"""Background tasks of the llm app: there are none, by design.

llm is a leaf: plain functions and the gateway, which its callers run — a turn inside the
request, a summary inside `sessions.tasks`. A task here would have to know what the call is for,
which is the caller's business. Re-encrypting provider keys is an operator's step
(`manage.py rotate_secrets`), not a schedule.

The module is here so every app has the same layout (Celery's autodiscovery imports it).
"""
