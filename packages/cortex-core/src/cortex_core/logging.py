"""Logging set-up for the daemons' entrypoints, and the request id carried into every record.

Library code only calls ``logging.getLogger(__name__)``; :func:`configure` is called once, by a
``main()``. The request id is a :class:`~contextvars.ContextVar` that each daemon's ASGI
middleware sets; :class:`RequestIdFilter` copies it onto every record as ``request_id``.
Request and response bodies are never logged.
"""

import logging
import logging.config
import time
from contextvars import ContextVar
from typing import Literal

import msgspec

__all__ = [
    "JsonFormatter",
    "LogFormat",
    "RequestIdFilter",
    "TextFormatter",
    "client_request_id",
    "configure",
    "request_id",
]

LogFormat = Literal["text", "json"]

request_id: ContextVar[str] = ContextVar("cortex_request_id", default="-")
"""The id of the request being served (``x-request-id``), ``-`` outside requests."""

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def client_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's ``x-request-id`` from ASGI headers, when it is 1-128 visible ASCII characters.

    Anything else is ignored (a new id is made instead), so that no client can put control
    characters or megabytes into every log line of its request.
    """
    for name, value in headers:
        if name == b"x-request-id":
            if 0 < len(value) <= 128 and all(0x21 <= c <= 0x7E for c in value):
                return value.decode("ascii")
            return None
    return None


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` from :data:`request_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record; never drops one."""
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """The text format, with the date and time of day rendered once a second, not per line."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``YYYY-MM-DD HH:MM:SS,mmm`` in local time, as :class:`logging.Formatter` writes it."""
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(_TIME_FORMAT, time.localtime(second))
        return f"{self._stamp},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def configure(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Send every logger's records to stderr, in ``fmt``, at ``level`` and above.

    Neither format shows the thread or the process, so records do not look them up.
    """
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter = {"()": JsonFormatter if fmt == "json" else TextFormatter}
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": RequestIdFilter}},
            "formatters": {"default": formatter},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "default",
                    "filters": ["request_id"],
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"level": level.upper(), "handlers": ["stderr"]},
        }
    )
