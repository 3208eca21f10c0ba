"""The README's Python examples run as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from .examples import ROOT, python_blocks, run_example

BLOCKS = python_blocks(ROOT / "README.md")


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    run_example(BLOCKS[index], tmp_path)
