"""``herald docs asyncapi`` and the errors of ``herald docs``, in process."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from herald.asyncapi import asyncapi_document
from herald.cli import main
from hr_platform.catalog import services as hr_services
from hr_platform.process import platform_codecs

ROOT = Path(__file__).resolve().parents[2]
HR = ["hr_platform.catalog:services", "--codecs", "hr_platform.process:platform_codecs"]


def test_writes_the_hr_document_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "hr.json"
    url = "amqp://guest:pa55word@localhost:5672/"
    assert main(["docs", "asyncapi", *HR, "--broker", url, "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "pa55word" not in text
    written = json.loads(text)
    expected = asyncapi_document(hr_services(), broker_url=url, codecs=platform_codecs())
    assert written == json.loads(json.dumps(expected))
    assert written["info"]["title"] == "Herald services: employees, payroll, giftcards"


def test_writes_to_stdout_with_title_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["docs", "asyncapi", *HR, "--title", "HR", "--api-version", "2.1.0"]
    assert main([*argv, "--broker", "nats://n1:4222"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["info"]["title"] == "HR"
    assert doc["info"]["version"] == "2.1.0"
    assert doc["servers"]["broker"]["protocol"] == "nats"


def test_targets_a_module_a_service_or_a_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = f"docs_app_{secrets.token_hex(4)}"
    (tmp_path / f"{module}.py").write_text(
        "import herald\n"
        "class Hired(herald.Event, type='employee.created'):\n"
        "    guid: str\n"
        "hr = herald.Service('hr', publishes=[Hired])\n"
        "def more():\n"
        "    return [herald.Service('audit')]\n"
        "NOT_A_SERVICE = 3\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    assert main(["docs", "asyncapi", module, f"{module}:more", "--broker", "memory://x"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["info"]["title"] == "Herald services: hr, audit"
    assert list(doc["operations"]) == ["hr.publish.employee.created"]

    assert main(["docs", "asyncapi", f"{module}:NOT_A_SERVICE"]) == 2
    assert "is a int: expected a herald.Service" in capsys.readouterr().err
    assert main(["docs", "asyncapi", f"{module}:hr", "--codecs", f"{module}:hr"]) == 2
    assert "is a Service, not a CodecRegistry" in capsys.readouterr().err
    assert main(["docs", "asyncapi", f"{module}:hr", f"{module}:hr"]) == 2
    assert "named twice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no_such_module_here:svc"], "no module named 'no_such_module_here'"),
        (["hr_platform.catalog:nope"], "has no attribute 'nope'"),
        (["hr_platform.catalog:services", "--codecs", "nocolon"], "--codecs takes MODULE:NAME"),
        (["hr_platform.catalog:services", "--broker", "amqp://h:notaport/"], "amqp://h:notaport/"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["docs", "asyncapi", *argv]) == 2
    assert message in capsys.readouterr().err


def test_serve_without_a_viewer_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["docs", "serve", *HR, "--viewer", str(tmp_path), "--port", "0"]) == 2
    assert "no AsyncAPI viewer" in capsys.readouterr().err
