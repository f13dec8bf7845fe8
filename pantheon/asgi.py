"""ASGI entry point (gunicorn -k uvicorn_worker.UvicornWorker pantheon.asgi:application)."""

import os

from django.core.asgi import get_asgi_application

from pantheon.api.presence import watch_disconnect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")

# Every request learns when its client hangs up, even before its response starts.
application = watch_disconnect(get_asgi_application())
