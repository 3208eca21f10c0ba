"""Tests of the reference HR platform (multi-process scenarios on real brokers)."""
