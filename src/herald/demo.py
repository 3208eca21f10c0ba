"""``herald demo``: the HR platform (``make run``); ``--mini``: the story in one process.

HR hires someone every second and publishes ``employee.created``. Payroll opens a
salary record and the gift-card service sends a welcome card, each from its own
durable queue and without HR waiting for them; an audit service follows every
``employee.*`` event through a topic pattern. Each service prints one line per event
it receives. By default the bus is the embedded broker at ``sqlite:///./var/demo.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections.abc import Sequence
from datetime import date, timedelta
from importlib.metadata import entry_points
from typing import TextIO

from . import errors
from .bus import Bus, connect
from .cli_common import UsageError, broker_url, stop_on_signals
from .event import Event
from .message import Message
from .service import Service

__all__ = ["DEMO_URL", "EmployeeCreated", "Story", "build_services", "demo_command", "run_demo"]

DEMO_URL = "sqlite:///./var/demo.db"
PLATFORMS = "herald.demo"
"""Entry-point group of the platform ``herald demo`` runs (``hr_platform`` registers
``run_platform(url, *, without, ports, data_dir)`` there): the library never imports
the reference application by name."""
DRAIN_TIMEOUT = 20.0
"""With ``--count``: how long the services get to receive the last hire."""

FIRST_NAMES = (
    "Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Dennis", "Barbara",
    "Edsger", "Frances", "Ken", "Radia", "Tim", "Hedy", "Donald", "Sophie", "Yukihiro",
    "Anita", "Guido", "Shafi", "Niklaus", "Lynn", "Bjarne", "Adele", "Vint", "Mary",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Ritchie",
    "Liskov", "Dijkstra", "Allen", "Thompson", "Perlman", "Berners-Lee", "Lamarr",
    "Knuth", "Wilson", "Matsumoto", "Borg", "van Rossum", "Goldwasser", "Wirth",
    "Conway", "Stroustrup", "Goldberg", "Cerf", "Keller",
)  # fmt: skip
ROLES = {
    "Engineering": (("Software Engineer", 68_000), ("Staff Engineer", 96_000)),
    "Finance": (("Payroll Specialist", 52_000), ("Controller", 74_000)),
    "People": (("HR Partner", 55_000), ("Recruiter", 49_000)),
    "Sales": (("Account Executive", 58_000), ("Sales Engineer", 66_000)),
    "Support": (("Support Specialist", 42_000), ("Support Lead", 53_000)),
}


class EmployeeCreated(Event, type="employee.created"):
    """HR recorded a new employee."""

    guid: str
    name: str
    email: str
    department: str
    title: str
    salary: int
    start_date: date


def new_employee(rng: random.Random, today: date | None = None) -> EmployeeCreated:
    """A plausible new hire."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    department = rng.choice(sorted(ROLES))
    title, base = rng.choice(ROLES[department])
    handle = f"{first}.{last}".lower().replace(" ", "").replace("-", "")
    start = (today or date.today()) + timedelta(days=rng.randrange(7, 45))
    return EmployeeCreated(
        guid=f"{rng.getrandbits(64):016x}",
        name=f"{first} {last}",
        email=f"{handle}@example.com",
        department=department,
        title=title,
        salary=base + 1_000 * rng.randrange(0, 12),
        start_date=start,
    )


