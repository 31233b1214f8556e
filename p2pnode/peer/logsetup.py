"""A peer's log: its level, one line per record (text or JSON), a capped file or stdout."""

from __future__ import annotations

import contextlib
import datetime
import enum
import json
import logging
import logging.handlers
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from p2pnode.net.logs import Throttle


class LogLevel(enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def number(self) -> int:
        return logging.getLevelName(self.name)  # type: ignore[no-any-return]


class LogFormat(enum.Enum):
    TEXT = "text"
    """`time LEVEL logger: message`, a line break inside a record written as `\\n`."""
    JSON = "json"
    """One JSON object per line: time, level, logger, message and maybe exception."""


class LogTarget(enum.Enum):
    FILE = "file"
    """The home's node.log, rotated by size."""
    STDOUT = "stdout"
    """Standard output, for journald or a container's log collector."""


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: LogLevel = LogLevel.INFO
    format: LogFormat = LogFormat.TEXT
    to: LogTarget = LogTarget.FILE
    max_mb: float = 10.0
    """node.log is rotated when it would grow past this many MB."""
    keep: int = 5
    """Rotated files kept (node.log.1 … node.log.N): the log never takes more than
    (keep + 1) times max_mb, whatever floods it."""


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class TextFormatter(logging.Formatter):
    """`2026-12-07 21:21:32,493 INFO logger: message`, a record always on one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return _one_line(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (json escapes line breaks)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, object] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def handler_for(log_file: Path, settings: LogSettings) -> logging.Handler:
    """The handler `settings` ask for, formatted and throttled (network events)."""
    handler: logging.Handler
    if settings.to is LogTarget.STDOUT:
        handler = logging.StreamHandler(sys.stdout)
    else:
        handler = logging.handlers.RotatingFileHandler(
            log_file,
            maxBytes=max(1, int(settings.max_mb * 1024 * 1024)),
            backupCount=settings.keep,
            encoding="utf-8",
        )
    json_lines = settings.format is LogFormat.JSON
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(Throttle())
    return handler


@contextlib.contextmanager
def logging_to(log_file: Path, settings: LogSettings) -> Iterator[None]:
    """Inside the block, the process's logs go where `settings` say, and only there (the
    terminal may hold a dashboard); the root logger's handlers and level are restored after."""
    handler = handler_for(log_file, settings)
    root = logging.getLogger()
    handlers, previous = list(root.handlers), root.level
    root.handlers[:] = [handler]
    root.setLevel(settings.level.number)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(previous)
        handler.close()


class LogCounter(logging.Handler):
    """Counts the warnings and errors a process logs, and keeps the last error's message:
    what a dashboard shows of a log it cannot read."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.warnings = 0
        self.errors = 0
        self.last_error = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
            with contextlib.suppress(Exception):  # a record that cannot format: counted anyway
                self.last_error = _one_line(record.getMessage())[:200]
        else:
            self.warnings += 1


@contextlib.contextmanager
def counting(counter: LogCounter) -> Iterator[None]:
    """Inside the block, the root logger's records reach `counter` too."""
    root = logging.getLogger()
    root.addHandler(counter)
    try:
        yield
    finally:
        root.removeHandler(counter)
