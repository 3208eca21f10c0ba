"""``moto_server`` with two changes: ``python launch_moto.py -H 127.0.0.1 -p PORT``.

1. Speed. moto 5's SQS computes every attribute of a queue (each count a pass over
   all its messages, each message's visibility read through ``unix_time()``, which
   builds two datetimes) several times for every message sent and received, so its
   cost grows with the square of a queue's length. ``unix_time()`` with no argument
   is the current Unix time: here it is ``time.time()``, the same value; and within
   one operation (one send, one receive) a queue's attributes are computed once.
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
   and visibility change runs under that queue's own lock, as each is atomic on SQS.
4. Long polls. moto's long poll decides once, when it starts, which message groups
   are blocked, and spins while messages of blocked groups wait: a group freed by an
   ack meanwhile is not served until the poll ends. Here a long poll is a series of
   immediate receives 20 ms apart until one brings messages or the wait is over
   (the queue's lock is free in between), which serves a freed group at once, as SQS does.

Nothing else of moto's behaviour is touched.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import moto.sns.models
import moto.sqs.models
from moto.core import utils
from moto.server import main as serve

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
        queue = self.get_queue(queue_name)
        with queue._messages_lock:
            outer = queue.__dict__.get("_attributes_cache") is not None
            if not outer:
                queue._attributes_cache = {}
            try:
                return method(self, queue_name, *args, **kwargs)
            finally:
                if not outer:
                    queue._attributes_cache = None

    return atomic


def _cached_attributes(original: Any) -> property:
    def attributes(queue: Any) -> Any:
        cache = queue.__dict__.get("_attributes_cache")
        if cache is None:
            return original.fget(queue)
        if "all" not in cache:
            cache["all"] = original.fget(queue)
        return cache["all"]

    return property(attributes)


def _polling(receive: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(receive)
    def long_poll(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        deadline = time.time() + (wait_seconds_timeout or 0)
        while True:
            found = receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            if found or time.time() >= deadline:
                return found
            time.sleep(0.02)

    return long_poll


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
    for module in (moto.sqs.models, moto.sns.models):
        for name, patched in (("unix_time", unix_time), ("unix_time_millis", unix_time_millis)):
            if hasattr(module, name):
                setattr(module, name, patched)
    backend = moto.sqs.models.SQSBackend
    for name in _ATOMIC:
        setattr(backend, name, _locked(getattr(backend, name)))
    setattr(backend, "receive_message", _polling(backend.receive_message))  # noqa: B010
    queue_class = moto.sqs.models.Queue
    setattr(queue_class, "attributes", _cached_attributes(queue_class.attributes))  # noqa: B010
    setattr(queue_class, "pending_message_groups", property(_pending_groups))  # noqa: B010
    serve(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
