"""What a store holds, read behind the service's back, on either backend: an SQLite file (with
sqlite3) or a PostgreSQL database (with asyncpg). The SQL is SQLite's, with ``?`` parameters."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import xenon_elixir as xe


async def _pg_fetch(url: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await connection.fetch(xe.pg_sql(sql), *params)]
    finally:
        await connection.close()


def rows(db: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` in the store at ``db`` (a file or a URL)."""
    if xe.is_postgres(db):
        return asyncio.run(_pg_fetch(db, sql, params))
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(sql, params).fetchall()


def dump(db: str) -> list[str]:
    """Every row of every table, as text in a stable order, but for SQLite's counter of commits
    (bookkeeping every write moves, a no-op attach then detach included)."""
    if not xe.is_postgres(db):
        with contextlib.closing(sqlite3.connect(db)) as connection:
            return [line for line in connection.iterdump() if "VALUES('commits'," not in line]
    tables = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", xe.PG_SCHEMA)
    return [
        f"{table}: {text}"
        for table in tables
        for (text,) in rows(db, f"SELECT t::text FROM {table} AS t ORDER BY t::text")
    ]


@contextlib.contextmanager
def holding_the_write_lock(db: str) -> Iterator[None]:
    """Another process holding what every write needs, for the block's length: SQLite's write
    lock; on PostgreSQL, the counters and the players' numbers (a numbered change waits for
    them, then gives up)."""
    if xe.is_postgres(db):
        from services import _PgConnection

        url = urlsplit(db)
        holder = _PgConnection(url.port or 5432, url.username or "postgres", url.path.lstrip("/"), 10.0)
        holder.query("BEGIN; LOCK TABLE counters, player_seqs IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            holder.query("ROLLBACK")
            holder.close()
        return
    connection = sqlite3.connect(db, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()
