"""``python -m hr_platform SERVICE --broker URL [--port N] [--db URL]``: run one service.

SERVICE is ``employees``, ``hr-web``, ``payroll`` or ``giftcards``; ``platform`` runs
all four under the supervisor (see ``python -m hr_platform platform --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from herald.logs import TraceIdFilter
from herald.url import resolve_url
from herald.webguard import requires_token

from . import DEFAULT_PORTS, SERVICES, telemetry
from .database import default_db_url
from .employees import run_employees
from .giftcards import run_giftcards
from .payroll import run_payroll
from .supervisor import main as supervise
from .web import run_web

__all__ = ["main"]


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
        "--token",
        default=os.environ.get("HR_WEB_TOKEN") or None,
        help="hr-web: token every request must carry (default $HR_WEB_TOKEN);"
        " required when --host is not a loopback address",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="hr-web: another name it is reached by (a proxy's), besides --host and localhost",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="INFO (default; per-delivery lines at DEBUG), ..."
    )
    return parser


async def _run(args: argparse.Namespace) -> None:
    broker = resolve_url(args.broker)
    db = args.db or default_db_url(args.data_dir, args.service)
    port = args.port if args.port is not None else DEFAULT_PORTS.get(args.service)
    if args.service == "employees":
        await run_employees(broker, db, port, args.host)
    elif args.service == "hr-web":
        port = port or DEFAULT_PORTS["hr-web"]
        await run_web(
            broker, port, args.host, args.timeout, allowed_hosts=args.allow_host, token=args.token
        )
    elif args.service == "payroll":
        await run_payroll(broker, db, port or DEFAULT_PORTS["payroll"], args.host)
    else:
        await run_giftcards(broker, db, port or DEFAULT_PORTS["giftcards"], args.host)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["platform"]:
        return supervise(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.service == "hr-web" and requires_token(args.host) and not args.token:
        parser.error(
            f"hr-web on {args.host} is reachable from other machines: give it --token"
            " (or $HR_WEB_TOKEN), for example one from"
            " `python -c 'import secrets; print(secrets.token_urlsafe())'`"
        )
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
