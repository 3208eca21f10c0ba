"""The schema registry and its compatibility rules: each breaking kind and each
compatible kind, on generated models; ``herald schema export``/``check`` end to end;
and the HR platform's committed registry, which the code must stay compatible with."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import herald
from herald.cli import main
from herald.schemas import check, compare, dumps, entries_of, load, merge, usages_of
from herald.schemas.registry import Entry
from hr_platform.catalog import services as hr_services

from .examples import ROOT, python_blocks, run_example

HR_REGISTRY = ROOT / "src" / "hr_platform" / "schemas.json"
TYPES: list[Any] = [int, str, bool, float, list[int], dict[str, str]]
NAMES = st.from_regex(r"[a-z]{1,6}", fullmatch=True)
FEW = settings(max_examples=15, deadline=None)
"""Each example builds pydantic models and their schemas: a few cover the rules."""
FIELDS = st.dictionaries(NAMES, st.tuples(st.sampled_from(TYPES), st.booleans()), max_size=5)
"""Field name -> (type, required)."""


def event(fields: dict[str, tuple[Any, bool]], version: int = 1) -> type[herald.Event]:
    definitions: dict[str, Any] = {
        name: (kind, ...) if required else (kind | None, None)
        for name, (kind, required) in fields.items()
    }
    model: type[herald.Event] = pydantic.create_model(  # type: ignore[call-overload]
        "Changed",
        __base__=herald.Event,
        __module__=__name__,
        __cls_kwargs__={"type": "test.changed", "version": version},
        **definitions,
    )
    return model


def registry_of(*classes: type[herald.Event], consumer: bool = False) -> list[Entry]:
    return entries_of(usages_of([_service(*classes, consumer=consumer)]))


def _service(*classes: type[herald.Event], consumer: bool = False) -> herald.Service:
    service = herald.Service("svc", publishes=[] if consumer else list(classes))
    for cls in classes:
        service.on(cls)(_handle)
    return service


async def _handle(event: herald.Event) -> None:
    pass


def breaking(
    *classes: type[herald.Event], registry: list[Entry], consumer: bool = False
) -> list[str]:
    report = check(usages_of([_service(*classes, consumer=consumer)]), registry)
    return [str(finding) for finding in report.breaking]


def _prefix(version: int = 1) -> str:
    return f"test.changed version {version} ({__name__}.Changed): "


@FEW
@given(FIELDS, NAMES, st.sampled_from(TYPES))
def test_adding_an_optional_field_is_compatible(
    fields: dict[str, tuple[Any, bool]], name: str, kind: Any
) -> None:
    registry = registry_of(event(fields))
    added = {**fields, name: (kind, False)} if name not in fields else fields
    assert breaking(event(added), registry=registry) == []
    assert breaking(event(fields), registry=registry) == [], "no change, no finding"


@FEW
@given(FIELDS.filter(bool), st.data())
def test_removing_a_field_breaks_consumers(
    fields: dict[str, tuple[Any, bool]], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(fields)))
    registry = registry_of(event(fields))
    rest = {k: v for k, v in fields.items() if k != name}
    assert breaking(event(rest), registry=registry) == [f"{_prefix()}field {name!r} removed"]
    # a consumer's own class may read a subset of the published fields
    assert breaking(event(rest), registry=registry, consumer=True) == []


@FEW
@given(FIELDS.filter(bool), st.data())
def test_changing_a_fields_type_breaks_consumers(
    fields: dict[str, tuple[Any, bool]], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(fields)))
    kind, required = fields[name]
    other = data.draw(st.sampled_from([t for t in TYPES if t != kind]))
    registry = registry_of(event(fields))
    (found,) = breaking(event({**fields, name: (other, required)}), registry=registry)
    assert found.startswith(f"{_prefix()}field {name!r} changed type: was ")


@FEW
@given(FIELDS, NAMES, st.sampled_from(TYPES))
def test_a_new_required_field_breaks_consumers(
    fields: dict[str, tuple[Any, bool]], name: str, kind: Any
) -> None:
    fields.pop(name, None)
    registry = registry_of(event(fields))
    found = breaking(event({**fields, name: (kind, True)}), registry=registry)
    assert found == [f"{_prefix()}new field {name!r} is required"]


def test_making_a_field_required_breaks_and_optional_is_compatible() -> None:
    optional = event({"a": (str, False)})
    required = event({"a": (str, True)})
    # str | None -> str is also a change of type; a default alone makes it optional
    assert breaking(required, registry=registry_of(optional)) == [
        f"{_prefix()}field 'a' changed type: was {{'anyOf': [{{'type': 'string'}}, "
        "{'type': 'null'}]}, now {'type': 'string'}"
    ]

    class Defaulted(herald.Event, type="test.changed"):
        a: str = ""

    class Required(herald.Event, type="test.changed"):
        a: str

    assert [
        str(f) for f in check(usages_of([_service(Required)]), registry_of(Defaulted)).breaking
    ] == [f"test.changed version 1 ({__name__}.{Required.__qualname__}): field 'a' made required"]
    report = check(usages_of([_service(Defaulted)]), registry_of(Required))
    assert report.ok and [f.text for f in report.compatible] == ["field 'a' made optional"]


def test_a_new_version_needs_an_upcaster_from_every_older_one() -> None:
    registry = registry_of(event({"a": (str, True)}))
    v2 = event({"a": (str, True), "b": (int, True)}, version=2)
    assert breaking(v2, registry=registry) == [
        f"{_prefix(2)}cannot read version 1 of the registry: no upcaster from version 1 "
        "(register one with @Changed.upcast_from(1))"
    ]
    v2.upcast_from(1)(lambda payload: {**payload, "b": 0})
    report = check(usages_of([_service(v2)]), registry)
    assert report.ok, report.breaking
    assert [f.text for f in report.compatible] == [
        "not in the registry yet (herald schema export adds it)"
    ]


def test_a_consumer_of_an_older_version_must_read_the_newer_one() -> None:
    v1 = event({"a": (str, True), "b": (int, True)})
    registry = merge(registry_of(v1), registry_of(event({"a": (str, True)}, version=2)))
    assert breaking(v1, registry=registry, consumer=True) == [
        f"{_prefix()}cannot read version 2 as its own: field 'b' it requires is missing there"
    ]
    reads_a = event({"a": (str, True)})
    assert breaking(reads_a, registry=registry, consumer=True) == []


def test_export_keeps_history_and_a_consumer_view_never_overwrites_the_producer() -> None:
    full_v1 = registry_of(event({"a": (str, True), "b": (int, True)}))
    view_v1 = registry_of(event({"a": (str, True)}), consumer=True)
    v2 = registry_of(event({"a": (str, True)}, version=2))
    merged = merge(merge(full_v1, v2), view_v1)
    assert [(e.version, sorted(e.schema["properties"])) for e in merged] == [
        (1, ["a", "b"]),
        (2, ["a"]),
    ]
    text = dumps(merged)
    assert text == dumps(merge([], merged[::-1])), "sorted by type and version"
    assert json.loads(text)["events"][0]["published_by"] == ["svc"]


def _write_app(directory: Path, body: str) -> str:
    module = f"schema_app_{secrets.token_hex(4)}"
    (directory / f"{module}.py").write_text(
        "import herald\n"
        "class Hired(herald.Event, type='employee.hired'):\n" + body + "\n"
        "hr = herald.Service('hr', publishes=[Hired])\n",
        encoding="utf-8",
    )
    return f"{module}:hr"


def test_the_commands_export_then_fail_on_a_breaking_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = tmp_path / "schemas.json"
    before = _write_app(tmp_path, "    guid: str\n    name: str")
    assert main(["schema", "export", before, "--output", str(registry)]) == 0
    assert [(e.type, e.version) for e in load(registry)] == [("employee.hired", 1)]
    capsys.readouterr()
    compatible = _write_app(tmp_path, "    guid: str\n    name: str\n    team: str = ''")
    assert main(["schema", "check", compatible, "--registry", str(registry)]) == 0
    assert "added optional field 'team'" in capsys.readouterr().out
    broken = _write_app(tmp_path, "    guid: int")
    assert main(["schema", "check", broken, "--registry", str(registry)]) == 1
    out = capsys.readouterr().out
    assert (
        f"BREAKING: employee.hired version 1 ({broken.split(':')[0]}.Hired): field 'name' removed"
        in out
    )
    assert "field 'guid' changed type" in out
    assert main(["schema", "check", before, "--registry", str(tmp_path / "none.json")]) == 2
    assert "no schema registry at" in capsys.readouterr().err
    other = f"schema_other_{secrets.token_hex(4)}"
    (tmp_path / f"{other}.py").write_text(
        "import herald\n"
        "class Left(herald.Event, type='employee.left'):\n    guid: str\n"
        "hr = herald.Service('hr', publishes=[Left])\n",
        encoding="utf-8",
    )
    assert main(["schema", "export", f"{other}:hr", "--output", str(registry)]) == 0
    assert [e.type for e in load(registry)] == ["employee.hired", "employee.left"], "kept"
    assert main(["schema", "export", f"{other}:hr", "-o", str(registry), "--replace"]) == 0
    assert [e.type for e in load(registry)] == ["employee.left"]


def test_the_hr_platform_is_compatible_with_its_committed_registry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["schema", "check", "hr_platform.catalog:services", "--registry", str(HR_REGISTRY)])
    assert code == 0, capsys.readouterr().out


def test_the_committed_hr_registry_is_up_to_date() -> None:
    """What export would write, compared field by field (not as text: another
    pydantic release may word the same schema differently)."""
    committed = load(HR_REGISTRY)
    current = merge(committed, entries_of(usages_of(hr_services())))
    fix = (
        "the events changed: run herald schema export hr_platform.catalog:services "
        "--output src/hr_platform/schemas.json, review the diff and commit it"
    )
    assert [(e.key, e.cls, e.published_by, e.consumed_by) for e in current] == [
        (e.key, e.cls, e.published_by, e.consumed_by) for e in committed
    ], fix
    for now, then in zip(current, committed, strict=True):
        assert compare(now.schema, then.schema, published=True) == ([], []), (now.key, fix)


@pytest.mark.parametrize("code", python_blocks(ROOT / "docs" / "schemas.md"))
def test_the_docs_examples_run(code: str, tmp_path: Path) -> None:
    run_example(code, tmp_path)
