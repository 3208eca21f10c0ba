"""The ``herald docs`` commands: ``asyncapi`` writes a document, ``serve`` shows it.

A target names a :class:`herald.Service`, a list of them, or a function that takes no
arguments and returns either (``MODULE:NAME``; ``MODULE`` alone when it holds
exactly one service). ``--codecs MODULE:NAME`` names a :class:`herald.CodecRegistry`
(or a function returning one) whose protobuf messages the document should show.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .asyncapi import asyncapi_document
from .asyncapi.viewer import ViewerServer, find_assets
from .cli_commands import load_service
from .cli_common import UsageError, broker_url, stop_on_signals
from .codec import CodecRegistry
from .service import Service

__all__ = [
    "add_docs_commands",
    "asyncapi_command",
    "load_services",
    "serve_command",
    "service_targets",
]


def _load_object(target: str, option: str = "") -> object:
    """The object ``MODULE:NAME`` names, imported with the current directory on the path."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"{option or 'a target'} takes MODULE:NAME, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise UsageError(
                f"cannot import {module_name!r}: no module named {missing!r} "
                "(looked in the current directory and on sys.path)"
            ) from exc
        raise
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return obj


def load_services(target: str) -> list[Service]:
    """The services ``target`` names (see the module's docstring)."""
    if ":" not in target:
        return [load_service(target)]
    obj = _load_object(target)
    if callable(obj) and not isinstance(obj, Service):
        obj = obj()
    if isinstance(obj, Service):
        return [obj]
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
        found = list(obj)
        if found and all(isinstance(item, Service) for item in found):
            return found
    raise UsageError(
        f"{target!r} is a {type(obj).__name__}: expected a herald.Service, a list of them, "
        "or a function returning either"
    )


def _codecs(target: str | None) -> CodecRegistry | None:
    if target is None:
        return None
    obj = _load_object(target, "--codecs")
    if callable(obj) and not isinstance(obj, CodecRegistry):
        obj = obj()
    if not isinstance(obj, CodecRegistry):
        raise UsageError(f"--codecs {target} is a {type(obj).__name__}, not a CodecRegistry")
    return obj


def _document(args: argparse.Namespace) -> dict[str, Any]:
    services = [service for target in args.targets for service in load_services(target)]
    return asyncapi_document(
        services,
        broker_url=broker_url(args),
        codecs=_codecs(args.codecs),
        title=args.title,
        version=args.api_version,
    )


async def asyncapi_command(args: argparse.Namespace) -> int:
    text = json.dumps(_document(args), indent=2, ensure_ascii=False) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        await asyncio.to_thread(Path(args.output).write_text, text, encoding="utf-8")
    return 0


async def serve_command(args: argparse.Namespace) -> int:
    assets = find_assets(args.viewer)
    server = ViewerServer(_document(args), assets, args.host, args.port)
    server.start()
    try:
        print(
            f"herald: AsyncAPI viewer on {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True
        )
        with stop_on_signals() as stop:
            await stop.wait()
    finally:
        server.stop()
    return 0


def service_targets() -> argparse.ArgumentParser:
    """A parent parser of the ``MODULE:SERVICE...`` arguments that
    :func:`load_services` reads (``herald docs``, ``herald schema``)."""
    source = argparse.ArgumentParser(add_help=False)
    source.add_argument(
        "targets",
        nargs="+",
        metavar="MODULE:SERVICE",
        help="a service, a list of services, or a function returning either",
    )
    return source


def add_docs_commands(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
) -> None:
    """Add ``herald docs asyncapi`` and ``herald docs serve`` to the command line."""
    docs = sub.add_parser("docs", parents=[common], help="AsyncAPI documents of services")
    docs_sub = docs.add_subparsers(dest="docs_command", required=True, metavar="ACTION")
    source = service_targets()
    source.add_argument(
        "--codecs", metavar="MODULE:NAME", help="a CodecRegistry (or a function returning one)"
    )
    source.add_argument("--title", help="default: Herald services: <names>")
    source.add_argument("--api-version", default="1.0.0", metavar="V", help="default: 1.0.0")
    for name, func, help in (
        ("asyncapi", asyncapi_command, "write the AsyncAPI 3.0 document (JSON)"),
        ("serve", serve_command, "show the AsyncAPI document in a browser"),
    ):
        parser = docs_sub.add_parser(name, parents=[common, source], help=help, description=help)
        parser.set_defaults(func=func, default_level="WARNING")
        if name == "asyncapi":
            parser.add_argument("-o", "--output", metavar="FILE", help="default: stdout")
        else:
            parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
            parser.add_argument(
                "--port", type=int, default=8080, help="default: 8080; 0: any free port"
            )
            parser.add_argument(
                "--viewer",
                metavar="DIR",
                help="a folder holding the npm package @asyncapi/react-component "
                "(default: the bundle make install copied into herald)",
            )
