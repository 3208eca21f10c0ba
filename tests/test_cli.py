"""The ``herald`` command line, in-process through ``main([...])`` and as real processes
(``python -m herald ...``) sharing an SQLite broker file."""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import herald
from herald.cli import main
from herald.cli_commands import describe, load_service, parse_data, tail
from herald.cli_common import UsageError, stop_on_signals
from herald.cli_dlq import Progress
from herald.demo import DEMO_URL, run_demo
from herald.testing import eventually
from tests import demo_app

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30.0


def wait(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """:func:`herald.testing.eventually`, for the synchronous tests of subprocesses."""
    asyncio.run(eventually(check, timeout, what, interval=0.02))


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HERALD_BROKER"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def herald_cli(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herald", *args],
        cwd=cwd,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


class Child:
    """A running ``python -m herald ...``; its output is collected line by line."""

    def __init__(self, *args: str, cwd: Path = ROOT, **env: str) -> None:
        self.argv = ["herald", *args]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "herald", *args],
            cwd=cwd,
            env=child_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: io.TextIOBase | None, lines: list[str]) -> None:
        assert stream is not None
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, lines: list[str], text: str) -> str:
        found: list[str] = []

        def check() -> bool:
            if self.proc.poll() is not None and not found:
                for reader in self._readers:
                    reader.join(1)
            found.extend(line for line in lines if text in line)
            if not found and self.proc.poll() is not None:
                raise AssertionError(
                    f"exited {self.proc.returncode} before printing {text!r}:\n"
                    + "\n".join(self.out + self.err)
                )
            return bool(found)

        wait(check, f"{text!r} from {' '.join(self.argv)}")
        return found[0]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.finish()

    def finish(self) -> int:
        code = self.proc.wait(TIMEOUT)
        for reader in self._readers:
            reader.join(TIMEOUT)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def start(*args: str, **kwargs: object) -> Child:
        child = Child(*args, **kwargs)  # type: ignore[arg-type]
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/x.db"


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh broker for in-process tests."""
    if request.param == "memory":
        return f"memory://cli-{secrets.token_hex(4)}"
    return f"sqlite:///{tmp_path}/inproc.db"


# --- usage, errors, help ---------------------------------------------------------------


def test_help_as_module() -> None:
    result = herald_cli("--help")
    assert result.returncode == 0
    for command in ("run", "publish", "tail", "dlq", "demo", "--broker", "--log-format"):
        assert command in result.stdout


def test_help_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "replay", "--help"]) == 0
    assert "--id ID" in capsys.readouterr().out


def test_publish_invalid_json_names_the_problem() -> None:
    result = herald_cli("publish", "employee.created", "--data", '{"guid": }')
    assert result.returncode == 2
    assert result.stderr == (
        "herald: error: --data is not valid JSON: Expecting value at line 1 column 10\n"
    )


def test_bad_broker_url_names_the_part_and_hides_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["publish", "x.y", "--broker", "amqp://guest:s3cret@rabbit:70000/"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("herald: error: invalid broker URL")
    assert "port: '70000' is not a port number" in err
    assert "s3cret" not in err and "Traceback" not in err


@pytest.mark.parametrize("broker", ["redis://127.0.0.1:1", "sqlite:////proc/no/such/dir.db"])
def test_unreachable_broker_is_a_runtime_error(
    broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["publish", "x.y", "--broker", broker]) == 1
    err = capsys.readouterr().err
    assert err.startswith("herald: error: ") and "Traceback" not in err


def test_unknown_scheme_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HERALD_BROKER", "pulsar://localhost")
    assert main(["dlq", "list", "payroll"]) == 2
    assert "scheme: unknown scheme 'pulsar'" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish"]) == 2
    assert "required: TYPE" in capsys.readouterr().err
    assert main(["publish", "employee.*", "--broker", "memory://"]) == 2
    assert "cannot publish to a pattern" in capsys.readouterr().err
    assert main(["publish", "a.b", "--header", "novalue", "--broker", "memory://"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
    assert main(["tail", "bad pattern!", "--broker", "memory://"]) == 2
    assert "invalid event type or pattern" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("tests.no_such_module:service", "no module named 'tests.no_such_module'"),
        ("tests.demo_app:missing", "has no attribute 'missing'"),
        ("tests.demo_app:not_a_service", "is a str, not a herald.Service"),
        ("json", "holds 0 herald.Service objects"),
    ],
)
def test_run_refuses_what_is_not_a_service(target: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        load_service(target)


def test_run_finds_the_only_service_of_a_module() -> None:
    assert load_service("tests.demo_app") is demo_app.service
    assert load_service("tests.demo_app:service") is demo_app.service


def test_data_from_stdin_and_file(tmp_path: Path) -> None:
    assert parse_data("-", io.StringIO('{ "a" : [1, 2] }')) == b'{"a":[1,2]}'
    path = tmp_path / "event.json"
    path.write_text('{"name": "Zoë"}', encoding="utf-8")
    assert json.loads(parse_data(f"@{path}")) == {"name": "Zoë"}
    with pytest.raises(UsageError, match="cannot read"):
        parse_data(f"@{tmp_path}/missing.json")


# --- publish, run, tail as processes ---------------------------------------------------


def test_run_handles_published_events_and_stops_on_sigterm(
    tmp_path: Path, sqlite_url: str, children: Callable[..., Child]
) -> None:
    out = tmp_path / "handled.txt"
    service = children(
        "--log-format", "json", "run", "tests.demo_app:service", "--broker", sqlite_url,
        "--concurrency", "3", DEMO_APP_OUT=str(out),
    )  # fmt: skip
    service.wait_for(service.err, "(concurrency 3)")
    published = herald_cli(
        "publish", "demo.ping", "--data", '{"text": "hello"}', "--key", "k1", "--broker", sqlite_url
    )
    assert published.returncode == 0, published.stderr
    message_id = published.stdout.strip()
    wait(lambda: out.exists() and out.read_text() == "hello\n", "the handler's line")
    service.wait_for(service.err, '"event": "finished"')
    assert service.stop(signal.SIGTERM) == 0
    records = [json.loads(line) for line in service.err]
    finished = [r for r in records if r.get("event") == "finished"]
    assert len(finished) == 1
    assert finished[0]["message_id"] == message_id
    assert finished[0]["queue"] == "demoapp.demo.ping"
    assert finished[0]["handler"] == "record"
    assert finished[0]["attempt"] == 1
    assert finished[0]["duration_ms"] >= 0
    assert finished[0]["logger"] == "herald.worker" and finished[0]["level"] == "INFO"
    assert any("stopped" in r["message"] for r in records)


def test_tail_prints_a_published_event(sqlite_url: str, children: Callable[..., Child]) -> None:
    tailer = children("tail", "demo.*", "--json", "--count", "1", "--broker", sqlite_url)
    tailer.wait_for(tailer.err, "tailing")
    published = herald_cli(
        "publish", "demo.ping", "--data", '{"text": "hi"}', "--key", "k9",
        "--header", "x-trace=abc", "--broker", sqlite_url,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    assert tailer.finish() == 0
    [line] = tailer.out
    event = json.loads(line)
    assert event["id"] == published.stdout.strip()
    assert event["type"] == "demo.ping" and event["key"] == "k9"
    assert event["data"] == {"text": "hi"}
    assert event["headers"]["x-trace"] == "abc"


def test_tail_stops_cleanly_on_ctrl_c(sqlite_url: str, children: Callable[..., Child]) -> None:
    tailer = children("tail", "--broker", sqlite_url)
    tailer.wait_for(tailer.err, "tailing")
    published = herald_cli("publish", "hr.note", "--data", '"x"', "--broker", sqlite_url)
    line = tailer.wait_for(tailer.out, published.stdout.strip())
    assert "hr.note" in line and "key=-" in line and line.endswith('"x"')
    assert tailer.stop(signal.SIGINT) == 0
    assert not any("Traceback" in line for line in tailer.err)


async def test_tail_prints_matching_events_only() -> None:
    out, err = io.StringIO(), io.StringIO()
    async with herald.connect(f"memory://tail-{secrets.token_hex(4)}") as bus:
        task = asyncio.create_task(tail(bus, "employee.*", count=2, out=out, err=err))
        while "tailing" not in err.getvalue():
            assert not task.done(), task
            await asyncio.sleep(0.01)
        first = await bus.publish(herald.Message(type="employee.created", body=b'{"a": 1}'))
        await bus.publish(herald.Message(type="payroll.opened", body=b"{}"))
        second = await bus.publish(
            herald.Message(type="employee.updated", body=b"\xff\x00", subject="k")
        )
        assert await asyncio.wait_for(task, TIMEOUT) == 2
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert f'employee.created  key=-  id={first.id}  {{"a": 1}}' in lines[0]
    assert f"employee.updated  key=k  id={second.id}  <2 bytes of application/json>" in lines[1]


async def test_second_signal_forces_the_exit(capsys: pytest.CaptureFixture[str]) -> None:
    exits: list[int] = []
    with stop_on_signals(force_exit=exits.append) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(stop.wait(), TIMEOUT)
        assert exits == []
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + TIMEOUT
        while not exits:
            assert time.monotonic() < deadline, "the second signal was not handled"
            await asyncio.sleep(0.01)
    assert exits == [130]
    assert "interrupted again" in capsys.readouterr().err


def test_describe_truncates_long_bodies() -> None:
    message = herald.Message(type="a.b", body=json.dumps({"text": "y" * 500}).encode())
    line = describe(message)
    assert line.endswith("…") and len(line) < 300
    assert json.loads(describe(message, as_json=True))["data"] == {"text": "y" * 500}
    binary = json.loads(describe(herald.Message(type="a.b", body=b"not json"), as_json=True))
    assert binary["body"] == "not json" and "data" not in binary


# --- dead letters ----------------------------------------------------------------------


def make_dead_letters(url: str, count: int) -> list[str]:
    async def go() -> list[str]:
        async with herald.connect(url) as bus:
            worker = await bus.start(demo_app.service)
            ids = [
                (await bus.publish(herald.Message(type="demo.poison", body=b'{"n": %d}' % n))).id
                for n in range(count)
            ]
            deadline = time.monotonic() + TIMEOUT
            while len(await bus.dead_letters("demoapp")) < count:
                assert time.monotonic() < deadline, "dead letters did not appear"
                await asyncio.sleep(0.02)
            await worker.stop()
            return ids

    return asyncio.run(go())


def queued(url: str, count: int) -> list[herald.Message]:
    """Take ``count`` messages off the poison queue (as a consumer would see them)."""

    async def go() -> list[herald.Message]:
        async with herald.connect(url) as bus:
            subscription = demo_app.service.handlers[1].subscription
            stream = bus.broker.consume(subscription, herald.Prefetch(16))
            messages: list[herald.Message] = []
            try:
                while len(messages) < count:
                    delivery = await asyncio.wait_for(anext(stream), TIMEOUT)
                    messages.append(delivery.message)
                    await delivery.ack()
            finally:
                await stream.aclose()
            return messages

    return asyncio.run(go())


def queued_ids(url: str, count: int) -> list[str]:
    return [message.id for message in queued(url, count)]


def test_dlq_list(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ids = make_dead_letters(url, 2)
    assert main(["dlq", "list", "demoapp", "--broker", url]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "TYPE", "QUEUE", "ATTEMPTS", "LAST", "FAILURE", "ERROR"]
    assert [row.split()[0] for row in rows] == ids
    assert all("demoapp.demo.poison" in row and "Reject: cannot digest" in row for row in rows)

    assert main(["dlq", "list", "demoapp", "--json", "--limit", "1", "--broker", url]) == 0
    [line] = capsys.readouterr().out.splitlines()
    letter = json.loads(line)
    assert letter["id"] == ids[0] and letter["type"] == "demo.poison"
    assert letter["error_type"] == "Reject" and letter["error"] == f"cannot digest {ids[0]}"
    assert letter["attempts"] == 1 and letter["data"] == {"n": 0}


def test_dlq_list_empty(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "list", "nobody", "--broker", url]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no dead letters for service 'nobody'" in captured.err


def test_common_options_go_before_or_after_the_command(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--broker", url, "--log-level", "debug", "--log-format", "json"]
    assert main([*args, "dlq", "list", "nobody"]) == 0
    assert "no dead letters for service 'nobody'" in capsys.readouterr().err
    assert main(["--broker", "pulsar://x", "dlq", "list", "nobody", "--broker", url]) == 0
    assert "no dead letters" in capsys.readouterr().err


def test_dlq_replay_by_id_then_all(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ids = make_dead_letters(url, 3)
    assert main(["dlq", "replay", "demoapp", "--id", ids[1], "--broker", url]) == 0
    assert capsys.readouterr().out == "replayed 1 dead letter(s) of demoapp\n"
    assert queued_ids(url, 1) == [ids[1]]
    assert main(["dlq", "replay", "demoapp", "--broker", url]) == 0
    assert capsys.readouterr().out == "replayed 2 dead letter(s) of demoapp\n"
    assert sorted(queued_ids(url, 2)) == sorted([ids[0], ids[2]])
    assert main(["dlq", "list", "demoapp", "--json", "--broker", url]) == 0
    assert capsys.readouterr().out == ""


def test_dlq_replay_reports_unknown_ids(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_dead_letters(url, 1)
    assert main(["dlq", "replay", "demoapp", "--id", "nope", "--broker", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == "replayed 0 dead letter(s) of demoapp\n"
    assert "1 of the 1 given id(s) are not dead letters of 'demoapp'" in captured.err


def test_dlq_replay_edited(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = make_dead_letters(url, 2)
    body, headers = tmp_path / "body.json", tmp_path / "headers.json"
    body.write_bytes(b'{"n": 41}')
    headers.write_text('{"x-fixed": "yes"}')
    edit = ["dlq", "replay", "demoapp", "--edit", str(body), "--broker", url]
    assert main([*edit, "--id", ids[1], "--headers", str(headers)]) == 0
    assert (
        capsys.readouterr().out == f"replayed dead letter {ids[1]} of demoapp, edited (9 bytes)\n"
    )
    [message] = queued(url, 1)
    assert (message.id, message.body, message.headers.get("x-fixed")) == (
        ids[1],
        b'{"n": 41}',
        "yes",
    )

    assert main(edit) == 2
    assert "give exactly one --id" in capsys.readouterr().err
    body.write_bytes(b"{oops")
    assert main([*edit, "--id", ids[0]]) == 1
    assert "edited body is not valid JSON" in capsys.readouterr().err
    assert main(["dlq", "list", "demoapp", "--json", "--broker", url]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [ids[0]]


def test_dlq_purge(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ids = make_dead_letters(url, 3)
    assert main(["dlq", "purge", "demoapp", "--broker", url]) == 2
    assert "needs --yes" in capsys.readouterr().err
    assert main(["dlq", "purge", "demoapp", "--id", ids[0], "--broker", url]) == 0
    assert capsys.readouterr().out == "purged 1 dead letter(s) of demoapp\n"
    assert main(["dlq", "purge", "demoapp", "--yes", "--broker", url]) == 0
    assert capsys.readouterr().out == "purged 2 dead letter(s) of demoapp\n"
    assert main(["dlq", "list", "demoapp", "--json", "--broker", url]) == 0
    assert capsys.readouterr().out == ""


def test_dlq_commands_across_processes(sqlite_url: str) -> None:
    ids = make_dead_letters(sqlite_url, 2)
    listed = herald_cli("dlq", "list", "demoapp", "--json", "--broker", sqlite_url)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == ids
    replayed = herald_cli("dlq", "replay", "demoapp", "--id", ids[0], "--broker", sqlite_url)
    assert (replayed.returncode, replayed.stdout) == (0, "replayed 1 dead letter(s) of demoapp\n")
    purged = herald_cli("dlq", "purge", "demoapp", "--yes", "--broker", sqlite_url)
    assert (purged.returncode, purged.stdout) == (0, "purged 1 dead letter(s) of demoapp\n")
    assert queued_ids(sqlite_url, 1) == [ids[0]]


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_rewrites_one_line_on_a_terminal() -> None:
    now = [0.0]
    stream = FakeStream(tty=True)
    progress = Progress(stream, clock=lambda: now[0])
    for done in range(1, 5):
        now[0] += 0.06
        progress(done, 4)
    progress.finish()
    text = stream.getvalue()
    assert text.count("\r\x1b[2K") == 2  # at 0.12 s, then at the end (0.18 s is too soon)
    assert text.startswith("\r\x1b[2Kreplayed 2/4 (50%)")
    assert text.endswith("\r\x1b[2Kreplayed 4/4 (100%)\n")
    assert "\n" not in text[:-1]


def test_progress_prints_periodic_lines_elsewhere() -> None:
    now = [0.0]
    stream = FakeStream(tty=False)
    progress = Progress(stream, clock=lambda: now[0])
    for done in range(1, 11):
        now[0] += 0.5
        progress(done, 10)
    progress.finish()
    assert stream.getvalue() == "replayed 4/10 (40%)\nreplayed 8/10 (80%)\nreplayed 10/10 (100%)\n"


def test_progress_is_quiet_for_quick_operations() -> None:
    stream = FakeStream(tty=False)
    progress = Progress(stream)
    progress(1, 1)
    progress.finish()
    assert stream.getvalue() == ""


# --- the demo --------------------------------------------------------------------------


async def test_demo_story_in_process() -> None:
    out = io.StringIO()
    story = await run_demo(f"memory://demo-{secrets.token_hex(4)}", count=3, interval=0, out=out)
    lines = out.getvalue().splitlines()
    assert len(story.hired) == 3
    assert all(seen == set(story.hired) for seen in story.seen.values())
    for who in ("hr", "payroll", "giftcards", "audit"):
        assert sum(line.startswith(f"{who:<9} | ") for line in lines) == 3, who
    assert lines[-1] == (
        "demo      | stopped after 3 hire(s); received: payroll 3, giftcards 3, audit 3"
    )


def test_demo_runs_on_its_own_sqlite_file(tmp_path: Path) -> None:
    # $HERALD_BROKER is for real services; the demo never creates queues there.
    result = herald_cli(
        "demo",
        "--mini",
        "--count",
        "3",
        "--interval",
        "0.05",
        cwd=tmp_path,
        HERALD_BROKER="pulsar://prod",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("payroll   | opened a payroll record for ") for line in lines) == 3
    assert sum(line.startswith("giftcards | sent a EUR ") for line in lines) == 3
    assert "on sqlite:///./var/demo.db" in lines[0]
    assert (tmp_path / "var" / "demo.db").exists()
    assert DEMO_URL == "sqlite:///./var/demo.db"


def test_demo_stops_cleanly_on_ctrl_c(sqlite_url: str, children: Callable[..., Child]) -> None:
    demo = children("demo", "--mini", "--interval", "0.2", "--broker", sqlite_url)
    demo.wait_for(demo.out, "giftcards | sent")
    assert demo.stop(signal.SIGINT) == 0
    assert demo.out[-1].startswith("demo      | stopped after ")
    assert not any("Traceback" in line for line in demo.err)
