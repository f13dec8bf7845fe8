"""Whether an HTTP client is still there, for work that outlives the view that started it.

Django's ASGI handler notices a client that hangs up before the response starts, but only by
cancelling the coroutine that waits for the view: the view's thread (and anything it started,
such as a streamed turn's worker thread) never hears of it. `watch_disconnect` wraps the ASGI
application and records the client's `http.disconnect` on a `ClientPresence` placed in the
request's scope, so the view can ask to be told (`on_gone`), whether the client left before
the view registered, while it ran, or after the response started.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

logger = logging.getLogger(__name__)

SCOPE_KEY = "pantheon.client_presence"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientPresence:
    """Set once when the client disconnects; callbacks registered before or after run once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gone = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def gone(self) -> bool:
        return self._gone

    def on_gone(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from whichever thread sees it) when the client is gone: at once if
        it already is."""
        with self._lock:
            if not self._gone:
                self._callbacks.append(callback)
                return
        callback()

    def mark_gone(self) -> None:
        with self._lock:
            if self._gone:
                return
            self._gone = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one failing listener must not keep the others from hearing it
                logger.exception("client-disconnect callback failed")


def presence_of(request: Any) -> ClientPresence | None:
    """The presence of a request served through `watch_disconnect` (None otherwise: WSGI, the
    test client)."""
    scope = getattr(getattr(request, "_request", request), "scope", None)
    return scope.get(SCOPE_KEY) if isinstance(scope, dict) else None


def watch_disconnect(app: AsgiApp) -> AsgiApp:
    """Wrap an ASGI application so every HTTP request's scope carries a `ClientPresence` that
    is marked gone when the server reports `http.disconnect`."""

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        presence = ClientPresence()
        scope[SCOPE_KEY] = presence

        async def watched_receive() -> MutableMapping[str, Any]:
            message = await receive()
            if message.get("type") == "http.disconnect":
                presence.mark_gone()
            return message

        await app(scope, watched_receive, send)

    return application
