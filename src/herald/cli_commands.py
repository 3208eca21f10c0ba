"""The ``herald run``, ``herald publish`` and ``herald tail`` commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .broker import Prefetch, Subscription
from .bus import Bus, connect
from .cli_common import UsageError, broker_url, stop_on_signals, until_stopped
from .cli_endpoints import endpoint_address, metrics_middleware, serving_endpoints
from .display import json_body, one_line, safe_json
from .message import Message
from .service import Service
from .telemetry import TelemetryMiddleware
from .topic import is_pattern, validate_pattern

__all__ = [
    "describe",
    "load_service",
    "parse_data",
    "parse_headers",
    "publish_command",
    "run_command",
    "tail",
    "tail_command",
]

log = logging.getLogger("herald.cli")
PREVIEW_CHARS = 160


def load_service(target: str) -> Service:
    """The :class:`Service` named by ``MODULE:ATTRIBUTE`` (or ``MODULE`` holding exactly one),
    imported with the current directory on ``sys.path``."""
    module_name, _, attribute = target.partition(":")
    if not module_name:
        raise UsageError(f"expected MODULE:SERVICE (e.g. myapp.services:payroll), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise UsageError(
                f"cannot import {module_name!r}: no module named {missing!r} "
                "(looked in the current directory and on sys.path)"
            ) from exc
        raise
    if not attribute:
        found = {name: v for name, v in vars(module).items() if isinstance(v, Service)}
        if len(found) != 1:
            listed = ", ".join(sorted(found)) or "none"
            raise UsageError(
                f"module {module_name!r} holds {len(found)} herald.Service objects ({listed}); "
                f"name one as {module_name}:NAME"
            )
        return next(iter(found.values()))
    obj: object = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(obj, Service):
        raise UsageError(f"{target!r} is a {type(obj).__name__}, not a herald.Service")
    return obj


async def run_command(args: argparse.Namespace) -> int:
    services = [load_service(target) for target in args.targets]
    names = [service.name for service in services]
    if len(set(names)) != len(names):
        raise UsageError(f"the same service is named twice: {', '.join(names)}")
    metrics = endpoint_address(args.metrics_port) if args.metrics_port else None
    health = endpoint_address(args.health_port) if args.health_port else None
    middleware = metrics_middleware(metrics is not None)
    telemetry = TelemetryMiddleware() if args.telemetry else None
    if telemetry is not None:
        middleware = [*middleware, telemetry]
    async with connect(broker_url(args), middleware=middleware) as bus:
        log.info("serving %s on %s", ", ".join(names), bus.url)
        reporting = (
            asyncio.create_task(telemetry.run(bus, "+".join(names)))
            if telemetry is not None
            else None
        )
        try:
            async with serving_endpoints(bus, names, metrics=metrics, health=health):
                await bus.serve(
                    *services,
                    concurrency=args.concurrency,
                    shutdown_timeout=args.shutdown_timeout,
                )
        finally:
            if reporting is not None:
                reporting.cancel()
                await asyncio.gather(reporting, return_exceptions=True)
    return 0


def parse_data(text: str, stdin: TextIO | None = None) -> bytes:
    """The ``--data`` argument as compact JSON bytes; ``-`` reads stdin, ``@path`` a file."""
    source = "--data"
    if text == "-":
        text, source = (stdin or sys.stdin).read(), "--data from stdin"
    elif text.startswith("@"):
        path = text[1:]
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            raise UsageError(f"--data {text}: cannot read {path!r}: {exc.strerror}") from exc
        source = f"--data from {path!r}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def parse_headers(items: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; the value may contain ``=``."""
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--header {item!r}: expected NAME=VALUE")
        headers[name.strip()] = value
    return headers


def _event_type(text: str) -> str:
    try:
        validate_pattern(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if is_pattern(text):
        raise UsageError(f"cannot publish to a pattern {text!r}: give one event type")
    return text


async def publish_command(args: argparse.Namespace) -> int:
    message = Message(
        type=_event_type(args.type),
        body=parse_data(args.data),
        subject=args.key,
        source=args.source,
        headers=parse_headers(args.header),
    )
    async with connect(broker_url(args)) as bus:
        await bus.publish(message)
    print(message.id, flush=True)
    return 0


def _preview(message: Message) -> str:
    try:
        text = message.body.decode()
    except UnicodeDecodeError:
        return f"<{len(message.body)} bytes of {message.datacontenttype}>"
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def describe(message: Message, *, as_json: bool = False) -> str:
    """One line for ``herald tail``: readable, or a JSON object."""
    time = message.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if not as_json:
        return one_line(
            f"{time}  {message.type}  key={message.subject or '-'}  id={message.id}  "
            + _preview(message)
        )
    data: dict[str, Any] = {
        "time": time,
        "type": message.type,
        "key": message.subject,
        "id": message.id,
        "source": message.source,
        "datacontenttype": message.datacontenttype,
        "headers": dict(message.headers),
        **json_body(message.body),
    }
    return safe_json(data)


async def tail(
    bus: Bus,
    pattern: str = "#",
    *,
    as_json: bool = False,
    count: int | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print every event matching ``pattern`` published from now on, until a signal
    or ``count`` events; returns how many were printed."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        subscription = Subscription(
            f"tail-{secrets.token_hex(4)}", "tail", (pattern,), durable=False
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    await bus.broker.declare(subscription)
    print(f"herald: tailing {pattern!r} on {bus.url} (Ctrl-C to stop)", file=err, flush=True)
    printed = 0
    with stop_on_signals() as stop:
        deliveries = until_stopped(bus.broker.consume(subscription, Prefetch(64)), stop)
        async with contextlib.aclosing(deliveries):
            async for delivery in deliveries:
                print(describe(delivery.message, as_json=as_json), file=out, flush=True)
                await delivery.ack()
                printed += 1
                if count is not None and printed >= count:
                    break
    return printed


async def tail_command(args: argparse.Namespace) -> int:
    async with connect(broker_url(args)) as bus:
        await tail(bus, args.pattern, as_json=args.json, count=args.count)
    return 0
