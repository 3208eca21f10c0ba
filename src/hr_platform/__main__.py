"""``python -m hr_platform SERVICE --broker URL [--port N] [--db URL]``: run one service.

SERVICE is ``employees``, ``hr-web``, ``payroll`` or ``giftcards``; ``platform`` runs
all four under the supervisor (see ``python -m hr_platform platform --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from herald.logs import TraceIdFilter
from herald.url import resolve_url

from . import DEFAULT_PORTS, SERVICES, telemetry
from .database import default_db_url
from .employees import run_employees
from .giftcards import run_giftcards, topup_period
from .payroll import run_payroll
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
    parser.add_argument("--broker", help="broker URL (default: $HERALD_BROKER or embedded)")
    parser.add_argument("--port", type=int, help="HTTP port (employees: none unless given)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    parser.add_argument("--db", help="database URL (default: sqlite under --data-dir)")
    parser.add_argument("--data-dir", default="./var", help="where default databases go")
    parser.add_argument("--timeout", type=float, default=10.0, help="hr-web: RPC timeout (s)")
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
    broker = resolve_url(args.broker)
    db = args.db or default_db_url(args.data_dir, args.service)
    port = args.port if args.port is not None else DEFAULT_PORTS.get(args.service)
    if args.service == "employees":
        await run_employees(broker, db, port, args.host)
    elif args.service == "hr-web":
        await run_web(broker, port or DEFAULT_PORTS["hr-web"], args.host, args.timeout)
    elif args.service == "payroll":
        await run_payroll(broker, db, port or DEFAULT_PORTS["payroll"], args.host)
    else:
        period = topup_period(args.topup_period)
        await run_giftcards(broker, db, port or DEFAULT_PORTS["giftcards"], args.host, period)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["platform"]:
        return supervise(argv[1:])
    args = _parser().parse_args(argv)
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
