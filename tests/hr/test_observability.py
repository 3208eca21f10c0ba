"""The platform's services expose Prometheus metrics and readiness: three hires
through hr-web, counted exactly in each service's ``/metrics``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .platform import Platform, broker_url, eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def hr(workdir: Path) -> AsyncIterator[Platform]:
    platform = Platform(broker_url("sqlite", workdir), workdir)
    try:
        yield platform
    finally:
        await platform.close()
        for name in platform.processes:
            print(f"----- {name} log (tail) -----\n{platform.log(name)}")


async def scrape(hr: Platform, name: str) -> Samples:
    response = await hr.http.get(hr.url(name, "/metrics"))
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_each_service_counts_its_part_of_three_hires(hr: Platform) -> None:
    await hr.start("employees", "hr-web", "payroll")
    for name in ("employees", "hr-web", "payroll"):
        assert (await hr.http.get(hr.url(name, "/readyz"))).status_code == 200
    for i in range(3):
        assert (await hr.create(i, "obs")).status_code == 201

    payroll = {
        "service": "payroll",
        "queue": "payroll.employee",
        "handler": "build_service.<locals>.employee_changed",
        "outcome": "acked",
    }
    handled = "herald_deliveries_handled_total"

    async def payroll_done() -> bool:
        return value(await scrape(hr, "payroll"), handled, **payroll) == 3

    await eventually(payroll_done, timeout=30, what="payroll's three acks", interval=0.2)
    web = await scrape(hr, "hr-web")
    calls = "herald_rpc_calls_total"
    assert value(web, calls, request_type="rpc.employees.create", outcome="ok") == 3
    employees = await scrape(hr, "employees")
    published = "herald_messages_published_total"
    assert value(employees, published, event_type="employee.created", outcome="confirmed") == 3
    create = {
        "service": "employees",
        "queue": "employees.rpc.employees.create",
        "handler": "build_service.<locals>.create",
        "outcome": "acked",
    }
    assert value(employees, handled, **create) == 3
