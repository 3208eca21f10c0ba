"""Exclusive queues: one consumer at a time, through a lock token in a FIFO queue.

SQS has no exclusive consumer, but a FIFO queue never hands out a message of a
message group while another message of that group is in flight. Each exclusive
queue has a FIFO lock queue holding a token message (group ``lock``): the consumer
that receives the token consumes the queue; the keeper extends the token's
visibility with its messages'. The others stand by, long-polling the lock queue.

- A consumer that stops lets what it holds be settled, then makes the token visible
  at once: a standby takes over.
- A process that dies stops extending: the token becomes visible after the
  visibility timeout, with the messages it held, and a standby takes over. On a
  FIFO queue those messages come before anything newer of their keys.
- A token is sent when the lock queue holds none (``MessageDeduplicationId`` makes
  two standbys sending at once store one). Should two tokens ever exist, the FIFO
  group still hands out one at a time.

SQS keeps a message 14 days at most: a token older than 7 days is replaced when it
is taken. A consumer holding the lock for 14 days without a break loses its token
to expiry; see docs/sqs.md.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from ...errors import ErrorTable
from .delivery import Held, Lease
from .settings import SQSSettings
from .topology import Topology

__all__ = ["Lock"]

GROUP = "lock"
REPLACE_AFTER = 7 * 24 * 3600


class Lock:
    """Takes and gives back the lock token of exclusive queues."""

    def __init__(
        self, sqs: Any, topology: Topology, settings: SQSSettings, table: ErrorTable
    ) -> None:
        self._sqs = sqs
        self._topology = topology
        self._settings = settings
        self._table = table

    async def acquire(self, lease: Lease) -> None:
        """Wait until ``lease`` holds its queue's token."""
        url = await self._topology.lock_queue(lease.subscription.queue)
        loop = asyncio.get_running_loop()
        queue = lease.subscription.queue
        while lease.token is None:
            with self._table.converting(f"waiting for the lock of {queue}"):
                reply = await self._sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=1,
                    VisibilityTimeout=self._settings.visibility,
                    WaitTimeSeconds=max(1, self._settings.wait),
                    MessageSystemAttributeNames=["SentTimestamp"],
                )
                received = reply.get("Messages") or []
                if received:
                    token = received[0]
                    sent = int(token.get("Attributes", {}).get("SentTimestamp", "0")) / 1000
                    now = loop.time()
                    if time.time() - sent > REPLACE_AFTER:
                        await self._sqs.delete_message(
                            QueueUrl=url, ReceiptHandle=token["ReceiptHandle"]
                        )
                        await self._send(url, uuid.uuid4().hex)
                        continue
                    lease.token = Held(
                        url, token["ReceiptHandle"], now + self._settings.visibility, now
                    )
                elif await self._empty(url):
                    await self._send(url, "token")

    async def release(self, lease: Lease) -> None:
        """Make the token visible again (a standby takes it at once)."""
        token, lease.token = lease.token, None
        if token is None:
            return
        queue = lease.subscription.queue
        with self._table.converting(f"giving back the lock of {queue}"):
            await self._sqs.change_message_visibility(
                QueueUrl=token.url, ReceiptHandle=token.receipt, VisibilityTimeout=0
            )

    async def _empty(self, url: str) -> bool:
        reply = await self._sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        counts = reply.get("Attributes", {})
        return all(int(counts.get(name, "0")) == 0 for name in counts) and bool(counts)

    async def _send(self, url: str, dedup: str) -> None:
        await self._sqs.send_message(
            QueueUrl=url, MessageBody="lock", MessageGroupId=GROUP, MessageDeduplicationId=dedup
        )
