"""Logging setup for Herald programs: readable text lines or one JSON object per line.

The runtime logs each delivery (received, started, finished, failed, dead-lettered)
with structured fields in ``extra={"herald": {...}}``; the JSON format flattens them
into the record so log pipelines can filter on ``message_id``, ``queue`` or ``event``.
A line logged inside an OpenTelemetry span (a handler's own lines, with
:class:`herald.tracing.TracingMiddleware`) carries its ``trace_id`` and ``span_id``:
JSON fields, or ``trace=... span=...`` at the end of a text line.

>>> import io, json, logging
>>> out = io.StringIO()
>>> handler = configure(format="json", level="INFO", stream=out)
>>> logging.getLogger("herald.demo").info("hello %s", "there", extra={"herald": {"attempt": 1}})
>>> record = json.loads(out.getvalue())
>>> record["message"], record["level"], record["logger"], record["attempt"]
('hello there', 'INFO', 'herald.demo', 1)
>>> reset(); logging.getLogger().setLevel(logging.WARNING)
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from opentelemetry import trace

__all__ = [
    "FORMATS",
    "LEVELS",
    "JSONFormatter",
    "TextFormatter",
    "TraceIdFilter",
    "configure",
    "reset",
]

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LogFormat = Literal["text", "json"]

_RESERVED = ("time", "level", "logger", "message", "exception", "stack")
_IDS = ("trace_id", "span_id")


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _trace_ids(record: logging.LogRecord) -> tuple[str, str] | None:
    """The trace and span id (hex) of the span current where ``record`` was made, or
    else those of its ``herald`` fields (the worker's line about a delivery's outcome,
    logged after its span ended)."""
    ids: tuple[str, str] | tuple[()] | None = getattr(record, "otel_ids", None)
    if ids is None:
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            ids = (trace.format_trace_id(span.trace_id), trace.format_span_id(span.span_id))
        else:
            fields = _fields(record)
            trace_id, span_id = fields.get("trace_id"), fields.get("span_id")
            ids = (trace_id, span_id) if type(trace_id) is type(span_id) is str else ()
        record.otel_ids = ids
    return ids or None


class TraceIdFilter(logging.Filter):
    """Notes the current span's ids on each record as it is made, for handlers that
    format records later (in another thread or task); :func:`configure` adds it. It
    also sets ``record.trace_ids`` (`` trace=... span=...``, or empty outside a span)
    for ``%``-style formats of other handlers: ``"%(message)s%(trace_ids)s"``."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _trace_ids(record)
        record.trace_ids = "" if ids is None else f" trace={ids[0]} span={ids[1]}"
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "herald", None)
    return dict(fields) if isinstance(fields, dict) else {}


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z INFO    herald.worker: finished ...`` (+ traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        ids = _trace_ids(record)
        if ids is not None:
            line += f" trace={ids[0]} span={ids[1]}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ``herald`` fields
    flattened in, and ``exception`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = _trace_ids(record)
        if ids is not None:
            data["trace_id"], data["span_id"] = ids
        for name, value in _fields(record).items():
            if ids is None or name not in _IDS:
                data[f"herald_{name}" if name in _RESERVED + _IDS else name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class _HeraldHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler ``configure`` installed, so a second call replaces it."""


def configure(
    format: LogFormat | str = "text",
    level: int | str = "INFO",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send all logging to ``stream`` (default: stderr) in the given format.

    Replaces a handler installed by an earlier call; leaves other handlers alone.
    Returns the handler installed.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown log format {format!r}; use one of {', '.join(FORMATS)}")
    if isinstance(level, str):
        if level.upper() not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
        level = level.upper()
    reset()
    handler = _HeraldHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if format == "json" else TextFormatter())
    handler.addFilter(TraceIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def reset() -> None:
    """Remove the handler ``configure`` installed, if any."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _HeraldHandler):
            root.removeHandler(handler)
            handler.close()
