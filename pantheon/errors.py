"""The one application error type. Services raise it; the API's exception handler renders it."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A failure the client should see, as domain data: the contract's error `code`, a message,
    `details`, and — when retrying later can succeed — after how many seconds (`retry_after`).
    Which HTTP status and headers it becomes is decided by the API layer alone
    (`pantheon.api.exceptions`), so services never speak HTTP."""

    code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}
        self.retry_after = retry_after
