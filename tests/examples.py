"""The Python examples of the README and docs/, run as written.

An example states what it prints: a trailing ``# text`` on a ``print(...)`` line, or
an indented ``# [...]`` comment line (a list it prints), must appear in its output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "python_blocks", "run_example"]

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(path: Path, section: str | None = None) -> list[str]:
    """The ```` ```python ```` blocks of ``path``, or of its ``## section`` only."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if section is not None:
        found = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        text = found.group(1) if found else ""
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def run_example(code: str, cwd: Path) -> None:
    """Run ``code`` in a fresh interpreter in ``cwd``; it must exit 0 and print what
    its comments say it prints."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for expected in re.findall(r"print\(.*\)\s+# (.+)", code):
        assert expected.strip() in result.stdout, (expected, result.stdout)
    flat = " ".join(result.stdout.split())
    for listed in re.findall(r"^    # (\[.*?\])$", code, re.DOTALL | re.MULTILINE):
        assert " ".join(listed.replace("#", "").split()) in flat, (listed, result.stdout)
