"""The ``herald dlq list|replay|purge`` commands, and progress shown on stderr."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .bus import connect
from .cli_common import UsageError, broker_url
from .deadletter import DeadLetter
from .display import json_body, one_line, safe_json

__all__ = [
    "Progress",
    "dead_letter_json",
    "dead_letter_table",
    "list_command",
    "purge_command",
    "replay_command",
]


class Progress:
    """A ``progress(done, total)`` callback that reports on a stream.

    On a terminal one line is rewritten in place (at most every ``interval`` seconds,
    0.1 by default); elsewhere (logs, pipes) a new line is written every ``interval``
    seconds (2 by default), so that short operations print nothing at all.
    """

    def __init__(
        self,
        stream: TextIO,
        label: str = "replayed",
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self.interval = interval if interval is not None else (0.1 if self.tty else 2.0)
        self._clock = clock
        self._last = clock()
        self._shown = False
        self._latest: tuple[int, int] | None = None
        self._written: tuple[int, int] | None = None

    def __call__(self, done: int, total: int) -> None:
        self._latest = (done, total)
        now = self._clock()
        if now - self._last >= self.interval or (self.tty and done >= total):
            self._write(done, total)
            self._last = now

    def finish(self) -> None:
        """End the report: the last count if lines were shown, then a newline on a TTY."""
        if self._shown and self._latest is not None and self._latest != self._written:
            self._write(*self._latest)
        if self._shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _write(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        text = f"{self.label} {done}/{total} ({percent}%)"
        self.stream.write(f"\r\x1b[2K{text}" if self.tty else text + "\n")
        self.stream.flush()
        self._shown = True
        self._written = (done, total)


def _time(letter_time: Any) -> str:
    return letter_time.isoformat(timespec="seconds") if letter_time else "-"


def dead_letter_json(letter: DeadLetter) -> str:
    """One dead letter as a JSON object (one line)."""
    message, reason = letter.message, letter.reason
    data: dict[str, Any] = {
        "id": message.id,
        "type": message.type,
        "key": message.subject,
        "queue": reason.queue,
        "error_type": reason.error_type,
        "error": reason.error_message,
        "attempts": reason.attempts,
        "first_failure": _time(reason.first_failure),
        "last_failure": _time(reason.last_failure),
        "headers": dict(message.headers),
        **json_body(message.body),
    }
    return safe_json(data)


def dead_letter_table(letters: Sequence[DeadLetter], error_width: int = 60) -> str:
    """Dead letters as an aligned text table with a header row."""
    rows: list[list[str]] = [["ID", "TYPE", "QUEUE", "ATTEMPTS", "LAST FAILURE", "ERROR"]]
    for letter in letters:
        reason = letter.reason
        error = " ".join(f"{reason.error_type}: {reason.error_message}".split())
        if len(error) > error_width:
            error = error[: error_width - 1] + "…"
        message = letter.message
        rows.append(
            [
                one_line(message.id),
                one_line(message.type),
                one_line(reason.queue),
                str(reason.attempts),
                _time(reason.last_failure),
                one_line(error),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*padded, row[-1]]))
    return "\n".join(lines)


async def list_command(args: argparse.Namespace) -> int:
    async with connect(broker_url(args)) as bus:
        letters = await bus.dead_letters(args.service, args.limit)
    if args.json:
        for letter in letters:
            print(dead_letter_json(letter))
    elif letters:
        print(dead_letter_table(letters))
    else:
        print(f"no dead letters for service {args.service!r}", file=sys.stderr)
    sys.stdout.flush()
    return 0


def _ids(args: argparse.Namespace) -> list[str] | None:
    return list(dict.fromkeys(args.id)) if args.id else None


def _missing(ids: list[str] | None, count: int, service: str) -> int:
    if ids is None or count >= len(ids):
        return 0
    print(
        f"herald: warning: {len(ids) - count} of the {len(ids)} given id(s) are not "
        f"dead letters of {service!r}",
        file=sys.stderr,
    )
    return 1


async def replay_command(args: argparse.Namespace) -> int:
    ids = _ids(args)
    if args.edit is not None or args.headers is not None:
        return await _replay_edited(args, ids)
    progress = Progress(sys.stderr)
    async with connect(broker_url(args)) as bus:
        try:
            count = await bus.replay_dead_letters(args.service, ids, progress)
        finally:
            progress.finish()
    print(f"replayed {count} dead letter(s) of {args.service}", flush=True)
    return _missing(ids, count, args.service)


async def _replay_edited(args: argparse.Namespace, ids: list[str] | None) -> int:
    if args.edit is None:
        raise UsageError("--headers goes with --edit FILE")
    if ids is None or len(ids) != 1:
        raise UsageError("--edit replays one dead letter: give exactly one --id")
    body = _body_file(args.edit)
    headers = None if args.headers is None else _headers_file(args.headers)
    async with connect(broker_url(args)) as bus:
        sent = await bus.replay_edited_dead_letter(args.service, ids[0], body, headers)
    print(
        f"replayed dead letter {sent.id} of {args.service}, edited ({len(sent.body)} bytes)",
        flush=True,
    )
    return 0


def _body_file(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


def _headers_file(path: str) -> dict[str, str]:
    try:
        headers = json.loads(Path(path).read_bytes())
    except ValueError as exc:
        raise UsageError(f"--headers {path}: not JSON ({exc})") from exc
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise UsageError(f"--headers {path}: must be a JSON object of text values")
    return headers


def _confirmed(service: str) -> bool:
    if not sys.stdin.isatty():
        raise UsageError(f"purging every dead letter of {service!r} needs --yes (or give --id ...)")
    answer = input(f"Delete every dead letter of {service!r}? This cannot be undone. [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def purge_command(args: argparse.Namespace) -> int:
    ids = _ids(args)
    if ids is None and not args.yes and not _confirmed(args.service):
        print("nothing purged", file=sys.stderr)
        return 1
    async with connect(broker_url(args)) as bus:
        count = await bus.purge_dead_letters(args.service, ids)
    print(f"purged {count} dead letter(s) of {args.service}", flush=True)
    return _missing(ids, count, args.service)
