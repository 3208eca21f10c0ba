"""``herald dashboard --broker URL [--host H --port N --token T --db FILE]``."""

from __future__ import annotations

import argparse
import sys

from ..cli_common import UsageError, broker_url

__all__ = ["add_dashboard_command", "dashboard_command"]


async def dashboard_command(args: argparse.Namespace) -> int:
    try:
        from .server import serve_dashboard  # noqa: PLC0415 (needs the dashboard extra)
    except ImportError as exc:
        raise UsageError(
            f"the dashboard needs FastAPI, Jinja2 and uvicorn ({exc.name} is missing): "
            "pip install 'herald[dashboard]'"
        ) from None

    def announce(url: str) -> None:
        print(f"herald: dashboard on {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    await serve_dashboard(
        broker_url(args),
        host=args.host,
        port=args.port,
        token=args.token,
        db_path=args.db,
        on_ready=announce,
    )
    return 0


def add_dashboard_command(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
) -> None:
    """Add ``herald dashboard`` to the command line."""
    help = "watch events flow between services, live, and act on dead letters"
    parser = sub.add_parser("dashboard", parents=[common], help=help, description=help)
    parser.set_defaults(func=dashboard_command, default_level="WARNING")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="default: 8080; 0: any free port")
    parser.add_argument(
        "--token",
        metavar="T",
        help="required when --host is not loopback (default: $HERALD_DASHBOARD_TOKEN)",
    )
    parser.add_argument(
        "--db",
        default="./var/dashboard.db",
        metavar="FILE",
        help="history (SQLite) kept across restarts (default: ./var/dashboard.db)",
    )
