"""The ``herald schema`` commands: ``export`` writes the schema registry of services,
``check`` compares the code with a committed one and fails on a breaking change.

Targets are found as ``herald docs`` finds them (:func:`herald.cli_docs.load_services`):
a service, a list of them, or a function returning either (``MODULE:NAME``). The
rules are those of :mod:`herald.schemas.compatibility`. ``check`` exits with 0 when
every change is compatible, 1 on a breaking change (each printed with its type,
version and field), 2 on bad usage (such as no registry file).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .cli_docs import load_services, service_targets
from .schemas import check, dumps, entries_of, load, merge, usages_of
from .schemas.registry import Usage
from .signals import EXIT_FAILURE

__all__ = ["add_schema_commands", "check_command", "export_command"]


def _usages(args: argparse.Namespace) -> list[Usage]:
    return usages_of(service for target in args.targets for service in load_services(target))


async def export_command(args: argparse.Namespace) -> int:
    path = Path(args.output)
    entries = entries_of(_usages(args))
    if not args.replace and await asyncio.to_thread(path.exists):
        entries = merge(await asyncio.to_thread(load, path), entries)
    await asyncio.to_thread(path.write_text, dumps(entries), encoding="utf-8")
    print(f"herald: wrote {len(entries)} event schema(s) to {path}", file=sys.stderr)
    return 0


async def check_command(args: argparse.Namespace) -> int:
    registry = await asyncio.to_thread(load, Path(args.registry))
    report = check(_usages(args), registry)
    for finding in report.compatible:
        print(f"compatible: {finding}")
    for finding in report.breaking:
        print(f"BREAKING: {finding}")
    if report.breaking:
        print(
            f"herald: {len(report.breaking)} breaking change(s) against {args.registry}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    print(f"herald: the code is compatible with {args.registry}", file=sys.stderr)
    return 0


def add_schema_commands(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
) -> None:
    """Add ``herald schema export`` and ``herald schema check`` to the command line."""
    schema = sub.add_parser("schema", parents=[common], help="event schema registry")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    source = service_targets()
    export = schema_sub.add_parser(
        "export",
        parents=[common, source],
        help="write the JSON Schemas of the events the services publish and consume",
    )
    export.add_argument("-o", "--output", required=True, metavar="FILE", help="the registry")
    export.add_argument(
        "--replace",
        action="store_true",
        help="drop entries the code no longer defines (default: keep them, as history)",
    )
    export.set_defaults(func=export_command, default_level="WARNING")
    checker = schema_sub.add_parser(
        "check",
        parents=[common, source],
        help="compare the services' events with a registry; exit 1 on a breaking change",
    )
    checker.add_argument("--registry", required=True, metavar="FILE", help="the registry")
    checker.set_defaults(func=check_command, default_level="WARNING")
