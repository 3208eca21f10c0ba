"""The ``herald`` command line: run services, publish, tail events, manage dead letters,
document services (AsyncAPI), keep their event schemas compatible.

Every command takes ``--broker URL`` (default: ``$HERALD_BROKER``, else the embedded
``sqlite:///./var/herald.db``), ``--log-format text|json`` and ``--log-level``. Errors
print ``herald: error: ...`` and exit with 2 (bad usage or configuration) or 1
(runtime failure, such as an unreachable broker), without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence

from . import __version__, logs
from .cli_commands import publish_command, run_command, tail_command
from .cli_dlq import list_command, purge_command, replay_command
from .cli_docs import add_docs_commands
from .cli_schema import add_schema_commands
from .dashboard.command import add_dashboard_command
from .demo import demo_command
from .errors import ConfigurationError, HeraldError
from .signals import EXIT_FAILURE, EXIT_FORCED, EXIT_USAGE
from .url import DEFAULT_URL

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], Awaitable[int]]
log = logging.getLogger("herald.cli")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS lets the options go before or after the command without one hiding the other.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--broker",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"broker URL (default: $HERALD_BROKER, else {DEFAULT_URL})",
    )
    common.add_argument(
        "--log-format", choices=logs.FORMATS, default=argparse.SUPPRESS, help="default: text"
    )
    common.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        type=str.upper,
        default=argparse.SUPPRESS,
        help="default: INFO for run, WARNING otherwise",
    )
    return common


def _command(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    name: str,
    func: Command,
    help: str,
    *,
    level: str = "WARNING",
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, parents=[common], help=help, description=help
    )
    parser.set_defaults(func=func, default_level=level)
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="herald",
        description="Herald: event-driven messaging between Python services.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"herald {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(
        sub, common, "run", run_command, "run services until SIGINT/SIGTERM", level="INFO"
    )
    run.add_argument(
        "targets", nargs="+", metavar="MODULE:SERVICE", help="e.g. myapp.payroll:service"
    )
    run.add_argument("--concurrency", type=_positive_int, metavar="N", help="handlers at once")
    run.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="seconds running handlers get to finish on shutdown (default: 30)",
    )
    run.add_argument(
        "--metrics-port",
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at /metrics (needs herald[metrics])",
    )
    run.add_argument(
        "--telemetry",
        action="store_true",
        help="publish telemetry reports on the bus every 2 s (for herald dashboard)",
    )
    run.add_argument(
        "--health-port",
        metavar="[HOST:]PORT",
        help="serve /healthz and /readyz (may be the metrics port)",
    )

    publish = _command(sub, common, "publish", publish_command, "publish one event")
    publish.add_argument("type", metavar="TYPE", help="event type, e.g. employee.created")
    publish.add_argument(
        "--data", default="{}", metavar="JSON", help="the event as JSON; '-' reads stdin, @FILE"
    )
    publish.add_argument("--key", metavar="K", help="ordering key (CloudEvents subject)")
    publish.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    publish.add_argument("--source", default="herald-cli", help="CloudEvents source")

    tail = _command(sub, common, "tail", tail_command, "print live events until Ctrl-C")
    tail.add_argument("pattern", nargs="?", default="#", metavar="PATTERN", help="default: #")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--count", type=_positive_int, metavar="N", help="stop after N events")

    dlq = sub.add_parser("dlq", parents=[common], help="inspect, replay or purge dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = _command(dlq_sub, common, "list", list_command, "list a service's dead letters")
    listing.add_argument("service", metavar="SERVICE")
    listing.add_argument("--limit", type=_positive_int, metavar="N")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = _command(
        dlq_sub, common, "replay", replay_command, "send dead letters back to their queues"
    )
    replay.add_argument("service", metavar="SERVICE")
    replay.add_argument("--id", action="append", metavar="ID", help="only these (repeatable)")
    replay.add_argument(
        "--edit",
        metavar="FILE",
        help="replay the one --id with this body instead ('-': stdin), validated first",
    )
    replay.add_argument(
        "--headers",
        metavar="FILE",
        help="with --edit: a JSON object of headers replacing the message's own",
    )
    purge = _command(dlq_sub, common, "purge", purge_command, "delete dead letters for good")
    purge.add_argument("service", metavar="SERVICE")
    purge.add_argument("--id", action="append", metavar="ID", help="only these (repeatable)")
    purge.add_argument("--yes", action="store_true", help="purge all without asking")

    add_docs_commands(sub, common)
    add_schema_commands(sub, common)
    add_dashboard_command(sub, common)

    demo = _command(
        sub, common, "demo", demo_command, "run the HR platform (or --mini: a one-process story)"
    )
    demo.add_argument(
        "--without", action="append", default=[], metavar="SERVICE", help="leave out (repeatable)"
    )
    demo.add_argument("--data-dir", default="./var", metavar="DIR", help="databases go here")
    for name, port in (("web", 8000), ("payroll", 8001), ("giftcards", 8002), ("dashboard", 8080)):
        demo.add_argument(f"--{name}-port", type=int, default=port, metavar="N")
    demo.add_argument("--mini", action="store_true", help="one-process story, no HR platform")
    demo.add_argument("--count", type=_positive_int, metavar="N", help="--mini: stop after N hires")
    demo.add_argument(
        "--interval", type=_seconds, default=1.0, metavar="S", help="--mini: seconds between hires"
    )
    return parser


def _fail(message: str, code: int) -> int:
    print(f"herald: error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``herald`` command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    root = logging.getLogger()
    saved_level = root.level
    logs.configure(
        getattr(args, "log_format", "text"), getattr(args, "log_level", args.default_level)
    )
    try:
        return int(asyncio.run(args.func(args)))
    except KeyboardInterrupt:
        return EXIT_FORCED
    except ConfigurationError as exc:  # includes the CLI's own UsageError
        return _fail(str(exc) or type(exc).__name__, EXIT_USAGE)
    except HeraldError as exc:
        log.debug("command failed", exc_info=exc)
        return _fail(str(exc) or type(exc).__name__, EXIT_FAILURE)
    except OSError as exc:  # the environment (files, sockets) refused; not a Herald bug
        log.debug("command failed", exc_info=exc)
        return _fail(str(exc), EXIT_FAILURE)
    finally:
        logs.reset()
        root.setLevel(saved_level)
