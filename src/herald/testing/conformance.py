"""The scenario suite every broker adapter must pass, listed explicitly.

Each scenario is an ``async def (env: Environment) -> None`` that raises
AssertionError on failure. A scenario that cannot apply to a broker says why
(:meth:`Scenario.skip_reason`): an in-process broker cannot survive its consumer's
process being killed, a test environment without a restart hook cannot restart the
server, a broker whose bodies are capped below 1 MiB cannot carry one. Nothing is
left out silently: the suite reports each of those as a skip with its reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..broker import Broker, Features
from ..capabilities import QueueInspection
from .environment import Environment
from .scenarios import adversarial, basics, contract, failures, ordering, processes, rpc
from .scenarios.common import MiB

__all__ = ["SCENARIOS", "Scenario"]

Need = Callable[[Features, Broker, Environment], str | None]


def multi_process(features: Features, broker: Broker, env: Environment) -> str | None:
    if features.multi_process:
        return None
    return "the broker lives in one process (Features.multi_process is False)"


def restart_hook(features: Features, broker: Broker, env: Environment) -> str | None:
    if env.restart_broker is not None:
        return None
    return "this environment has no way to restart the broker's server (no restart hook)"


def mebibyte_bodies(features: Features, broker: Broker, env: Environment) -> str | None:
    if features.max_message_bytes >= MiB:
        return None
    return f"the broker takes bodies of at most {features.max_message_bytes:,} bytes"


def queue_inspection(features: Features, broker: Broker, env: Environment) -> str | None:
    if isinstance(broker, QueueInspection):
        return None
    return f"{type(broker).__name__} has no QueueInspection capability"


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Environment], Awaitable[None]]
    needs: tuple[Need, ...] = ()

    def skip_reason(self, features: Features, broker: Broker, env: Environment) -> str | None:
        """Why this scenario does not apply here, or None when it does."""
        for need in self.needs:
            reason = need(features, broker, env)
            if reason is not None:
                return reason
        return None


def _scenario(run: Callable[[Environment], Awaitable[None]], *needs: Need) -> Scenario:
    return Scenario(run.__name__, run, needs)


SCENARIOS: tuple[Scenario, ...] = (
    _scenario(basics.publish_subscribe),
    _scenario(basics.publish_without_subscriber_is_dropped_by_routing),
    _scenario(basics.fan_out_to_three_services),
    _scenario(basics.late_subscriber_gets_events_after_its_queue_exists),
    _scenario(basics.offline_subscriber_catches_up),
    _scenario(basics.large_message, mebibyte_bodies),
    _scenario(basics.oversized_message_is_refused),
    _scenario(basics.stream_of_ten_thousand),
    _scenario(failures.retry_then_success),
    _scenario(failures.retry_then_dead_letter_with_reason_and_replay),
    _scenario(failures.dead_letters_can_be_purged),
    _scenario(failures.edited_dead_letter_is_replayed_as_a_first_attempt),
    _scenario(failures.poison_messages_are_dead_lettered_at_once),
    _scenario(ordering.ordering_per_key_under_concurrency),
    _scenario(ordering.ordering_per_key_under_retries),
    _scenario(ordering.graceful_shutdown_finishes_in_flight_and_keeps_the_rest),
    _scenario(ordering.shutdown_deadline_cancels_and_redelivers),
    _scenario(processes.consumer_killed_mid_stream_loses_nothing, multi_process),
    _scenario(processes.broker_restart_under_load_loses_nothing, restart_hook),
    _scenario(processes.ordering_per_key_across_processes, multi_process, queue_inspection),
    _scenario(rpc.request_reply),
    _scenario(rpc.request_errors_come_back_typed),
    _scenario(rpc.reply_channel_is_removed_on_close, queue_inspection),
    _scenario(adversarial.forged_runtime_headers_never_stall_a_queue),
    _scenario(adversarial.forged_reply_addresses_are_refused),
    _scenario(adversarial.handler_cancelling_itself_is_retried_then_dead_lettered),
    _scenario(adversarial.odd_bytes_in_every_field_round_trip_or_are_refused),
    _scenario(contract.contract_settle_exactly_once),
    _scenario(contract.contract_release_counts_as_features_say),
    _scenario(contract.contract_prefetch_bounds_messages_and_bytes),
    _scenario(contract.contract_retry_delay_is_honoured),
    _scenario(contract.contract_queue_inspection_counts, queue_inspection),
    _scenario(contract.contract_exclusive_consumers_take_turns),
)
"""Every scenario, in the order they run."""
