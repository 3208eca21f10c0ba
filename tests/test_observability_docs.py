"""The Python examples of docs/observability.md's Metrics and Health sections run as
written (each checks its own results)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "observability.md"
SECTIONS = re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)
BLOCKS = [
    block
    for section in SECTIONS
    if section.startswith(("Metrics", "Health"))
    for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL)
]


def test_the_metrics_section_has_an_example() -> None:
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
