"""Django's ASGI handler with the middleware chain in sync mode: the middleware and the view run
in one thread hop.

Django's stock `ASGIHandler` loads the chain in async mode. Every middleware that cannot run on
the event loop — each `MiddlewareMixin` (sessions, CSRF, auth, messages, axes, ...) and
whitenoise — is then entered through `sync_to_async` and left through `async_to_sync` or a
second `sync_to_async`: about fourteen thread hops per request with our list, before the sync
DRF view makes one more (and a 4xx/5xx one more for its log line). `OneHopASGIHandler` loads
the same chain in sync mode, as a WSGI server runs it, and calls all of it — middleware, view,
error handling and the 4xx/5xx log line (`BaseHandler.get_response`) — in one `sync_to_async`
call, in the request's own thread (Django's per-request `ThreadSensitiveContext`, where the
view's database connection lives and where Django later closes it).

Everything else is Django's: reading the body, the `request_started` signal, the watch that
cancels a request whose client hung up, sending the response, closing it. A streamed response
over an async generator is still iterated on the event loop, chunk by chunk as it is produced.

A middleware that is async-only would be adapted with `async_to_sync` in this chain: a hop back
to the event loop and out again. `pantheon/tests/test_asgi_hops.py` fails when one appears.
"""

from __future__ import annotations

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase


class OneHopASGIHandler(ASGIHandler):
    """An `ASGIHandler` whose middleware chain and view run in one thread hop."""

    def __init__(self) -> None:
        # Not ASGIHandler.__init__, which would load the chain in async mode (BaseHandler has
        # no __init__ of its own).
        self.load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


def get_one_hop_asgi_application() -> OneHopASGIHandler:
    """What `django.core.asgi.get_asgi_application` does, with the one-hop handler."""
    django.setup(set_prefix=False)
    return OneHopASGIHandler()
