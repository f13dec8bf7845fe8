"""The one application error type. Services raise it; the API's exception handler renders it."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A failure the client should see, with the contract's error code and HTTP status."""

    status_code = 400
    code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.details = details or {}
        self.headers = headers or {}
