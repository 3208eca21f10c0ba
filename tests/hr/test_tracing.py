"""The platform's processes export their spans over OTLP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, and a new employee is one trace from hr-web
through employees (RPC), its outbox, to payroll and giftcards."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .platform import Platform, eventually

Span = tuple[str, str, bytes, bytes, bytes]
"""service.name, span name, trace id, span id, parent span id (the platform may
record more spans than Herald's, e.g. its web framework's)."""


class Collector(ThreadingHTTPServer):
    """A minimal OTLP/HTTP trace receiver on 127.0.0.1."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        found: list[Span] = []
        for resource in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource.scope_spans:
                found += [
                    (service, s.name, s.trace_id, s.span_id, s.parent_span_id) for s in scope.spans
                ]
        with self.server.lock:
            self.server.spans += found
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", server.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


async def test_a_new_employee_is_one_trace_across_the_platform(
    collector: Collector, workdir: Path
) -> None:
    hr = Platform(f"sqlite:///{workdir}/herald.db", workdir)
    try:
        await hr.start("employees", "payroll", "giftcards", "hr-web")
        response = await hr.create(1)
        assert response.status_code in (200, 201), response.text

        def traced() -> set[tuple[str, str]]:
            with collector.lock:
                return {(service, name) for service, name, *_ in collector.spans}

        wanted = {
            ("hr-web", "send rpc.employees.create"),
            ("employees", "process rpc.employees.create"),
            ("employees", "create employee.created"),
            ("employees", "send employee.created"),
            ("payroll", "process employee.created"),
            ("giftcards", "process employee.created"),
        }
        await eventually(lambda: wanted <= traced(), timeout=30, what=f"spans {wanted}")
    finally:
        await hr.close()
        for name in hr.processes:
            print(f"----- {name} log (tail) -----\n{hr.log(name)}")
    with collector.lock:
        spans = {(service, name): (trace, span, parent)
                 for service, name, trace, span, parent in collector.spans}  # fmt: skip
    (trace_id,) = {spans[key][0] for key in wanted}
    assert len(trace_id) == 16
    in_trace = [(service, span, parent) for service, _, trace, span, parent in collector.spans
                if trace == trace_id]  # fmt: skip
    (root,) = [(service, span) for service, span, parent in in_trace if parent == b""]
    assert root[0] == "hr-web"  # the trace starts at the web request (or its RPC)
    request = spans[("hr-web", "send rpc.employees.create")]
    served = spans[("employees", "process rpc.employees.create")]
    assert served[2] == request[1]
    created = spans[("employees", "create employee.created")]
    assert created[2] == served[1]  # staged while serving the request
    assert spans[("employees", "send employee.created")][2] == created[1]  # the relay
    for consumer in ("payroll", "giftcards"):
        assert spans[(consumer, "process employee.created")][2] == created[1]
