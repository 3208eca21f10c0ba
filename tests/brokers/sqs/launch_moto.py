"""``moto_server`` with two changes: ``python launch_moto.py -H 127.0.0.1 -p PORT``.

1. Speed. moto 5's SQS computes every attribute of a queue (each count a pass over
   all its messages, each message's visibility read through ``unix_time()``, which
   builds two datetimes) several times for every message sent and received, so its
   cost grows with the square of a queue's length. ``unix_time()`` with no argument
   is the current Unix time: here it is ``time.time()``, the same value.
2. A FIFO bug. SQS blocks a message group while one of its messages is in flight.
   moto keeps received messages in a "pending" set and drops them from it lazily,
   when a receive finds them visible again; a receive that finds several expired
   messages of one group (a consumer died holding them) drops the first from the
   set, skips it because the group still has the others pending, and so on, and
   hands out the group's *last* message first. Here a group is pending only while
   one of its pending messages is invisible, as on SQS.
3. Races. moto's server is threaded, but its queue operations are not atomic: two
   receives at once can both take one message, two deletes at once rebuild the
   message list from the same copy (one deletion is lost and the message comes
   back), a send during a delete is lost. Here each queue's receive, send, delete
   and visibility change runs under that queue's own lock (a long poll releases it
   while it waits), as each is atomic on SQS.

Nothing else of moto's behaviour is touched.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import moto.core.utils as utils

_EPOCH = datetime(1970, 1, 1)


def unix_time(dt: datetime | None = None) -> float:
    if dt is None:
        return time.time()
    return (dt - _EPOCH).total_seconds()


def unix_time_millis(dt: datetime | None = None) -> float:
    return unix_time(dt) * 1000.0


_ATOMIC = (
    "receive_message",
    "send_message",
    "delete_message",
    "change_message_visibility",
    "purge_queue",
)


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def atomic(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with self.get_queue(queue_name)._messages_lock:
            return method(self, queue_name, *args, **kwargs)

    return atomic


def _pending_groups(queue: Any) -> set[str]:
    """The groups with a message in flight (received and still invisible)."""
    return {
        message.group_id
        for message in queue._pending_messages
        if message.group_id is not None and not message.visible
    }


def main(argv: list[str]) -> None:
    utils.unix_time = unix_time
    utils.unix_time_millis = unix_time_millis
    import moto.sns.models
    import moto.sqs.models

    for module in (moto.sqs.models, moto.sns.models):
        for name, patched in (("unix_time", unix_time), ("unix_time_millis", unix_time_millis)):
            if hasattr(module, name):
                setattr(module, name, patched)
    backend = moto.sqs.models.SQSBackend
    for name in _ATOMIC:
        setattr(backend, name, _locked(getattr(backend, name)))
    moto.sqs.models.Queue.pending_message_groups = property(_pending_groups)  # type: ignore[method-assign,assignment]
    from moto.server import main as serve

    serve(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
