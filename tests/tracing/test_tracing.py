"""Tracing in one process (memory://): the span tree, links, attributes, failures,
batches, the outbox, trace ids in log lines, and hostile trace headers."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

import herald
from herald import logs
from herald.outbox import Outbox, OutboxRelay
from herald.testing.recorder import eventually
from herald.tracing import TracingMiddleware, creation_context

from .spans import SpanRecord, by_name, record_of

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Hired(herald.Event, type="staff.hired"):
    name: str


class Welcomed(herald.Event, type="staff.welcomed"):
    name: str


class Fired(herald.Event, type="staff.fired"):
    name: str


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    yield found
    found.clear()


def provider_for(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def spans(exporter: InMemorySpanExporter) -> list[SpanRecord]:
    return [record_of(span) for span in exporter.get_finished_spans()]


def url() -> str:
    return f"memory://tracing-{uuid.uuid4().hex[:10]}"


async def test_parent_mode_makes_one_tree_and_logs_carry_the_trace(
    exporter: InMemorySpanExporter,
) -> None:
    provider = provider_for(exporter)
    tracing = TracingMiddleware(system="herald.memory", parent=True, tracer_provider=provider)
    out = io.StringIO()
    logs.configure(format="json", level="INFO", stream=out)
    hr, welcome = herald.Service("hr"), herald.Service("welcome")

    @hr.on(Hired)
    async def hired(event: Hired, ctx: herald.Context) -> None:
        ctx.logger.info("welcoming %s", event.name)
        await ctx.publish(Welcomed(name=event.name))

    @welcome.on(Welcomed)
    async def welcomed(event: Welcomed) -> None:
        pass

    try:
        async with herald.connect(url(), middleware=[tracing]) as bus:
            workers = [await bus.start(hr), await bus.start(welcome)]
            with provider.get_tracer("test").start_as_current_span("signup") as root:
                sent = await bus.publish(Hired(name="Ada"), key="ada")
            await eventually(lambda: all(w.handled == 1 for w in workers), what="handled")
            for worker in workers:
                await worker.stop()
    finally:
        logs.reset()
        logging.getLogger().setLevel(logging.WARNING)
    found = by_name(spans(exporter))
    assert set(found) == {
        "signup", "send staff.hired", "process staff.hired", "ack staff.hired",
        "send staff.welcomed", "process staff.welcomed", "ack staff.welcomed",
    }  # fmt: skip
    assert {s.trace_id for s in found.values()} == {root.get_span_context().trace_id}
    chain = ["signup", "send staff.hired", "process staff.hired", "send staff.welcomed",
             "process staff.welcomed"]  # fmt: skip
    for parent, child in itertools.pairwise(chain):
        assert found[child].parent_id == found[parent].span_id, child
    assert found["process staff.hired"].links == (found["send staff.hired"].span_id,)
    assert found["ack staff.welcomed"].parent_id == found["process staff.welcomed"].span_id
    kinds = {name: span.kind for name, span in found.items()}
    assert kinds["send staff.hired"] == "PRODUCER"
    assert kinds["process staff.hired"] == "CONSUMER"
    assert kinds["ack staff.hired"] == "CLIENT"

    send = found["send staff.hired"].attributes
    assert send == {
        "messaging.system": "herald.memory",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "staff.hired",
        "messaging.message.id": sent.id,
        "messaging.message.body.size": len(sent.body),
    }
    process = found["process staff.hired"].attributes
    assert process["messaging.operation.type"] == "process"
    assert process["messaging.destination.subscription.name"] == "hr.staff.hired"
    assert process["messaging.consumer.group.name"] == "hr"
    assert process["messaging.message.id"] == sent.id
    assert process["herald.outcome"] == "acked"
    settle = found["ack staff.hired"].attributes
    assert (settle["messaging.operation.type"], settle["messaging.operation.name"]) == (
        "settle",
        "ack",
    )

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    (line,) = [line for line in lines if line["message"] == "welcoming Ada"]
    assert line["trace_id"] == f"{found['process staff.hired'].trace_id:032x}"
    assert line["span_id"] == f"{found['process staff.hired'].span_id:016x}"
    finished = [line for line in lines if line.get("event") == "finished"]
    assert len(finished) == 2
    for line in finished:
        process = found[f"process {line['type']}"]
        assert (line["trace_id"], line["span_id"]) == (
            f"{process.trace_id:032x}",
            f"{process.span_id:016x}",
        )


async def test_process_spans_link_to_the_creation_context_by_default(
    exporter: InMemorySpanExporter,
) -> None:
    tracing = TracingMiddleware(tracer_provider=provider_for(exporter))
    svc = herald.Service("welcome")

    @svc.on(Hired)
    async def hired(event: Hired) -> None:
        pass

    async with herald.connect(url(), middleware=[tracing]) as bus:
        worker = await bus.start(svc)
        await bus.publish(Hired(name="Ada"))
        await eventually(lambda: worker.handled == 1, what="handled")
        await worker.stop()
    found = by_name(spans(exporter))
    send, process = found["send staff.hired"], found["process staff.hired"]
    assert process.parent_id is None
    assert process.trace_id != send.trace_id
    assert process.links == (send.span_id,)
    assert found["ack staff.hired"].trace_id == process.trace_id


async def test_a_batch_is_one_send_span_and_every_message_carries_it(
    exporter: InMemorySpanExporter,
) -> None:
    tracing = TracingMiddleware(tracer_provider=provider_for(exporter))
    svc = herald.Service("staff")
    received: list[herald.Message] = []

    @svc.on("staff.*")
    async def any_staff(message: herald.Message) -> None:
        received.append(message)

    async with herald.connect(url(), middleware=[tracing]) as bus:
        worker = await bus.start(svc)
        await bus.publish_many([Hired(name="a"), Fired(name="b"), Hired(name="c")])
        await eventually(lambda: worker.handled == 3, what="handled")
        await worker.stop()
    records = spans(exporter)
    (send,) = [s for s in records if s.kind == "PRODUCER"]
    assert send.name == "send"
    assert send.attributes["messaging.batch.message_count"] == 3
    assert "messaging.destination.name" not in send.attributes
    for message in received:
        context = creation_context(message.headers)
        assert context is not None and context.span_id == send.span_id
    processes = [s for s in records if s.kind == "CONSUMER"]
    assert sorted(s.name for s in processes) == [
        "process staff.fired", "process staff.hired", "process staff.hired",
    ]  # fmt: skip
    assert all(s.links == (send.span_id,) for s in processes)
    assert {s.attributes["messaging.destination.template"] for s in processes} == {"staff.*"}


async def test_failures_mark_the_process_span_and_each_settlement_has_its_span(
    exporter: InMemorySpanExporter,
) -> None:
    tracing = TracingMiddleware(tracer_provider=provider_for(exporter))
    svc = herald.Service("payroll")

    @svc.on(Hired, retry=herald.RetryPolicy(attempts=2, initial_delay=0.01, jitter=0))
    async def hired(event: Hired) -> None:
        raise RuntimeError("payroll database down")

    async with herald.connect(url(), middleware=[tracing]) as bus:
        worker = await bus.start(svc)
        await bus.publish(Hired(name="Ada"))
        await eventually(lambda: worker.handled == 2, what="handled")
        await worker.stop()
    records = spans(exporter)
    processes = [s for s in records if s.kind == "CONSUMER"]
    assert [s.attributes["herald.outcome"] for s in processes] == ["retried", "dead-lettered"]
    assert all(s.attributes["error.type"] == "RuntimeError" for s in processes)
    assert all(s.status == "ERROR" for s in processes)
    (send,) = [s for s in records if s.kind == "PRODUCER"]
    assert [s.links for s in processes] == [(send.span_id,), (send.span_id,)]  # retried copy
    settles = [s for s in records if s.kind == "CLIENT"]
    assert [s.name for s in settles] == ["retry staff.hired", "dead_letter staff.hired"]
    assert [s.parent_id for s in settles] == [s.span_id for s in processes]
    assert all(s.attributes["messaging.operation.type"] == "settle" for s in settles)


@pytest.mark.parametrize(
    ("headers", "linked"),
    [
        ({"traceparent": "garbage"}, False),
        ({"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}, False),  # all-zero id
        ({"traceparent": VALID + " " * 200}, False),  # over the length read
        ({"traceparent": VALID, "tracestate": "=,=," * 40}, True),  # bad state: dropped
        ({"traceparent": VALID, "tracestate": "a=" + "x" * 1000}, True),  # oversized state: dropped
        ({"ce-traceparent": VALID}, True),  # a CloudEvents binding's prefix
        ({"traceparent": "\x00\xff" * 10}, False),
    ],
)
async def test_hostile_trace_headers_are_ignored_never_fatal(
    exporter: InMemorySpanExporter, headers: dict[str, str], linked: bool
) -> None:
    tracing = TracingMiddleware(parent=True, tracer_provider=provider_for(exporter))
    svc = herald.Service("payroll")

    @svc.on(Hired)
    async def hired(event: Hired) -> None:
        pass

    name = url()
    async with herald.connect(name) as plain, herald.connect(name, middleware=[tracing]) as bus:
        worker = await bus.start(svc)
        await plain.publish(Hired(name="Ada"), headers=headers)
        await eventually(lambda: worker.handled == 1, what="handled")
        await worker.stop()
    (process,) = [s for s in spans(exporter) if s.kind == "CONSUMER"]
    assert process.attributes["herald.outcome"] == "acked"
    if linked:
        assert process.links == (0xB7AD6B7169203331,)
        assert process.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    else:
        assert process.links == ()
        assert process.parent_id is None


async def test_a_traced_publish_replaces_a_malformed_traceparent(
    exporter: InMemorySpanExporter,
) -> None:
    tracing = TracingMiddleware(tracer_provider=provider_for(exporter))
    svc = herald.Service("payroll")
    received: list[herald.Message] = []

    @svc.on(Hired)
    async def hired(event: Hired, ctx: herald.Context) -> None:
        received.append(ctx.message)

    name = url()
    async with herald.connect(name) as plain, herald.connect(name, middleware=[tracing]) as bus:
        worker = await plain.start(svc)
        await bus.publish(Hired(name="Ada"), headers={"traceparent": "garbage"})
        await eventually(lambda: worker.handled == 1, what="handled")
        await worker.stop()
    (send,) = spans(exporter)
    context = creation_context(received[0].headers)
    assert context is not None and context.span_id == send.span_id


async def test_without_an_sdk_the_creation_context_is_passed_on() -> None:
    tracing = TracingMiddleware(parent=True, tracer_provider=NoOpTracerProvider())
    relay = herald.Service("relay")
    received: list[herald.Message] = []

    @relay.on(Hired)
    async def hired(event: Hired, ctx: herald.Context) -> None:
        await ctx.publish(Welcomed(name=event.name))

    sink = herald.Service("sink")

    @sink.on(Welcomed)
    async def welcomed(event: Welcomed, ctx: herald.Context) -> None:
        received.append(ctx.message)

    async with herald.connect(url(), middleware=[tracing]) as bus:
        workers = [await bus.start(relay), await bus.start(sink)]
        await bus.publish(Hired(name="Ada"), headers={"traceparent": VALID})
        await eventually(lambda: bool(received), what="handled")
        for worker in workers:
            await worker.stop()
    context = creation_context(received[0].headers)
    assert context is not None and context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C


async def test_rpc_requests_are_sent_and_processed_in_the_callers_trace(
    exporter: InMemorySpanExporter,
) -> None:
    provider = provider_for(exporter)
    tracing = TracingMiddleware(parent=True, tracer_provider=provider)
    svc = herald.Service("directory")

    @svc.rpc(Hired)
    async def lookup(request: Hired) -> Welcomed:
        return Welcomed(name=request.name)

    async with herald.connect(url(), middleware=[tracing]) as bus:
        worker = await bus.start(svc)
        with provider.get_tracer("test").start_as_current_span("page"):
            assert (await bus.request(Hired(name="Ada"), Welcomed)).name == "Ada"
        await worker.stop()
    found = by_name(spans(exporter))
    send, process = found["send rpc.staff.hired"], found["process rpc.staff.hired"]
    assert send.parent_id == found["page"].span_id
    assert process.parent_id == send.span_id
    conversation = send.attributes["messaging.message.conversation_id"]
    assert conversation == send.attributes["messaging.message.id"]
    assert process.attributes["messaging.message.conversation_id"] == conversation


async def test_the_outbox_keeps_the_creation_context_of_the_transaction(
    exporter: InMemorySpanExporter,
) -> None:
    provider = provider_for(exporter)
    tracing = TracingMiddleware(parent=True, tracer_provider=provider)
    outbox = Outbox(source="employees", tracer_provider=provider)
    engine = create_async_engine("sqlite+aiosqlite://")
    svc = herald.Service("payroll")

    @svc.on(Hired)
    async def hired(event: Hired) -> None:
        pass

    try:
        await outbox.create(engine)
        with provider.get_tracer("test").start_as_current_span("create employee") as root:
            async with async_sessionmaker(engine)() as session, session.begin():
                await outbox.stage(session, Hired(name="Ada"), key="ada")
        async with herald.connect(url(), middleware=[tracing]) as bus:
            worker = await bus.start(svc)
            assert await OutboxRelay(engine, bus, outbox).drain() == 1
            await eventually(lambda: worker.handled == 1, what="handled")
            await worker.stop()
    finally:
        await engine.dispose()
    found = by_name(record_of(s) for s in exporter.get_finished_spans())
    create, send = found["create staff.hired"], found["send staff.hired"]
    assert create.parent_id == found["create employee"].span_id
    assert create.kind == "PRODUCER"
    assert create.attributes["messaging.operation.type"] == "create"
    assert send.links == (create.span_id,)
    assert send.kind == "CLIENT"  # the create span, not this one, is the creation context
    assert send.parent_id == create.span_id  # parent=True, relayed outside any span
    assert found["process staff.hired"].parent_id == create.span_id
    assert found["process staff.hired"].links == (create.span_id,)
    assert {s.trace_id for s in found.values()} == {root.get_span_context().trace_id}


async def test_settle_spans_can_be_left_out(exporter: InMemorySpanExporter) -> None:
    tracing = TracingMiddleware(settle=False, tracer_provider=provider_for(exporter))
    svc = herald.Service("welcome")

    @svc.on(Hired)
    async def hired(event: Hired) -> None:
        pass

    async with herald.connect(url(), middleware=[tracing]) as bus:
        worker = await bus.start(svc)
        await bus.publish(Hired(name="Ada"))
        await eventually(lambda: worker.handled == 1, what="handled")
        await worker.stop()
    assert sorted(s.name for s in spans(exporter)) == ["process staff.hired", "send staff.hired"]


async def test_a_delivery_cut_short_by_shutdown_is_released_not_failed(
    exporter: InMemorySpanExporter,
) -> None:
    tracing = TracingMiddleware(tracer_provider=provider_for(exporter))
    svc = herald.Service("slow")
    started: list[str] = []

    @svc.on(Hired)
    async def hired(event: Hired) -> None:
        started.append(event.name)
        await asyncio.Event().wait()

    async with herald.connect(url(), middleware=[tracing]) as bus:
        worker = await bus.start(svc)
        await bus.publish(Hired(name="Ada"))
        await eventually(lambda: bool(started), what="the handler to start")
        await worker.stop(timeout=0.05)
    (process,) = [s for s in spans(exporter) if s.kind == "CONSUMER"]
    assert process.attributes["herald.outcome"] == "released"
    assert process.status == "UNSET"


def test_creation_contexts_read_again_are_the_same_and_keep_their_trace_state() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    plain = creation_context({"traceparent": parent})
    assert plain is not None and plain.span_id == 0xB7AD6B7169203331
    assert creation_context({"ce-traceparent": parent}) == plain  # read again, same context
    stated = creation_context({"traceparent": parent, "tracestate": "herald=t1"})
    assert stated is not None and stated.trace_state.to_header() == "herald=t1"
    assert creation_context({"traceparent": parent}) == plain  # not the stated one
    assert plain.trace_state.to_header() == ""
    for _ in range(2):  # a malformed one stays ignored, the second time too
        assert creation_context({"traceparent": "00-not-a-trace-01"}) is None
    assert creation_context({"traceparent": parent + "x" * 200}) is None  # oversized