class Story:
    """Prints what happens and knows when every service has seen every hire."""

    def __init__(self, services: Sequence[str], out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.hired: list[str] = []
        self.seen: dict[str, set[str]] = {name: set() for name in services}
        self.hiring_over = False
        self.complete = asyncio.Event()

    def say(self, who: str, text: str) -> None:
        print(f"{who:<9} | {text}", file=self.out, flush=True)

    def hire(self, employee: EmployeeCreated) -> None:
        self.hired.append(employee.guid)
        self.say(
            "hr",
            f"hired {employee.name}, {employee.title} in {employee.department} "
            f"-> employee.created {employee.guid[:8]}",
        )

    def received(self, service: str, guid: str | None, text: str) -> None:
        self.say(service, text)
        if guid is not None:
            self.seen[service].add(guid)
        self.check()

    def check(self) -> None:
        hired = set(self.hired)
        if self.hiring_over and all(hired <= seen for seen in self.seen.values()):
            self.complete.set()


def build_services(story: Story) -> list[Service]:
    """Payroll and gift cards on ``employee.created``; audit on ``employee.*``."""
    payroll = Service("payroll")
    giftcards = Service("giftcards")
    audit = Service("audit")

    @payroll.on(EmployeeCreated)
    async def open_payroll_record(event: EmployeeCreated) -> None:
        story.received(
            "payroll",
            event.guid,
            f"opened a payroll record for {event.name}: EUR {event.salary:,}/year "
            f"from {event.start_date.isoformat()}",
        )

    @giftcards.on(EmployeeCreated)
    async def send_welcome_card(event: EmployeeCreated) -> None:
        amount = 100 if event.department == "Support" else 50
        story.received(
            "giftcards", event.guid, f"sent a EUR {amount} welcome gift card to {event.email}"
        )

    @audit.on("employee.*")
    async def record(message: Message) -> None:
        try:
            guid = json.loads(message.body).get("guid")
        except (ValueError, AttributeError):
            guid = None
        story.received(
            "audit",
            guid if isinstance(guid, str) else None,
            f"recorded {message.type} for key {(message.subject or '-')[:8]} "
            f"from {message.source!r} (message {message.id[:12]}...)",
        )

    return [payroll, giftcards, audit]


async def _hire(
    bus: Bus, story: Story, rng: random.Random, count: int | None, interval: float
) -> None:
    hired = 0
    while count is None or hired < count:
        if hired:
            await asyncio.sleep(interval)
        employee = new_employee(rng)
        await bus.publish(employee, key=employee.guid)
        story.hire(employee)
        hired += 1
    story.hiring_over = True
    story.check()
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            await story.complete.wait()
    except TimeoutError:
        missing = {name: len(set(story.hired) - seen) for name, seen in story.seen.items()}
        raise errors.TimeoutError(
            f"after {DRAIN_TIMEOUT:g}s some hires were still not received: {missing}"
        ) from None


async def run_demo(
    url: str = DEMO_URL,
    *,
    count: int | None = None,
    interval: float = 1.0,
    out: TextIO | None = None,
    seed: int | None = None,
) -> Story:
    """Run the demo until SIGINT/SIGTERM, or until ``count`` hires were received by all."""
    services = ["payroll", "giftcards", "audit"]
    story = Story(services, out)
    async with connect(url, source="hr") as bus:
        workers = [await bus.start(service) for service in build_services(story)]
        story.say(
            "demo",
            f"on {bus.url}: hr hires someone every {interval:g}s; "
            f"{', '.join(services)} react. Ctrl-C to stop.",
        )
        with stop_on_signals() as stop:
            hiring = asyncio.create_task(_hire(bus, story, random.Random(seed), count, interval))
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait((hiring, stopper), return_when=asyncio.FIRST_COMPLETED)
                if hiring.done():
                    hiring.result()
            finally:
                for task in (hiring, stopper):
                    task.cancel()
                await asyncio.gather(hiring, stopper, return_exceptions=True)
                for worker in workers:
                    await worker.stop(5.0)
    seen = ", ".join(f"{name} {len(got)}" for name, got in story.seen.items())
    story.say("demo", f"stopped after {len(story.hired)} hire(s); received: {seen}")
    return story


async def demo_command(args: argparse.Namespace) -> int:
    if args.mini:
        await run_demo(broker_url(args, DEMO_URL), count=args.count, interval=args.interval)
        return 0
    platforms = entry_points(group=PLATFORMS)
    try:
        run_platform = next(iter(platforms)).load()
    except (StopIteration, ImportError) as exc:
        raise UsageError(
            "the HR platform is not installed (pip install 'herald[hr]'); "
            "'herald demo --mini' runs the one-process story instead"
        ) from exc
    ports = {
        "hr-web": args.web_port,
        "payroll": args.payroll_port,
        "giftcards": args.giftcards_port,
        "dashboard": args.dashboard_port,
    }
    given = getattr(args, "broker", None) or os.environ.get("HERALD_BROKER")
    chosen = {"broker_url": given} if given else {}  # else the platform's own default
    try:
        await run_platform(**chosen, without=set(args.without), ports=ports, data_dir=args.data_dir)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return 0
