"""The aiobotocore clients: SQS, SNS and CloudWatch, on one endpoint when one is given.

Credentials come from the URL (``sqs://KEY_ID:SECRET@REGION``), else a named
``profile``, else botocore's usual chain (environment, shared files, instance or task
role). Retries use botocore's standard mode (throttling and transient errors are
retried with backoff). The connection pool is large enough for the long polls of
every consumer plus publishing and settling alongside them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from .settings import SQSSettings

__all__ = ["Clients", "open_clients"]

POOL = 128


@dataclass(slots=True)
class Clients:
    """Open clients; :meth:`close` closes them all."""

    sqs: Any
    sns: Any
    cloudwatch: Any
    _stack: contextlib.AsyncExitStack

    async def close(self) -> None:
        await self._stack.aclose()


async def open_clients(settings: SQSSettings) -> Clients:
    """Create the clients (they connect on their first call)."""
    session = AioSession(profile=settings.profile)
    config = AioConfig(
        max_pool_connections=POOL,
        connect_timeout=5,
        read_timeout=settings.wait + 30,
        retries={"mode": "standard", "max_attempts": 4},
    )
    options: dict[str, Any] = {"region_name": settings.region, "config": config}
    if settings.endpoint:
        options["endpoint_url"] = settings.endpoint
    if settings.access_key is not None:
        options["aws_access_key_id"] = settings.access_key
        options["aws_secret_access_key"] = settings.secret_key
    stack = contextlib.AsyncExitStack()
    try:
        sqs = await stack.enter_async_context(session.create_client("sqs", **options))
        sns = await stack.enter_async_context(session.create_client("sns", **options))
        cloudwatch = await stack.enter_async_context(session.create_client("cloudwatch", **options))
    except BaseException:
        await stack.aclose()
        raise
    return Clients(sqs, sns, cloudwatch, stack)
