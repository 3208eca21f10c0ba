"""Where the cost-model benchmarks run: a fresh namespace on each broker, removed after.

Servers come from the same environment variables as the suites (``BENCH_AMQP_URL``,
``BENCH_NATS_URL``, ``BENCH_REDIS_URL``); Kafka (Tansu) and SQS (moto) are started
on loopback ports by :mod:`benchmarks.kafka_bench` and :mod:`benchmarks.sqs_bench`
when their variables are unset, as the test suite starts them.
"""

from __future__ import annotations

import functools
import importlib
import multiprocessing
import multiprocessing.context
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import herald

__all__ = ["BROKERS", "broker_url", "cleanup_url", "consumer_context"]

BROKERS = ("memory", "sqlite", "amqp", "nats", "redis", "kafka", "sqs")


@functools.cache
def consumer_context() -> multiprocessing.context.ForkServerContext:
    """Where consumer processes come from: forked from a server process that imported
    Herald once (a clean process, unlike the caller: no SQLite, socket or matplotlib
    state), so each starts in a fraction of a second and its memory is its own."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["benchmarks.sweep", "benchmarks.footprint"])
    return ctx


def _workdir(run_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"herald-costmodel-{run_id}"


def broker_url(broker: str, run_id: str) -> str:
    """A URL on ``broker`` no other run shares."""
    namespace = f"cm{run_id}"
    if broker == "memory":
        return f"memory://{namespace}"
    if broker == "sqlite":
        directory = _workdir(run_id)
        directory.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{directory}/bench.db"
    if broker == "amqp":
        return f"{importlib.import_module('benchmarks.amqp_bench').AMQP_URL}?namespace={namespace}"
    if broker == "nats":
        return f"{importlib.import_module('benchmarks.nats_bench').NATS_URL}?namespace={namespace}"
    if broker == "redis":
        return (
            f"{importlib.import_module('benchmarks.redis_bench').REDIS_URL}?namespace={namespace}"
        )
    if broker == "kafka":
        kafka = importlib.import_module("benchmarks.kafka_bench")
        return (
            f"kafka://{kafka.bootstrap()}?namespace={namespace}"
            f"&session_timeout={kafka.SESSION_TIMEOUT}"
        )
    if broker == "sqs":
        endpoint = importlib.import_module("benchmarks.sqs_bench").endpoint()
        return f"sqs://bench:bench@us-east-1?endpoint={endpoint}&namespace={namespace}&wait=1"
    raise ValueError(f"unknown broker {broker!r}; choose from {', '.join(BROKERS)}")


async def cleanup_url(url: str) -> None:
    """Remove what a run created at ``url`` (queues, streams, keys, the SQLite file)."""
    if url.startswith("memory://"):
        return
    try:
        async with herald.connect(url) as bus:
            await bus.broker.destroy()
    finally:
        if url.startswith("sqlite:"):
            shutil.rmtree(Path(urlsplit(url).path).parent, ignore_errors=True)
