"""Server-rendered pages: the Jinja2 templates shared by the platform's web services."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

__all__ = ["money", "render", "templates", "wants_json"]

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def money(amount: Decimal | float | int | str) -> str:
    """``52000`` -> ``'52,000.00'``."""
    return f"{Decimal(str(amount)):,.2f}"


templates.env.filters["money"] = money


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status: int = 200
) -> Response:
    return templates.TemplateResponse(request, name, context or {}, status_code=status)
