"""Fixtures shared with the HR platform's tests."""

from ..hr.conftest import workdir

__all__ = ["workdir"]
