"""RabbitMQ stops while HR keeps hiring: nothing is lost once it is back.

hr-web reaches the employees service over the broker, so while the broker is down
hr-web answers 503. The employees service itself keeps accepting changes through its
local API: each one commits with its event in the outbox, and the relay publishes
them when the broker returns. Restarts RabbitMQ (``rabbitmqctl stop_app`` /
``start_app``, always started again).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from ..servers import wait_port
from .conftest import _destroy
from .platform import Platform, broker_url, require_broker
from .test_scenarios import create_many, wait_records


def rabbitmqctl(command: str) -> None:
    subprocess.run(["rabbitmqctl", command], check=True, capture_output=True, timeout=120)


@pytest.mark.amqp
@pytest.mark.restart
async def test_hires_during_a_broker_outage_reach_every_service(workdir: Path) -> None:
    require_broker("amqp")
    url = broker_url("amqp", workdir)
    hr = Platform(url, workdir)
    try:
        await hr.start("employees", "hr-web", "payroll", "giftcards")
        pids = {name: hr.pid(name) for name in hr.processes}
        before, _ = await create_many(hr, 10, "before")
        await wait_records(hr, "payroll", set(before), 30)

        during: list[str] = []
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            through_web = asyncio.create_task(hr.create(0, "web-during-outage"))
            for i in range(30):
                response = await hr.http.post(
                    hr.url("employees", "/employees"),
                    json={
                        "first_name": f"Outage{i}",
                        "last_name": "Hire",
                        "email": f"outage{i}.{uuid.uuid4().hex[:6]}@example.com",
                        "salary": "45000",
                    },
                )
                assert response.status_code == 201, response.text
                during.append(response.json()["guid"])
            web = await through_web
            assert web.status_code == 503, web.text
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
            await asyncio.to_thread(wait_port, 5672)

        everyone = set(before) | set(during)
        await wait_records(hr, "payroll", everyone, 120)
        await wait_records(hr, "giftcards", everyone, 60)
        assert all(r["changes"] == 1 for r in await hr.records("payroll"))
        cards = Counter(c["employee_guid"] for c in await hr.records("giftcards"))
        assert set(cards) == everyone and max(cards.values()) == 1
        for name, pid in pids.items():
            assert hr.running(name) and hr.pid(name) == pid, f"{name} did not survive the outage"
    finally:
        await hr.close()
        for name in hr.processes:
            print(f"----- {name} log (tail) -----\n{hr.log(name)}")
        await _destroy(url)
