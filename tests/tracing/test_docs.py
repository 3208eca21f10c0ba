"""The Python examples of docs/observability.md's Tracing section run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
SECTION = re.search(r"^## Tracing\n(.*?)(?=^## |\Z)", DOC.read_text(), re.DOTALL | re.MULTILINE)
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION.group(1) if SECTION else "", re.DOTALL)


def test_the_tracing_section_has_an_example() -> None:
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_tracing_example_runs(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for expected in re.findall(r"print\(.*\)\s+# (.+)", code):
        assert expected.strip() in result.stdout, (expected, result.stdout)
    for line in re.findall(r"^    # (\[.*?\])$", code, re.DOTALL | re.MULTILINE):
        assert " ".join(line.replace("#", "").split()) in " ".join(result.stdout.split())
