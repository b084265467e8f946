"""Request IDs: the one string that ties a request's log lines, answer and tasks together.

The API takes a client's ``X-Request-ID`` when it is sane (``clean``) and makes one
otherwise (``new``). While a request (API) or a task (worker) runs, its ID is in the
context variable ``CURRENT``; ``LogFilter`` puts it on every log record as
``%(request_id)s``, so log lines name it without being passed it. A coalesced task
serves several requests: its value is their IDs joined by commas.

Standard library only: the API, the workers and the ``digits`` command import it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re

HEADER = "X-Request-ID"
MAX_LENGTH = 128
# Letters, digits and the punctuation of UUIDs, ULIDs, base64 and trace ids: nothing
# that could split a log line, a header or a CSV field.
_SANE = re.compile(rf"[A-Za-z0-9._:+/=@-]{{1,{MAX_LENGTH}}}")
NONE = "-"  # shown in log lines outside any request

CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NONE)


def clean(value: str | None) -> str | None:
    """The client's ID if it is one we can log and echo safely, else None."""
    if value and _SANE.fullmatch(value):
        return value
    return None


def new() -> str:
    """A fresh ID: 32 hex digits, as random as a UUID4."""
    return os.urandom(16).hex()


def current() -> str | None:
    value = CURRENT.get()
    return None if value == NONE else value


def joined(ids) -> str:
    """Several requests' IDs as one log field, each once, in order."""
    return ",".join(dict.fromkeys(i for i in ids if i)) or NONE


@contextlib.contextmanager
def bound(value: str | None):
    """Run a block with ``value`` as the current ID (for log lines in it)."""
    token = CURRENT.set(value or NONE)
    try:
        yield
    finally:
        CURRENT.reset(token)


class LogFilter(logging.Filter):
    """Gives every record a ``request_id`` attribute (``-`` outside a request).

    Put it on handlers, not loggers: a handler's filters also see the records that
    propagate to it from child loggers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = CURRENT.get()
        return True


def add_to_handlers(logger: logging.Logger, fmt: str | None = None) -> None:
    """Put the filter on the logger's handlers and, with ``fmt``, their format."""
    for handler in logger.handlers:
        if not any(isinstance(f, LogFilter) for f in handler.filters):
            handler.addFilter(LogFilter())
        if fmt:
            handler.setFormatter(logging.Formatter(fmt))
