"""``sqlite:///path/to/file.db`` — the embedded default broker (see ``docs/sqlite.md``)."""

from .broker import SQLiteBroker
from .settings import SQLiteSettings

__all__ = ["SQLiteBroker", "SQLiteSettings"]
