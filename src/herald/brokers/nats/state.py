"""Two JetStream key-value buckets beside the streams, for what consumers agree on.

- ``<stream>_LIVE``: what lasts only while its process does. Every entry expires
  :data:`LIVE_TTL` seconds after it was last written (the bucket's ``max_age``), so
  what a killed process wrote disappears on its own: the exclusive hold of a queue
  (``hold.<consumer>``, :mod:`.exclusive`) and each process's presence
  (``seen.<instance>``, :mod:`.presence`).
- ``<stream>_HOLDS``: how each exclusive queue was last left (``<consumer>``: held, or
  released with nothing of it still leased), kept until the namespace is destroyed.

Writes that must not overwrite someone else's are compare-and-set on the key's last
revision (JetStream's ``Nats-Expected-Last-Subject-Sequence``); a lost race raises
:class:`Stale`. Entries are JSON written by Herald processes, but read as input.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.js.errors
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ...errors import BrokerError
from .errors import TABLE

__all__ = ["KV_OPERATION", "LIVE_TTL", "Bucket", "Entry", "Stale", "open_bucket"]

LIVE_TTL = 10.0
"""Seconds an entry of the live bucket outlives its last write."""
KV_OPERATION = "KV-Operation"
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST = (10071, 10164)
_IN_USE = 10058
"""JetStream's stream name already in use (with another configuration)."""


class Stale(BrokerError):
    """A compare-and-set write lost: the key changed since the revision it expected."""


@dataclass(frozen=True, slots=True)
class Entry:
    revision: int
    value: bytes
    deleted: bool


class Bucket:
    """One key-value bucket, used through plain JetStream requests (no watchers)."""

    def __init__(
        self,
        js: JetStreamContext,
        name: str,
        ttl: float | None,
        ensure: Callable[[], Awaitable[None]],
    ) -> None:
        self.name = name
        self.stream = f"KV_{name}"
        self.ttl = ttl
        self._js = js
        self._ensure = ensure

    def subject(self, key: str) -> str:
        return f"$KV.{self.name}.{key}"

    async def get(self, key: str) -> Entry | None:
        """The key's last entry (a delete marker has ``deleted``), else None."""
        with TABLE.converting(f"reading {key} in bucket {self.name}"):
            try:
                raw = await self._js.get_last_msg(self.stream, self.subject(key))
            except NotFoundError:
                return None
        deleted = (raw.headers or {}).get(KV_OPERATION) in ("DEL", "PURGE")
        return Entry(raw.seq or 0, raw.data or b"", deleted)

    async def put(
        self, key: str, value: bytes, last: int | None = None, timeout: float | None = None
    ) -> int:
        """Write ``value``; with ``last``, only if the key's last revision is ``last``
        (0: the key has no entry). Returns the new revision."""
        headers = None if last is None else {EXPECTED_LAST: str(last)}
        return await self._publish(key, value, headers, timeout)

    async def delete(self, key: str, last: int) -> None:
        """Leave a delete marker, only if the key's last revision is ``last``."""
        await self._publish(key, b"", {KV_OPERATION: "DEL", EXPECTED_LAST: str(last)}, None)

    async def purge(self, key: str) -> None:
        """Remove every entry of the key (no marker left)."""
        doing = f"removing {key} from bucket {self.name}"
        with TABLE.converting(doing), contextlib.suppress(NotFoundError):
            await self._js.purge_stream(self.stream, subject=self.subject(key))

    async def keys(self, pattern: str) -> list[str]:
        """The keys matching ``pattern`` (``*`` for one token) that have an entry."""
        head = self.subject("")
        with TABLE.converting(f"listing {pattern} in bucket {self.name}"):
            try:
                info = await self._js.stream_info(self.stream, subjects_filter=head + pattern)
            except NotFoundError:
                return []
        return sorted(subject[len(head) :] for subject in info.state.subjects or {})

    async def _publish(
        self, key: str, value: bytes, headers: dict[str, str] | None, timeout: float | None
    ) -> int:
        for again in (True, False):
            try:
                ack = await self._js.publish(
                    self.subject(key), value, timeout=timeout, headers=headers
                )
            except nats.js.errors.NoStreamResponseError as exc:
                if not again:
                    raise TABLE.convert(exc, f"writing {key} in bucket {self.name}") from exc
                await self._ensure()  # the bucket was deleted under us: create it again
                continue
            except nats.js.errors.APIError as exc:
                if exc.err_code in _WRONG_LAST:
                    raise Stale(f"{key} in bucket {self.name} changed") from exc
                raise TABLE.convert(exc, f"writing {key} in bucket {self.name}") from exc
            except Exception as exc:
                raise TABLE.convert(exc, f"writing {key} in bucket {self.name}") from exc
            return ack.seq
        raise AssertionError("unreachable")


async def open_bucket(
    js: JetStreamContext,
    name: str,
    ttl: float | None,
    may_create: Callable[[], bool],
    replicas: int = 1,
) -> Bucket:
    """The bucket ``name``, created (file storage, one revision per key, entries kept
    ``ttl`` seconds or for ever, ``replicas`` copies) if missing and ``may_create()``,
    now or when it is found deleted later. An existing bucket keeps its own ``ttl``."""

    async def ensure() -> None:
        bucket.ttl = await _ensure(js, name, ttl, may_create, replicas)

    bucket = Bucket(js, name, ttl, ensure)
    await ensure()
    return bucket


async def _ensure(
    js: JetStreamContext,
    name: str,
    ttl: float | None,
    may_create: Callable[[], bool],
    replicas: int,
) -> float | None:
    stream = f"KV_{name}"
    for _ in range(3):
        with TABLE.converting(f"reading bucket {name}"):
            try:
                info = await js.stream_info(stream)
            except NotFoundError:
                info = None
        if info is not None:
            return info.config.max_age or None
        if not may_create():
            raise BrokerError(f"bucket {name} was deleted with its namespace")
        config = api.KeyValueConfig(
            bucket=name,
            description="herald: consumers' shared state",
            history=1,
            ttl=ttl,
            storage=api.StorageType.FILE,
            replicas=replicas,
        )
        try:
            with TABLE.converting(f"creating bucket {name}"):
                await js.create_key_value(config)
        except BrokerError as exc:
            cause = exc.__cause__
            taken = isinstance(cause, nats.js.errors.APIError) and cause.err_code == _IN_USE
            if not taken:
                raise
            await asyncio.sleep(0.05)  # created by another process at the same moment
            continue
        return ttl
    raise BrokerError(f"bucket {name} could not be created")
