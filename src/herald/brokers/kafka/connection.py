"""The clients one broker holds: a producer and an admin client; consumers are made
per queue with :func:`consumer_options`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from .settings import KafkaSettings

__all__ = ["Clients", "consumer_options", "open_clients"]


@dataclass(slots=True)
class Clients:
    producer: AIOKafkaProducer
    admin: AIOKafkaAdminClient

    async def close(self) -> None:
        try:
            await self.producer.stop()
        finally:
            await self.admin.close()


async def open_clients(settings: KafkaSettings) -> Clients:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        client_id=settings.client_id,
        acks="all",
        enable_idempotence=settings.idempotent,
        max_request_size=settings.max_message_bytes + 64 * 1024,
        linger_ms=1,
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id=settings.client_id)
    await producer.start()
    try:
        await admin.start()
    except BaseException:
        await producer.stop()
        raise
    return Clients(producer, admin)


def consumer_options(settings: KafkaSettings, group: str | None) -> dict[str, Any]:
    """What every consumer of this broker is made with (offsets committed by hand)."""
    return {
        "bootstrap_servers": settings.bootstrap,
        "client_id": settings.client_id,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout,
        "heartbeat_interval_ms": max(100, settings.session_timeout // 3),
        "metadata_max_age_ms": settings.metadata_age,
        "max_partition_fetch_bytes": settings.max_message_bytes + 64 * 1024,
        "fetch_max_wait_ms": settings.fetch_wait,
        "max_poll_interval_ms": 3_600_000,
        "rebalance_timeout_ms": max(settings.session_timeout * 3, 10_000),
    }
