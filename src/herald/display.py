"""Showing messages on a terminal: safe whatever the message holds.

A message's fields are input: a body nested ten thousand levels deep, an ANSI escape
in a header, a bidi override in an id. What the CLI prints goes through here, so it
neither crashes nor lets a message drive the terminal.

>>> terminal_safe("ok \\x1b[31mred\\x1b[0m \\u202eevil")
'ok \\\\x1b[31mred\\\\x1b[0m \\\\u202eevil'
>>> json_body(b'{"a": [1, 2]}')
{'data': {'a': [1, 2]}}
>>> json_body(b"[" * 100_000)["body"][:5]
'[[[[['
>>> safe_json({"key": "\\x9b2J"})
'{"key": "\\\\u009b2J"}'
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["json_body", "one_line", "safe_json", "terminal_safe"]

_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]"
)
MAX_DEPTH = 64
"""Bodies nested deeper than this are shown as text, not parsed."""


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """``text`` with control characters, escapes and bidi overrides made visible."""
    return _UNSAFE.sub(_escape, text)


def one_line(text: str) -> str:
    """:func:`terminal_safe`, with line breaks and tabs made visible too."""
    return terminal_safe(text).replace("\n", "\\n").replace("\t", "\\t")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def safe_json(data: Any) -> str:
    """One line of JSON whose strings can carry nothing a terminal acts on."""
    return _UNSAFE.sub(_json_escape, json.dumps(data, ensure_ascii=False, default=str))


def _depth(text: bytes) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def json_body(body: bytes) -> dict[str, Any]:
    """``{"data": parsed}`` for a JSON body of sane depth, else ``{"body": text}``."""
    if _depth(body) <= MAX_DEPTH:
        try:
            return {"data": json.loads(body)}
        except (ValueError, RecursionError):
            pass
    return {"body": body.decode(errors="replace")}
