"""The Python examples of docs/observability.md run as written, section by section
(each example checks its own results)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .examples import ROOT, python_blocks, run_example

DOC = ROOT / "docs" / "observability.md"
SECTIONS = ("Metrics", "Tracing", "AsyncAPI")
"""The sections that must hold at least one runnable example."""
CASES = [
    pytest.param(code, id=f"{section}-{index}")
    for section in (*SECTIONS, "Health", "CloudEvents")
    for index, code in enumerate(python_blocks(DOC, section))
]


@pytest.mark.parametrize("section", SECTIONS)
def test_the_section_has_an_example(section: str) -> None:
    assert python_blocks(DOC, section)


@pytest.mark.parametrize("code", CASES)
def test_example_runs(code: str, tmp_path: Path) -> None:
    run_example(code, tmp_path)
