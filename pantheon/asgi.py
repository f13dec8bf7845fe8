"""ASGI entry point (gunicorn -k uvicorn_worker.UvicornWorker pantheon.asgi:application)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")

application = get_asgi_application()
