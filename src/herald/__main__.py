"""``python -m herald``: the same command line as ``herald``."""

from .cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
