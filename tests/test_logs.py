"""herald.logs: the text and JSON formats, and configure() replacing its own handler."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from herald import logs


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    logs.reset()
    root.setLevel(level)


DELIVERY = {
    "herald": {
        "message_id": "m-1",
        "type": "employee.created",
        "queue": "payroll.employee.created",
        "handler": "open_record",
        "attempt": 2,
        "event": "finished",
        "duration_ms": 1.5,
    }
}


def test_text_format_is_one_readable_line(restore_root: None) -> None:
    out = io.StringIO()
    logs.configure("text", "INFO", stream=out)
    logging.getLogger("herald.worker").info("finished %s", "m-1", extra=DELIVERY)
    line = out.getvalue()
    assert line.count("\n") == 1
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO    herald\.worker: finished m-1\n", line
    ), line


def test_json_format_flattens_herald_fields(restore_root: None) -> None:
    out = io.StringIO()
    logs.configure("json", "INFO", stream=out)
    logging.getLogger("herald.worker").info("finished %s", "m-1", extra=DELIVERY)
    logging.getLogger("herald.bus").warning("plain")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {
        "time": first["time"],
        "level": "INFO",
        "logger": "herald.worker",
        "message": "finished m-1",
        **DELIVERY["herald"],
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["message"] == "plain" and second["level"] == "WARNING"
    assert "message_id" not in second


def test_json_exception_is_a_string_field(restore_root: None) -> None:
    out = io.StringIO()
    logs.configure("json", "INFO", stream=out)
    try:
        raise KeyError("salary")
    except KeyError:
        logging.getLogger("herald.worker").exception("dead-lettered m-1", extra=DELIVERY)
    record = json.loads(out.getvalue())
    assert record["level"] == "ERROR"
    assert isinstance(record["exception"], str)
    assert "Traceback" in record["exception"] and "KeyError: 'salary'" in record["exception"]


def test_text_exception_follows_the_line(restore_root: None) -> None:
    out = io.StringIO()
    logs.configure("text", "INFO", stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith("ERROR   x: failed")
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: boom"


def test_json_fields_do_not_overwrite_the_core_ones(restore_root: None) -> None:
    out = io.StringIO()
    logs.configure("json", "INFO", stream=out)
    logging.getLogger("x").info("real", extra={"herald": {"message": "fake", "level": 9}})
    record = json.loads(out.getvalue())
    assert record["message"] == "real" and record["level"] == "INFO"
    assert record["herald_message"] == "fake" and record["herald_level"] == 9


def test_level_filters_and_configure_replaces_its_handler(restore_root: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("text", "INFO", stream=first)
    logs.configure("json", "warning", stream=second)
    logging.getLogger("herald.worker").info("hidden")
    logging.getLogger("herald.worker").warning("shown")
    assert first.getvalue() == ""
    assert [json.loads(line)["message"] for line in second.getvalue().splitlines()] == ["shown"]


def test_reset_removes_only_herald_handlers(restore_root: None) -> None:
    other = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(other)
    try:
        logs.configure("text", "INFO", stream=io.StringIO())
        logs.reset()
        assert other in root.handlers
        assert not any(isinstance(h, logs._HeraldHandler) for h in root.handlers)
    finally:
        root.removeHandler(other)


@pytest.mark.parametrize(("fmt", "level"), [("xml", "INFO"), ("text", "LOUD")])
def test_bad_settings_are_refused(fmt: str, level: str) -> None:
    with pytest.raises(ValueError, match="unknown log"):
        logs.configure(fmt, level, stream=io.StringIO())
