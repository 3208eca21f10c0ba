"""Herald's benchmark suite: Herald against raw drivers and other queue libraries.

Run with ``python -m benchmarks [memory|sqlite|amqp|nats|redis|all] [--events N] [--quick]``
(``make bench``). Every suite measures, for each contender, with the publisher and
the consumer in two separate OS processes:

* **throughput** — N persistent ~200-byte events, from the first publish to the last
  event handled (acked) by the consumer;
* **latency** — p50/p99 of handled-time minus publish-time (carried in the event, one
  host clock) while publishing at a steady rate (1,000 events/s by default).

Figures are printed as absolute numbers and as ratios against the suite's baseline
contender measured in the same run, and are also written to ``var/bench/results.json``.

``python -m benchmarks.costmodel`` (``make bench``) runs those suites, then how
Herald's throughput grows with body size, consumer processes and queues on each
broker (:mod:`benchmarks.sweep`), then memory (:mod:`benchmarks.footprint`), and
writes ``docs/performance.md`` with its plots.
"""

__all__: list[str] = []
