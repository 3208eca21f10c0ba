"""Validate documents with the official AsyncAPI parser (Node 20, ``.npm/`` from
``make install``). In CI a missing node or parser fails the test that needs it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..servers import unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("validate.mjs")
PARSER = ROOT / ".npm" / "node_modules" / "@asyncapi" / "parser" / "package.json"

Diagnostics = list[dict[str, str]]


def validate(documents: dict[str, dict[str, Any]], workdir: Path) -> dict[str, Diagnostics]:
    """The parser's diagnostics for each document, by name (one node process for all)."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (Node 20: apt-get install nodejs)")
    if not PARSER.exists():
        unavailable(f"@asyncapi/parser is not installed in {PARSER.parents[2]} (make install)")
    files = {}
    for name, document in documents.items():
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        files[str(path)] = name
    done = subprocess.run(
        [str(node), str(SCRIPT), *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"validate.mjs exited {done.returncode}: {done.stderr}"
    results = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(results) == len(files), done.stdout
    return {files[result["file"]]: result["diagnostics"] for result in results}


def errors(diagnostics: Diagnostics) -> Diagnostics:
    return [d for d in diagnostics if d["severity"] == "error"]


def warnings(diagnostics: Diagnostics) -> Diagnostics:
    return [d for d in diagnostics if d["severity"] == "warning"]
