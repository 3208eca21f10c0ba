"""One trace across processes, on every broker that has more than one process: the
test process asks a child (RPC), the child publishes an event while answering, the
test process handles it. The child exports its spans to a file; both halves must
form one tree, joined by the W3C trace context the messages carried."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

import herald
from herald.testing.recorder import eventually
from herald.tracing import TracingMiddleware, messaging_system

from ..servers import SPECS, BrokerSpec
from .child import Ping, Pong, Ponged
from .spans import by_name, read_spans, record_of

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = SpanContext(
    0x5B8EFFF798038103D269B633813FC60C,
    0xEEE19B7EC3C1B174,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("herald", "t1")]),
)
"""A caller upstream of the test, whose trace state must reach the child."""
CROSS_PROCESS = [
    pytest.param(spec, id=spec.scheme, marks=[getattr(pytest.mark, spec.scheme)])
    if spec.port is not None or spec.scheme == "sqs"
    else pytest.param(spec, id=spec.scheme)
    for spec in SPECS
    if spec.scheme != "memory"
]


def test_every_multi_process_broker_is_covered() -> None:
    assert {p.values[0].scheme for p in CROSS_PROCESS} == {s.scheme for s in SPECS} - {"memory"}


def _ready(path: Path, child: asyncio.subprocess.Process) -> bool:
    assert child.returncode is None, f"child exited with {child.returncode}"
    return path.exists()


@pytest.mark.parametrize("spec", CROSS_PROCESS)
async def test_one_trace_across_processes(spec: BrokerSpec, tmp_path: Path) -> None:
    spec.require()
    url = spec.make_url(uuid.uuid4().hex[:10], tmp_path)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = TracingMiddleware.for_url(url, parent=True, tracer_provider=provider)
    watcher = herald.Service("watcher")
    seen: list[int] = []

    @watcher.on(Ponged)
    async def record(event: Ponged) -> None:
        seen.append(event.n)

    child_spans = tmp_path / "child-spans.jsonl"
    async with herald.connect(url, source="test", middleware=[tracing]) as bus:
        worker = await bus.start(watcher)
        child = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests.tracing.child", url, os.fspath(child_spans)),
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        ready = child_spans.with_suffix(".ready")
        try:
            await eventually(lambda: _ready(ready, child), 30, "the child to start", 0.05)
            upstream = trace.set_span_in_context(NonRecordingSpan(UPSTREAM))
            tracer = provider.get_tracer("test")
            with tracer.start_as_current_span("request", context=upstream) as root:
                pong = await bus.request(Ping(n=7), Pong, timeout=30)
            assert pong.n == 7
            await eventually(lambda: worker.handled == 1, 30, "the event from the child")
            await worker.stop()
        finally:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await child.wait()
            with contextlib.suppress(Exception):
                await bus.broker.destroy()
    assert seen == [7]
    assert child.returncode == 0

    here = by_name(record_of(span) for span in exporter.get_finished_spans())
    there = by_name(read_spans(child_spans))
    assert set(here) == {"request", "send rpc.tracing.ping", "process tracing.ponged",
                         "ack tracing.ponged"}  # fmt: skip
    assert set(there) == {"process rpc.tracing.ping", "send tracing.ponged",
                          "ack rpc.tracing.ping"}  # fmt: skip
    trace_id = root.get_span_context().trace_id
    assert trace_id == UPSTREAM.trace_id
    assert {span.trace_id for span in [*here.values(), *there.values()]} == {trace_id}
    # tracestate travelled too: the child's spans inherited it from the request's context
    assert {span.trace_state for span in there.values()} == {"herald=t1"}

    send_request, served = here["send rpc.tracing.ping"], there["process rpc.tracing.ping"]
    assert send_request.parent_id == here["request"].span_id
    assert (send_request.kind, served.kind) == ("PRODUCER", "CONSUMER")
    assert served.parent_id == send_request.span_id  # parent=True: the creation context
    assert served.links == (send_request.span_id,)  # and always a link to it
    assert there["send tracing.ponged"].parent_id == served.span_id
    handled = here["process tracing.ponged"]
    assert handled.parent_id == there["send tracing.ponged"].span_id
    assert handled.links == (there["send tracing.ponged"].span_id,)
    assert here["ack tracing.ponged"].parent_id == handled.span_id
    assert there["ack rpc.tracing.ping"].parent_id == served.span_id
    assert here["ack tracing.ponged"].kind == "CLIENT"

    system = messaging_system(url)
    assert served.attributes["messaging.system"] == system
    assert served.attributes["messaging.consumer.group.name"] == "tracee"
    assert served.attributes["messaging.destination.subscription.name"] == "tracee.rpc.tracing.ping"
    conversation = send_request.attributes["messaging.message.conversation_id"]
    assert served.attributes["messaging.message.conversation_id"] == conversation
    assert (
        served.attributes["messaging.message.id"] == send_request.attributes["messaging.message.id"]
    )
    assert handled.attributes["herald.outcome"] == "acked"
    assert handled.attributes["messaging.system"] == system
