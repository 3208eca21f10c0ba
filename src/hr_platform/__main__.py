"""``python -m hr_platform SERVICE --broker URL [--port N] [--db URL]``: run one service.

SERVICE is ``employees``, ``hr-web``, ``payroll`` or ``giftcards``; ``platform`` runs
all four under the supervisor (see ``python -m hr_platform platform --help``).
``giftcards --backfill``: when its queue is first created, it starts with the events
the broker retained, so every existing employee gets a card (see docs/backfill.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from herald.logs import TraceIdFilter
from herald.webguard import requires_token

from . import DEFAULT_BROKER, DEFAULT_PORTS, SERVICES, telemetry
from .database import default_db_url
from .employees import run_employees
from .giftcards import run_giftcards, topup_period
from .payroll import RELEASE, run_payroll
from .process import SHUTDOWN_TIMEOUT, Listener
from .supervisor import main as supervise
from .web import run_web

__all__ = ["main"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hr_platform", description="Run one service of the HR platform."
    )
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument(
        "--broker", help=f"broker URL (default: $HERALD_BROKER or {DEFAULT_BROKER})"
    )
    parser.add_argument("--port", type=int, help="HTTP port (employees: none unless given)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    parser.add_argument("--db", help="database URL (default: sqlite under --data-dir)")
    parser.add_argument("--data-dir", default="./var", help="where default databases go")
    parser.add_argument("--timeout", type=float, default=10.0, help="hr-web: RPC timeout (s)")
    parser.add_argument(
        "--token",
        default=os.environ.get("HR_WEB_TOKEN") or None,
        help="token every request to the service's web app must carry, but /healthz and"
        " /readyz (default $HR_WEB_TOKEN); required when --host is not a loopback address",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="another name the web app is reached by (a proxy's), besides --host and localhost",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=SHUTDOWN_TIMEOUT,
        metavar="S",
        help=f"on SIGTERM, seconds running handlers get to finish (default {SHUTDOWN_TIMEOUT:g})",
    )
    parser.add_argument(
        "--release",
        default=os.environ.get("HR_RELEASE", RELEASE),
        help=f"payroll: the release its records name (default: $HR_RELEASE or {RELEASE!r})",
    )
    parser.add_argument(
        "--backfill",
        action="store_true",
        help="giftcards: a new queue starts with the retained events (cards for everyone)",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="INFO (default; per-delivery lines at DEBUG), ..."
    )
    parser.add_argument(
        "--topup-period",
        type=_seconds,
        help="giftcards: seconds between top-ups (default: $GIFTCARDS_TOPUP_PERIOD, else a week)",
    )
    return parser


async def _run(args: argparse.Namespace) -> None:
    broker = args.broker or os.environ.get("HERALD_BROKER") or DEFAULT_BROKER
    db = args.db or default_db_url(args.data_dir, args.service)
    port = _port(args)
    stop = args.shutdown_timeout
    listener = Listener(args.host, port, args.token, args.allow_host) if port else None
    if args.service == "employees":
        await run_employees(broker, db, listener, shutdown_timeout=stop)
        return
    if listener is None:
        raise AssertionError(f"{args.service} has no default port")
    if args.service == "hr-web":
        await run_web(broker, listener, args.timeout)
    elif args.service == "payroll":
        await run_payroll(broker, db, listener, release=args.release, shutdown_timeout=stop)
    else:
        await run_giftcards(
            broker,
            db,
            listener,
            topup_period(args.topup_period),
            shutdown_timeout=stop,
            backfill=args.backfill,
        )


def _port(args: argparse.Namespace) -> int | None:
    """The web app's port; employees has none unless given."""
    return args.port or DEFAULT_PORTS.get(args.service)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["platform"]:
        return supervise(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if _port(args) and requires_token(args.host) and not args.token:
        parser.error(
            f"{args.service} on {args.host} is reachable from other machines: give it --token"
            " (or $HR_WEB_TOKEN), for example one from"
            " `python -c 'import secrets; print(secrets.token_urlsafe())'`"
        )
    if args.backfill and args.service != "giftcards":
        parser.error("--backfill applies to giftcards only")
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s {args.service} %(levelname)s %(name)s: %(message)s%(trace_ids)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(TraceIdFilter())
    telemetry.install(args.service)
    if logging.getLogger().level == logging.INFO:
        logging.getLogger("herald.worker").setLevel(logging.WARNING)
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
