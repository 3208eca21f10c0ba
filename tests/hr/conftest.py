"""Fixtures: a platform of real service processes on each broker under test."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from herald.brokers import broker_from_url

from ..servers import require_port
from .platform import BROKERS, Platform, broker_url, require_broker


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A private scratch directory. Not ``tmp_path``: pytest sessions running at the
    same time (other suites on a shared machine) prune each other's old base temp
    directories, which would delete a running platform's databases."""
    path = Path(tempfile.mkdtemp(prefix="herald-hr-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=BROKERS)
async def platform(request: pytest.FixtureRequest, workdir: Path) -> AsyncIterator[Platform]:
    scheme: str = request.param
    require_broker(scheme)
    url = broker_url(scheme, workdir)
    hr = Platform(url, workdir)
    try:
        yield hr
    finally:
        await hr.close()
        for name in hr.processes:
            print(f"----- {name} log (tail) -----\n{hr.log(name)}")
        if scheme != "sqlite":
            await _destroy(url)


async def _destroy(url: str) -> None:
    """Remove the test's namespace from the server (best effort)."""
    with contextlib.suppress(Exception):
        broker = broker_from_url(url)
        try:
            await broker.connect()
            await broker.destroy()
        finally:
            await broker.close()


POSTGRES_URL = os.environ.get("HERALD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, workdir: Path) -> AsyncIterator[str]:
    """A fresh database for one service: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{workdir}/service.db"
        return
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    require_port(admin.port or 5432, "PostgreSQL")
    name = f"hr_{uuid.uuid4().hex[:10]}"
    engine = create_async_engine(admin.set(drivername="postgresql+asyncpg"))
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with autocommit.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        async with autocommit.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await engine.dispose()
