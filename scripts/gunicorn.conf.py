"""What gunicorn's command line cannot say: a quiet stop. Passed with `-c scripts/gunicorn.conf.py`
wherever the product is served (Procfile, Dockerfile, docker-compose.yml); every other setting
stays on the command line.

A stop (Ctrl-C under honcho, `docker stop`) sends SIGTERM. Each uvicorn worker shuts down
gracefully and then re-raises the signal, so the master reports "Worker (pid:N) was sent
SIGTERM!" at ERROR (gunicorn issue 3050), and the worker's second close of its listening socket
logs "Error while closing socket [Errno 9] Bad file descriptor". Neither is an error: the first
is logged at INFO, the second not at all. Any other signal (SIGKILL: out of memory?) stays an
ERROR."""

from __future__ import annotations

import logging
import re
from typing import Any

_SENT_SIGTERM = re.compile(r"Worker \(pid:\d+\) was sent SIGTERM!")
_DOUBLE_CLOSE = "Error while closing socket [Errno 9] Bad file descriptor"


class GracefulStopFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == _DOUBLE_CLOSE:
            return False
        if _SENT_SIGTERM.fullmatch(message):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def on_starting(server: Any) -> None:
    """In the master, before any worker is forked: the workers inherit the filter."""
    logging.getLogger("gunicorn.error").addFilter(GracefulStopFilter())
