"""A release that adds a nullable column upgrades a database of an older one at
start-up, on SQLite and PostgreSQL, as a rolling deploy needs."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table, inspect

from hr_platform.database import Database


def tables(*extra: Column[str]) -> MetaData:
    metadata = MetaData()
    Table("notes", metadata, Column("id", Integer, primary_key=True), *extra)
    return metadata


async def test_new_nullable_columns_are_added_to_existing_tables(database_url: str) -> None:
    old = Database(database_url, tables())
    await old.create_tables()
    async with old.engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO notes (id) VALUES (1)")
    await old.close()

    new = Database(database_url, tables(Column("release", String(64), nullable=True)))
    try:
        await new.create_tables()
        await new.create_tables()  # a second replica of the new release starting
        async with new.engine.begin() as conn:
            columns = await conn.run_sync(lambda c: inspect(c).get_columns("notes"))
            await conn.exec_driver_sql("INSERT INTO notes (id, release) VALUES (2, '2')")
            rows = (await conn.exec_driver_sql("SELECT id, release FROM notes ORDER BY id")).all()
    finally:
        await new.close()
    assert [c["name"] for c in columns] == ["id", "release"]
    assert [tuple(row) for row in rows] == [(1, None), (2, "2")]
