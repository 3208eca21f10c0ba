"""Finished spans as plain records, exported to a JSON-lines file by child processes
and read back by the tests (the SDK's in-memory exporter in the test process)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["FileSpanExporter", "SpanRecord", "read_spans", "record_of"]


@dataclass(frozen=True)
class SpanRecord:
    name: str
    kind: str
    trace_id: int
    span_id: int
    parent_id: int | None
    links: tuple[int, ...]
    attributes: dict[str, Any]
    status: str
    process: str
    trace_state: str = ""


def record_of(span: ReadableSpan, process: str = "test") -> SpanRecord:
    context = span.get_span_context()
    assert context is not None
    return SpanRecord(
        name=span.name,
        kind=span.kind.name,
        trace_id=context.trace_id,
        span_id=context.span_id,
        parent_id=span.parent.span_id if span.parent is not None else None,
        links=tuple(link.context.span_id for link in span.links),
        attributes=dict(span.attributes or {}),
        status=span.status.status_code.name,
        process=process,
        trace_state=context.trace_state.to_header(),
    )


class FileSpanExporter(SpanExporter):
    """Appends each span as one JSON line, flushed, so nothing waits for a shutdown."""

    def __init__(self, path: Path, process: str) -> None:
        self._out = path.open("a", buffering=1)
        self._process = process

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            record = record_of(span, self._process)
            self._out.write(json.dumps(record.__dict__) + "\n")
        self._out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._out.close()


def read_spans(path: Path) -> list[SpanRecord]:
    records = []
    for line in path.read_text().splitlines():
        data = json.loads(line)
        data["links"] = tuple(data["links"])
        records.append(SpanRecord(**data))
    return records


def by_name(spans: Iterable[SpanRecord]) -> dict[str, SpanRecord]:
    found: dict[str, SpanRecord] = {}
    for span in spans:
        assert span.name not in found, f"two spans named {span.name}"
        found[span.name] = span
    return found
