"""The worker's log lines about each delivery (logger ``herald.worker``): received,
started, then finished, failed, dead-lettered or released, each with the fields of
``extra={"herald": ...}`` that structured log handlers read."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .broker import Delivery
from .context import Context
from .errors import HeraldError
from .handler import Handler
from .middleware import Outcome

__all__ = ["LOG_FIELDS", "fields", "log", "log_outcome", "log_started"]

log = logging.getLogger("herald.worker")
LOG_FIELDS = "herald.log_fields"
"""Key of ``ctx.state``: a dict of fields a middleware adds to the worker's line about
the delivery's outcome (finished, failed, ...), e.g. the trace id of its span."""


def log_started(ctx: Context) -> None:
    """The line about a handler starting on a delivery (at INFO)."""
    if log.isEnabledFor(logging.INFO):
        handler, message = ctx.handler, ctx.message
        log.info(
            "started %s %s in %s",
            message.type,
            message.id,
            handler.name,
            extra=fields(handler, ctx.delivery, event="started"),
        )


def log_outcome(ctx: Context, outcome: Outcome, elapsed: float) -> None:
    """The line about what became of a delivery, ``elapsed`` seconds after it started."""
    delivery, handler, message = ctx.delivery, ctx.handler, ctx.message
    millis = elapsed * 1000
    added = ctx.state.get(LOG_FIELDS, {})
    if outcome.settlement == "ack":
        log.info(
            "finished %s %s in %s (%.1f ms)",
            message.type,
            message.id,
            handler.name,
            millis,
            extra=fields(
                handler,
                delivery,
                added,
                event="finished",
                duration_ms=millis,
                attempt=ctx.attempt,
            ),
        )
    elif outcome.settlement == "retry":
        error = outcome.error
        log.warning(
            "failed %s %s in %s (attempt %d/%d, %.1f ms): %s: %s; retrying in %.2fs",
            message.type,
            message.id,
            handler.name,
            ctx.attempt,
            handler.retry.attempts,
            millis,
            type(error).__name__,
            error,
            outcome.delay,
            extra=fields(
                handler, delivery, added, event="failed", duration_ms=millis, attempt=ctx.attempt
            ),
        )
    elif outcome.settlement == "dead_letter":
        error = outcome.error
        log.error(
            "dead-lettered %s %s from %s to %s: %s",
            message.type,
            message.id,
            delivery.subscription.queue,
            delivery.subscription.dead_letter_queue,
            outcome.reason,
            exc_info=error if isinstance(error, Exception) and not _expected(error) else None,
            extra=fields(handler, delivery, added, event="dead-lettered", attempt=ctx.attempt),
        )
    else:
        log.info(
            "released %s %s on %s",
            message.type,
            message.id,
            delivery.subscription.queue,
            extra=fields(handler, delivery, added, event="released", attempt=ctx.attempt),
        )


def _expected(error: BaseException) -> bool:
    """Errors whose reason says it all (no traceback in the log)."""
    return isinstance(error, HeraldError)


def fields(
    handler: Handler,
    delivery: Delivery,
    added: Mapping[str, object] | None = None,
    **more: object,
) -> dict[str, object]:
    return {
        "herald": {
            **(added or {}),
            "message_id": delivery.message.id,
            "type": delivery.message.type,
            "queue": delivery.subscription.queue,
            "handler": handler.name,
            "attempt": delivery.attempt,
            **more,
        }
    }
