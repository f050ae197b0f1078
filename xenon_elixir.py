"""xenon_elixir: the Xenon partner API and the Elixir Music API in one embeddable module.

One Litestar app backed by one SQLite file. Read it top to bottom: configuration,
wire models, errors, the store, the music player, guards, the routes of each API,
the Python host API, the app factory and finally the command line.

    uvicorn xenon_elixir:app            # reads XE_* from the environment
    xenon-elixir serve --db bot.db      # the same, from the command line
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiosqlite
import msgspec
from litestar import Litestar, Request, Response, Router, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath

__all__ = [
    "ApiError",
    "CatalogResolver",
    "Config",
    "ElixirError",
    "Guild",
    "Host",
    "Player",
    "Playlist",
    "Resolver",
    "SCHEMA",
    "Track",
    "XenonError",
    "create_app",
    "host_of",
    "main",
]

__version__ = "0.1.0"

log = logging.getLogger("xenon_elixir")

T = TypeVar("T")

MIB = 1024 * 1024


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything an app instance needs; each field has an ``XE_*`` variable or a default."""

    db: str = "./xenon_elixir.db"
    """Path of the SQLite file (``XE_DB``). WAL mode needs a real file, not ``:memory:``."""

    admin_token: str | None = None
    """Bearer token that enables ``/admin`` (``XE_ADMIN_TOKEN``); unset or empty keeps admin off."""

    xenon_prefix: str = "/api"
    """Path prefix of the Xenon partner API."""

    elixir_prefix: str = "/api/v1"
    """Path prefix of the Elixir Music API."""

    admin_prefix: str = "/admin"
    """Path prefix of the admin API."""

    max_body_size: int = 1 * MIB
    """Largest request body accepted by the public APIs; larger ones get 413."""

    admin_max_body_size: int = 64 * MIB
    """Largest admin request body: catalog imports of ~100k tracks fit."""

    clock: Callable[[], float] = time.time
    """Wall clock in epoch seconds. Player positions are anchored to it so they survive a restart;
    tests and simulations may pass their own."""

    resolver: Callable[[Store], Resolver] | None = None
    """Builds the query resolver from the store; ``None`` means the local catalog (:class:`CatalogResolver`)."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        return cls(
            db=env.get("XE_DB") or cls.db,
            admin_token=env.get("XE_ADMIN_TOKEN") or None,
        )


# ---------------------------------------------------------------------------
# Wire models
# ---------------------------------------------------------------------------

_SNOWFLAKE = re.compile(r"[1-9][0-9]{14,19}")
_UINT64_END = 1 << 64


def snowflake(value: object, field: str) -> str:
    """Return ``value`` as a snowflake string, or raise ``ValueError`` naming ``field``.

    Discord ids are unsigned 64-bit integers written with 15-20 digits; they arrive as JSON
    strings or integers and always leave as strings.
    """
    if type(value) is int:
        value = str(value)
    if isinstance(value, str) and _SNOWFLAKE.fullmatch(value) and int(value) < _UINT64_END:
        return value
    raise ValueError(f"Invalid {field}: expected a snowflake id (15-20 digits)")


SnowflakeIn = str | int
"""A snowflake as it may arrive: checked and turned into ``str`` by :func:`snowflake`."""

_HTTP_URL = re.compile(r"https?://[^\s/?#]+[^\s]*", re.IGNORECASE)
_SOURCE = re.compile(r"[a-z0-9_-]{1,32}")


class Track(msgspec.Struct, kw_only=True):
    """A playable track as the catalog stores it and resolvers return it (``length`` in ms)."""

    source: str
    identifier: str
    title: str
    author: str
    length: int
    uri: str
    thumbnail: str | None = None
    is_stream: bool = False

    def __post_init__(self) -> None:
        if not _SOURCE.fullmatch(self.source):
            raise ValueError("Invalid source: expected 1-32 characters of a-z, 0-9, _ or -")
        if not 0 < len(self.identifier) <= 300:
            raise ValueError("Invalid identifier: expected 1-300 characters")
        if not 0 < len(self.title) <= 500 or len(self.author) > 500:
            raise ValueError("Invalid title or author: title needs 1-500 characters, author at most 500")
        if not 0 <= self.length < 10**12:
            raise ValueError("Invalid length: expected milliseconds, 0 or more")
        if not _HTTP_URL.fullmatch(self.uri) or (
            self.thumbnail is not None and not _HTTP_URL.fullmatch(self.thumbnail)
        ):
            raise ValueError("Invalid uri or thumbnail: expected an http(s) URL")


class Playlist(msgspec.Struct, kw_only=True):
    """A named, ordered list of catalog tracks of one source, found by ``(source, identifier)``."""

    source: str
    identifier: str
    name: str
    tracks: list[str]
    """Identifiers of tracks of the same source, in play order."""

    def __post_init__(self) -> None:
        if not _SOURCE.fullmatch(self.source):
            raise ValueError("Invalid source: expected 1-32 characters of a-z, 0-9, _ or -")
        if not 0 < len(self.identifier) <= 300 or not 0 < len(self.name) <= 500:
            raise ValueError("Invalid identifier or name: expected 1-300 and 1-500 characters")


class Catalog(msgspec.Struct, kw_only=True):
    """The file format of ``import-tracks``: tracks and, optionally, playlists."""

    tracks: list[Track] = []
    playlists: list[Playlist] = []


class Guild(msgspec.Struct, kw_only=True):
    """A guild in the registry that Elixir's join checks, with its voice channels."""

    id: SnowflakeIn
    name: str
    voice_channels: list[SnowflakeIn] = []

    def __post_init__(self) -> None:
        self.id = snowflake(self.id, "guild")
        self.voice_channels = list(dict.fromkeys(snowflake(c, "voice channel") for c in self.voice_channels))
        if not 0 < len(self.name) <= 100:
            raise ValueError("Invalid name: expected 1-100 characters")


class GuildIn(msgspec.Struct, kw_only=True):
    name: str
    voice_channels: list[SnowflakeIn] = []


class KeyIn(msgspec.Struct, kw_only=True):
    guild: SnowflakeIn
    user: SnowflakeIn
    rotate: bool = False

    def __post_init__(self) -> None:
        self.guild = snowflake(self.guild, "guild")
        self.user = snowflake(self.user, "user")


class KeyOut(msgspec.Struct):
    guild: str
    user: str
    key: str


class Count(msgspec.Struct):
    count: int


class Empty(msgspec.Struct):
    pass


class ElixirBody(msgspec.Struct, kw_only=True):
    """Any Elixir write body. ``user``/``channel`` may also be sent as ``user.id``/``channel.id``:
    the original read the first, the seed's tables say the second."""

    user: SnowflakeIn | None = None
    user_alias: SnowflakeIn | None = msgspec.field(default=None, name="user.id")
    channel: SnowflakeIn | None = None
    channel_alias: SnowflakeIn | None = msgspec.field(default=None, name="channel.id")
    volume: Any = None
    """Checked by the volume route: a JSON integer or a digit string, 0-100."""
    query: str | None = None

    def __post_init__(self) -> None:
        user = self.user if self.user is not None else self.user_alias
        channel = self.channel if self.channel is not None else self.channel_alias
        self.user = None if user is None else snowflake(user, "user")
        self.channel = None if channel is None else snowflake(channel, "channel")


class ElixirTrack(msgspec.Struct):
    """A track as the Elixir API shows it (field order as in the seed's samples)."""

    title: str
    author: str
    duration: int
    formatted_duration: str = msgspec.field(name="formattedDuration")
    uri: str = ""
    thumbnail: str | None = None
    position: int = 0
    is_stream: bool = msgspec.field(default=False, name="isStream")
    identifier: str = ""
    requested_by: str = msgspec.field(default="", name="requestedBy")


class Joined(msgspec.Struct):
    guild: str
    channel: str
    user: str
    message: str


class Controlled(msgspec.Struct):
    """The answer of a player control (volume, stop, pause, resume)."""

    guild: str
    user: str
    message: str


class Message(msgspec.Struct):
    message: str


class QueueView(msgspec.Struct):
    nowplaying: ElixirTrack | None
    queue: list[ElixirTrack]


class XenonErrorBody(msgspec.Struct):
    error: str
    retry_after: float | msgspec.UnsetType = msgspec.UNSET


class ElixirErrorBody(msgspec.Struct):
    timestamp: int
    message: str


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class ApiError(Exception):
    """A refusal with a status and a message. Plain ``ApiError`` takes the error shape of the API
    the request came in by; the subclasses fix the shape."""

    shape: ClassVar[str | None] = None

    def __init__(self, status_code: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers or {}


class XenonError(ApiError):
    """An error of the Xenon or admin API: ``{"error": message}``."""

    shape = "xenon"


class ElixirError(ApiError):
    """An error of the Elixir API: ``{"timestamp": ms, "message": message}``."""

    shape = "elixir"


NOT_AUTHORIZED = "Request not authorized."
NO_BODY = "No body provided."
NOT_CONNECTED = "Elixir isn't connected to a voice channel."
NOTHING_PLAYING = "No track is currently playing."


def decode_body(body: bytes, type_: type[T]) -> T:
    """Decode a JSON request body into ``type_``; every failure is a 400 that names the field."""
    if not body.strip():
        raise ApiError(400, NO_BODY)
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        # __post_init__ checks report at the object itself; the message already names the field.
        raise ApiError(400, str(exc).removesuffix(" - at `$`")) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"Invalid JSON body: {exc}") from None


def _api_of(request: Request) -> str:
    """Which API a request belongs to, for errors raised before or outside our handlers."""
    handler = request.scope.get("route_handler")
    if handler is not None and (api := handler.opt.get("api")):
        return api
    xe = getattr(request.app.state, "xe_config", None)
    prefix = (xe.elixir_prefix if xe else Config.elixir_prefix).rstrip("/") + "/"
    path = request.scope.get("path", "")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return "elixir" if path.startswith(prefix) else "xenon"


def _error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        status, message, headers = exc.status_code, exc.message, exc.headers
    elif isinstance(exc, ValidationException):
        details = "; ".join(str(e.get("message", "")) for e in (exc.extra or []) if isinstance(e, dict))
        status, message, headers = 400, f"{exc.detail}: {details}" if details else exc.detail, {}
    elif isinstance(exc, HTTPException):
        status, message, headers = exc.status_code, exc.detail, dict(exc.headers or {})
    else:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        status, message, headers = 500, "Internal server error", {}
    shape = getattr(exc, "shape", None) or _api_of(request)
    if shape == "elixir":
        content: Any = ElixirErrorBody(timestamp=int(time.time() * 1000), message=message)
    else:
        content = XenonErrorBody(error=message)
    return Response(content=content, status_code=status, headers=headers, media_type="application/json")


# ---------------------------------------------------------------------------
# Schema and store
# ---------------------------------------------------------------------------

SCHEMA_VERSION = 1

SCHEMA = """\
-- xenon_elixir schema. Every statement is idempotent: the whole script runs at each start.
-- PRAGMA user_version records the version; a file from a newer version is refused.

-- Elixir API keys: only the SHA-256 hex of a key is kept.
CREATE TABLE IF NOT EXISTS elixir_keys (
    key_hash   TEXT PRIMARY KEY,
    guild_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (guild_id, user_id)
) WITHOUT ROWID;

-- The guild registry that Elixir's join checks, fed by the host bot.
CREATE TABLE IF NOT EXISTS guilds (
    guild_id TEXT PRIMARY KEY,
    name     TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS voice_channels (
    guild_id   TEXT NOT NULL REFERENCES guilds (guild_id) ON DELETE CASCADE,
    channel_id TEXT NOT NULL,
    PRIMARY KEY (guild_id, channel_id)
); -- with rowid: it keeps the order the channels were given in

-- The local catalog the default resolver plays from (length in ms).
CREATE TABLE IF NOT EXISTS tracks (
    track_id   INTEGER PRIMARY KEY,
    source     TEXT NOT NULL,
    identifier TEXT NOT NULL,
    title      TEXT NOT NULL,
    author     TEXT NOT NULL,
    length     INTEGER NOT NULL,
    uri        TEXT NOT NULL,
    thumbnail  TEXT,
    is_stream  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (source, identifier)
);

CREATE VIRTUAL TABLE IF NOT EXISTS tracks_fts USING fts5 (
    title, author,
    content = 'tracks', content_rowid = 'track_id',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER IF NOT EXISTS tracks_fts_insert AFTER INSERT ON tracks BEGIN
    INSERT INTO tracks_fts (rowid, title, author) VALUES (new.track_id, new.title, new.author);
END;

CREATE TRIGGER IF NOT EXISTS tracks_fts_delete AFTER DELETE ON tracks BEGIN
    INSERT INTO tracks_fts (tracks_fts, rowid, title, author)
    VALUES ('delete', old.track_id, old.title, old.author);
END;

CREATE TRIGGER IF NOT EXISTS tracks_fts_update AFTER UPDATE ON tracks BEGIN
    INSERT INTO tracks_fts (tracks_fts, rowid, title, author)
    VALUES ('delete', old.track_id, old.title, old.author);
    INSERT INTO tracks_fts (rowid, title, author) VALUES (new.track_id, new.title, new.author);
END;

CREATE TABLE IF NOT EXISTS playlists (
    playlist_id INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    identifier  TEXT NOT NULL,
    name        TEXT NOT NULL,
    UNIQUE (source, identifier)
);

CREATE TABLE IF NOT EXISTS playlist_tracks (
    playlist_id INTEGER NOT NULL REFERENCES playlists (playlist_id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    track_id    INTEGER NOT NULL REFERENCES tracks (track_id) ON DELETE CASCADE,
    PRIMARY KEY (playlist_id, position)
) WITHOUT ROWID;

-- One music player per connected guild. The head of its queue is the current track;
-- its position is `position` ms at clock time `anchor` (frozen while paused).
CREATE TABLE IF NOT EXISTS players (
    guild_id   TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,
    volume     INTEGER NOT NULL,
    paused     INTEGER NOT NULL,
    position   REAL NOT NULL,
    anchor     REAL NOT NULL
) WITHOUT ROWID;

-- Queue entries hold a copy of their track, so any resolver's tracks can be queued.
-- Entries are only appended (entry_id grows) and deleted from the head.
CREATE TABLE IF NOT EXISTS queue (
    entry_id     INTEGER PRIMARY KEY,
    guild_id     TEXT NOT NULL,
    source       TEXT NOT NULL,
    identifier   TEXT NOT NULL,
    title        TEXT NOT NULL,
    author       TEXT NOT NULL,
    length       INTEGER NOT NULL,
    uri          TEXT NOT NULL,
    thumbnail    TEXT,
    is_stream    INTEGER NOT NULL,
    requested_by TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS queue_by_guild ON queue (guild_id, entry_id);
"""

_TRACK_COLUMNS = "source, identifier, title, author, length, uri, thumbnail, is_stream"
_LAST_ID = (1 << 63) - 1


class SQL:
    """Every statement the store runs, by name."""

    key_owner = "SELECT guild_id, user_id FROM elixir_keys WHERE key_hash = ?"
    key_exists = "SELECT 1 FROM elixir_keys WHERE guild_id = ? AND user_id = ?"
    key_delete = "DELETE FROM elixir_keys WHERE guild_id = ? AND user_id = ?"
    key_insert = "INSERT INTO elixir_keys (key_hash, guild_id, user_id, created_at) VALUES (?, ?, ?, ?)"

    guild_upsert = "INSERT INTO guilds (guild_id, name) VALUES (?, ?) ON CONFLICT DO UPDATE SET name = excluded.name"
    guild_delete = "DELETE FROM guilds WHERE guild_id = ?"
    guild_name = "SELECT name FROM guilds WHERE guild_id = ?"
    channels_clear = "DELETE FROM voice_channels WHERE guild_id = ?"
    channel_insert = "INSERT INTO voice_channels (guild_id, channel_id) VALUES (?, ?)"
    channels_of = "SELECT channel_id FROM voice_channels WHERE guild_id = ? ORDER BY rowid"
    channel_exists = "SELECT 1 FROM voice_channels WHERE guild_id = ? AND channel_id = ?"

    track_upsert = f"""
        INSERT INTO tracks ({_TRACK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (source, identifier) DO UPDATE SET
            title = excluded.title, author = excluded.author, length = excluded.length,
            uri = excluded.uri, thumbnail = excluded.thumbnail, is_stream = excluded.is_stream"""
    track_get = f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE source = ? AND identifier = ?"
    track_id_of = "SELECT track_id FROM tracks WHERE source = ? AND identifier = ?"
    # bm25 ranks lower-is-better; a title hit weighs twice an author hit.
    track_search = f"""
        SELECT {", ".join("t." + c for c in _TRACK_COLUMNS.split(", "))}
        FROM tracks_fts JOIN tracks AS t ON t.track_id = tracks_fts.rowid
        WHERE tracks_fts MATCH ? ORDER BY bm25(tracks_fts, 2.0, 1.0), t.track_id LIMIT 1"""

    playlist_upsert = """
        INSERT INTO playlists (source, identifier, name) VALUES (?, ?, ?)
        ON CONFLICT (source, identifier) DO UPDATE SET name = excluded.name
        RETURNING playlist_id"""
    playlist_clear = "DELETE FROM playlist_tracks WHERE playlist_id = ?"
    playlist_track_insert = "INSERT INTO playlist_tracks (playlist_id, position, track_id) VALUES (?, ?, ?)"
    playlist_tracks = f"""
        SELECT {", ".join("t." + c for c in _TRACK_COLUMNS.split(", "))}
        FROM playlists AS p
        JOIN playlist_tracks AS pt ON pt.playlist_id = p.playlist_id
        JOIN tracks AS t ON t.track_id = pt.track_id
        WHERE p.source = ? AND p.identifier = ? ORDER BY pt.position"""

    player_get = "SELECT channel_id, volume, paused, position, anchor FROM players WHERE guild_id = ?"
    player_upsert = """
        INSERT INTO players (guild_id, channel_id, volume, paused, position, anchor) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT DO UPDATE SET channel_id = excluded.channel_id, volume = excluded.volume,
            paused = excluded.paused, position = excluded.position, anchor = excluded.anchor"""
    player_delete = "DELETE FROM players WHERE guild_id = ?"
    queue_of = f"SELECT entry_id, {_TRACK_COLUMNS}, requested_by FROM queue WHERE guild_id = ? ORDER BY entry_id"
    queue_drop_before = "DELETE FROM queue WHERE guild_id = ? AND entry_id < ?"
    queue_append = f"INSERT INTO queue (entry_id, guild_id, {_TRACK_COLUMNS}, requested_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    queue_last_id = "SELECT coalesce(max(entry_id), 0) FROM queue"


def digest(secret: str) -> str:
    """The only form in which a secret is stored or compared."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _track_row(track: Track) -> tuple[Any, ...]:
    return (
        track.source,
        track.identifier,
        track.title,
        track.author,
        track.length,
        track.uri,
        track.thumbnail,
        int(track.is_stream),
    )


def _track_of(row: Sequence[Any]) -> Track:
    source, identifier, title, author, length, uri, thumbnail, is_stream = row
    return Track(
        source=source,
        identifier=identifier,
        title=title,
        author=author,
        length=length,
        uri=uri,
        thumbnail=thumbnail,
        is_stream=bool(is_stream),
    )


class StoreError(Exception):
    """The database file cannot be used (unreadable, locked, or from a newer version)."""


class Store:
    """The SQLite file: one writer connection whose transactions never interleave, one reader.

    WAL lets the reader see every committed write at once without waiting for the writer.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> Store:
        try:
            self._writer = await self._connect()
            async with self._writer.execute("PRAGMA user_version") as cursor:
                (version,) = await cursor.fetchone()  # type: ignore[misc]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}; this xenon_elixir knows up to {SCHEMA_VERSION}"
                )
            await self._writer.execute("PRAGMA journal_mode = WAL")
            await self._writer.executescript(SCHEMA)
            await self._writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._reader = await self._connect()
            await self._reader.execute("PRAGMA query_only = ON")
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StoreError(f"cannot use database {self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise
        return self

    async def _connect(self) -> aiosqlite.Connection:
        connection = aiosqlite.connect(self.path, isolation_level=None)
        try:
            await connection
        except BaseException:
            # aiosqlite queues its worker's stop without awaiting it; let the worker finish while
            # this loop still runs, or it reports to a closed loop (a CLI run ends right after).
            worker = getattr(connection, "_thread", None)
            if isinstance(worker, threading.Thread) and worker.is_alive():
                await asyncio.to_thread(worker.join, 5.0)
            raise
        try:
            for pragma in ("busy_timeout = 5000", "synchronous = NORMAL", "foreign_keys = ON"):
                await connection.execute(f"PRAGMA {pragma}")
        except BaseException:
            await connection.close()  # its worker thread would otherwise keep the process alive
            raise
        return connection

    async def close(self) -> None:
        for connection in (self._reader, self._writer):
            if connection is not None:
                await connection.close()
        self._reader = self._writer = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; writes that belong together commit or roll back together."""
        assert self._writer is not None, "store is not open"
        db = self._writer
        async with self._write_lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                # Shielded: a cancelled request must not leave the writer inside a transaction.
                if db.in_transaction:
                    await asyncio.shield(db.execute("ROLLBACK"))
                raise

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        assert self._reader is not None, "store is not open"
        async with self._reader.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        assert self._reader is not None, "store is not open"
        async with self._reader.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def integrity_ok(self) -> bool:
        row = await self._one("PRAGMA integrity_check")
        return row is not None and row[0] == "ok"

    # Elixir keys --------------------------------------------------------

    async def key_owner(self, key: str) -> tuple[str, str] | None:
        """The (guild_id, user_id) a key is bound to, or ``None`` for an unknown or revoked key."""
        row = await self._one(SQL.key_owner, (digest(key),))
        return None if row is None else (row[0], row[1])

    async def create_key(self, guild_id: str, user_id: str, *, rotate: bool = False) -> tuple[str, bool]:
        """Make the key of (guild, user); returns it (the only time it exists in clear) and whether
        it replaced one. A second key for the same pair needs ``rotate``, which revokes the first."""
        key = secrets.token_hex(32)
        async with self.transaction() as db:
            async with db.execute(SQL.key_exists, (guild_id, user_id)) as cursor:
                exists = await cursor.fetchone() is not None
            if exists and not rotate:
                raise ApiError(409, "A key already exists for this guild and user; rotate it to get a new one")
            await db.execute(SQL.key_delete, (guild_id, user_id))
            await db.execute(SQL.key_insert, (digest(key), guild_id, user_id, time.time()))
        return key, exists

    async def revoke_key(self, guild_id: str, user_id: str) -> bool:
        async with self.transaction() as db:
            cursor = await db.execute(SQL.key_delete, (guild_id, user_id))
            return cursor.rowcount > 0

    # Guild registry -----------------------------------------------------

    async def put_guild(self, guild: Guild) -> Guild:
        async with self.transaction() as db:
            await db.execute(SQL.guild_upsert, (guild.id, guild.name))
            await db.execute(SQL.channels_clear, (guild.id,))
            await db.executemany(SQL.channel_insert, [(guild.id, c) for c in guild.voice_channels])
        return guild

    async def delete_guild(self, guild_id: str) -> bool:
        async with self.transaction() as db:
            cursor = await db.execute(SQL.guild_delete, (guild_id,))
            return cursor.rowcount > 0

    async def get_guild(self, guild_id: str) -> Guild | None:
        row = await self._one(SQL.guild_name, (guild_id,))
        if row is None:
            return None
        channels = [c for (c,) in await self._all(SQL.channels_of, (guild_id,))]
        return Guild(id=guild_id, name=row[0], voice_channels=channels)

    async def has_voice_channel(self, guild_id: str, channel_id: str) -> bool:
        return await self._one(SQL.channel_exists, (guild_id, channel_id)) is not None

    # Catalog --------------------------------------------------------------

    async def import_catalog(self, tracks: Iterable[Track], playlists: Iterable[Playlist] = ()) -> tuple[int, int]:
        """Upsert tracks, then playlists (which may name those tracks), all in one transaction:
        a playlist naming an unknown track refuses the whole import."""
        track_rows = [_track_row(t) for t in tracks]
        playlists = list(playlists)
        async with self.transaction() as db:
            await db.executemany(SQL.track_upsert, track_rows)
            for playlist in playlists:
                track_ids = []
                for identifier in playlist.tracks:
                    async with db.execute(SQL.track_id_of, (playlist.source, identifier)) as cursor:
                        row = await cursor.fetchone()
                    if row is None:
                        raise ApiError(
                            400, f"Playlist {playlist.identifier}: unknown track {playlist.source}/{identifier}"
                        )
                    track_ids.append(row[0])
                async with db.execute(
                    SQL.playlist_upsert, (playlist.source, playlist.identifier, playlist.name)
                ) as cursor:
                    (playlist_id,) = await cursor.fetchone()  # type: ignore[misc]
                await db.execute(SQL.playlist_clear, (playlist_id,))
                await db.executemany(
                    SQL.playlist_track_insert, [(playlist_id, i, t) for i, t in enumerate(track_ids)]
                )
        return len(track_rows), len(playlists)

    async def get_track(self, source: str, identifier: str) -> Track | None:
        row = await self._one(SQL.track_get, (source, identifier))
        return None if row is None else _track_of(row)

    async def get_playlist_tracks(self, source: str, identifier: str) -> list[Track]:
        return [_track_of(row) for row in await self._all(SQL.playlist_tracks, (source, identifier))]

    async def search_track(self, match: str) -> Track | None:
        row = await self._one(SQL.track_search, (match,))
        return None if row is None else _track_of(row)

    # Players --------------------------------------------------------------

    async def load_player(self, guild_id: str) -> Player | None:
        row = await self._one(SQL.player_get, (guild_id,))
        if row is None:
            return None
        channel_id, volume, paused, position, anchor = row
        entries = [
            QueueEntry(r[0], _track_of(r[1:9]), r[9]) for r in await self._all(SQL.queue_of, (guild_id,))
        ]
        return Player(guild_id, channel_id, volume, bool(paused), position, anchor, deque(entries))

    async def last_entry_id(self) -> int:
        (last,) = await self._one(SQL.queue_last_id)
        return last

    async def save_player(self, write: PlayerWrite) -> None:
        """Persist one player change: drop the entries before the head, upsert the player, append."""
        async with self.transaction() as db:
            await db.execute(SQL.queue_drop_before, (write.row[0], write.head_id))
            await db.execute(SQL.player_upsert, write.row)
            if write.appended:
                await db.executemany(SQL.queue_append, write.appended)

    async def delete_player(self, guild_id: str) -> None:
        async with self.transaction() as db:
            await db.execute(SQL.queue_drop_before, (guild_id, _LAST_ID))
            await db.execute(SQL.player_delete, (guild_id,))


# ---------------------------------------------------------------------------
# Music: resolver and player clock
# ---------------------------------------------------------------------------


class Resolver(Protocol):
    """Turns a play query into a track, a playlist's tracks, or ``None`` (nothing found).

    A resolver may refuse a query it cannot handle by raising ``ElixirError(400, message)``.
    Swap in another (a Lavalink node's ``/v4/loadtracks``, say) with ``Config.resolver``.
    """

    async def resolve(self, query: str) -> Track | list[Track] | None: ...


class Link(msgspec.Struct, frozen=True):
    source: str
    kind: str  # "track" or "playlist"
    identifier: str


UNSUPPORTED_LINK = (
    "Unsupported URL. Links to tracks and playlists work from YouTube (youtube.com, youtu.be, "
    "music.youtube.com), Spotify (open.spotify.com) and SoundCloud (soundcloud.com)."
)
_URL_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SPOTIFY_PATH = re.compile(r"(?:/intl-[A-Za-z_-]+)?/(track|album|playlist)/([A-Za-z0-9]{1,64})/?")
_SOUNDCLOUD_PART = re.compile(r"[A-Za-z0-9_-]{1,100}")
_WORD = re.compile(r"\w+")


def parse_link(query: str) -> Link | None:
    """Recognise a track or playlist URL; ``None`` means the query is search text.

    Raises ``ElixirError`` for a URL that is not a track or playlist of a supported service.
    """
    if not _URL_SCHEME.match(query):
        return None
    parts = urlsplit(query)
    host = (parts.hostname or "").removeprefix("www.").removeprefix("m.")
    path = parts.path
    params = parse_qs(parts.query)
    link: Link | None = None
    if host in ("youtube.com", "music.youtube.com"):
        if path == "/watch" and _YOUTUBE_ID.fullmatch(params.get("v", [""])[0]):
            link = Link("youtube", "track", params["v"][0])
        elif path == "/playlist" and _YOUTUBE_ID.fullmatch(params.get("list", [""])[0]):
            link = Link("youtube", "playlist", params["list"][0])
        elif (m := re.fullmatch(r"/shorts/([^/]+)/?", path)) and _YOUTUBE_ID.fullmatch(m[1]):
            link = Link("youtube", "track", m[1])
    elif host == "youtu.be":
        if _YOUTUBE_ID.fullmatch(video := path.strip("/")):
            link = Link("youtube", "track", video)
    elif host == "open.spotify.com":
        if m := _SPOTIFY_PATH.fullmatch(path):
            link = Link("spotify", "track" if m[1] == "track" else "playlist", m[2])
    elif host == "soundcloud.com":
        segments = path.strip("/").split("/")
        if all(_SOUNDCLOUD_PART.fullmatch(s) for s in segments):
            if len(segments) == 2 and segments[1] != "sets":
                link = Link("soundcloud", "track", "/".join(segments))
            elif len(segments) == 3 and segments[1] == "sets":
                link = Link("soundcloud", "playlist", "/".join(segments))
    if link is None:
        raise ElixirError(400, UNSUPPORTED_LINK)
    return link


def search_expression(query: str) -> tuple[str, str] | None:
    """FTS5 match expressions for search text: all words, then any word. Words are quoted, so
    nothing a user types is read as FTS syntax; the tokenizer folds case and accents."""
    words = _WORD.findall(query)[:32]
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]
    return " ".join(quoted), " OR ".join(quoted)


class CatalogResolver:
    """The default resolver: the local catalog in SQLite."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def resolve(self, query: str) -> Track | list[Track] | None:
        link = parse_link(query)
        if link is None:
            expressions = search_expression(query)
            for expression in expressions or ():
                if track := await self._store.search_track(expression):
                    return track
            return None
        if link.kind == "track":
            return await self._store.get_track(link.source, link.identifier)
        return await self._store.get_playlist_tracks(link.source, link.identifier) or None


@dataclasses.dataclass(slots=True)
class QueueEntry:
    entry_id: int
    track: Track
    requested_by: str


@dataclasses.dataclass(slots=True)
class PlayerWrite:
    """A player change, snapshotted when made so writes land in the order changes were made."""

    row: tuple[Any, ...]
    head_id: int
    appended: list[tuple[Any, ...]]


@dataclasses.dataclass(slots=True, eq=False)
class Player:
    """A guild's music player. Its clock is derived, never ticked: the head of ``queue`` is at
    ``position`` ms at clock time ``anchor`` and advances in real time unless ``paused``."""

    guild_id: str
    channel_id: str
    volume: int = 100
    paused: bool = False
    position: float = 0.0
    anchor: float = 0.0
    queue: deque[QueueEntry] = dataclasses.field(default_factory=deque)

    @property
    def current(self) -> QueueEntry | None:
        return self.queue[0] if self.queue else None

    def position_at(self, now: float) -> float:
        return self.position if self.paused else self.position + (now - self.anchor) * 1000

    def settle(self, now: float) -> None:
        """Drop the tracks that ended before ``now``; each next one starts where the last ended.

        A pure function of the stored state and the clock, so a restarted server settles the
        same way and nothing needs writing when only time has passed.
        """
        while self.queue and not self.paused:
            track = self.queue[0].track
            if track.is_stream or self.position_at(now) < track.length:
                return
            self.anchor += (track.length - self.position) / 1000
            self.position = 0.0
            self.queue.popleft()

    def restart_clock(self, now: float) -> None:
        """The head (if any) starts from its beginning now."""
        self.position, self.anchor = 0.0, now

    def snapshot(self, appended: Sequence[QueueEntry] = ()) -> PlayerWrite:
        head = self.queue[0].entry_id if self.queue else _LAST_ID
        row = (self.guild_id, self.channel_id, self.volume, int(self.paused), self.position, self.anchor)
        rows = [(e.entry_id, self.guild_id, *_track_row(e.track), e.requested_by) for e in appended]
        return PlayerWrite(row, head, rows)


def clock_face(ms: float) -> str:
    """``MM:SS``, or ``HH:MM:SS`` from an hour on."""
    hours, rest = divmod(int(ms) // 1000, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def elixir_track(track: Track, requested_by: str, position: float = 0) -> ElixirTrack:
    if track.is_stream:
        position, duration, length_face = max(position, 0), 0, "LIVE"
    else:
        position = min(max(position, 0), track.length)
        duration, length_face = track.length // 1000, clock_face(track.length)
    return ElixirTrack(
        title=track.title,
        author=track.author,
        duration=duration,
        formatted_duration=f"{clock_face(position)}/{length_face}",
        uri=track.uri,
        thumbnail=track.thumbnail,
        position=int(position),
        is_stream=track.is_stream,
        identifier=track.identifier,
        requested_by=requested_by,
    )


class Players:
    """Every guild's player: loaded from the store on first use, kept in memory, written through.

    Changes are applied in memory without awaiting and snapshotted at once, then written; the
    store's lock keeps writes in that order. A failed write evicts the player, so the next use
    reloads what the file holds. Only this process writes players: serve one database from one
    process.
    """

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        # None marks a player this process stopped, so a load that raced the stop cannot bring
        # it back. Guilds never seen are not cached: anyone can ask about any id.
        self._cache: dict[str, Player | None] = {}
        self._last_entry_id = 0

    async def open(self) -> None:
        self._last_entry_id = await self._store.last_entry_id()

    async def get(self, guild_id: str) -> Player | None:
        """The guild's player, settled to now, or ``None`` when Elixir is not connected there."""
        if guild_id in self._cache:
            player = self._cache[guild_id]
        else:
            loaded = await self._store.load_player(guild_id)
            # Another request may have joined, stopped or loaded meanwhile: what it cached wins.
            player = self._cache.setdefault(guild_id, loaded) if loaded else self._cache.get(guild_id)
        if player is not None:
            player.settle(self._clock())
        return player

    async def connected(self, guild_id: str) -> Player:
        player = await self.get(guild_id)
        if player is None:
            raise ElixirError(400, NOT_CONNECTED)
        return player

    async def _save(self, player: Player, appended: Sequence[QueueEntry] = ()) -> None:
        write = player.snapshot(appended)
        try:
            await self._store.save_player(write)
        except BaseException:
            self._cache.pop(player.guild_id, None)
            raise

    async def join(self, guild_id: str, channel_id: str) -> Player:
        """Connect to a channel, or move there keeping the queue when already connected."""
        player = await self.get(guild_id)
        if player is None:
            player = self._cache[guild_id] = Player(guild_id, channel_id, anchor=self._clock())
        player.channel_id = channel_id
        await self._save(player)
        return player

    async def set_volume(self, guild_id: str, volume: int) -> Player:
        player = await self.connected(guild_id)
        player.volume = volume
        await self._save(player)
        return player

    async def enqueue(self, guild_id: str, tracks: Sequence[Track], requested_by: str) -> Player:
        """Append tracks; an idle player starts the first of them now."""
        player = await self.connected(guild_id)
        if not player.queue:
            player.restart_clock(self._clock())
            player.paused = False
        entries = []
        for track in tracks:
            self._last_entry_id += 1
            entries.append(QueueEntry(self._last_entry_id, track, requested_by))
        player.queue.extend(entries)
        await self._save(player, entries)
        return player

    async def skip(self, guild_id: str) -> Player:
        player = await self.connected(guild_id)
        if not player.queue:
            raise ElixirError(410, NOTHING_PLAYING)
        player.queue.popleft()
        player.restart_clock(self._clock())
        await self._save(player)
        return player

    async def pause(self, guild_id: str) -> Player:
        player = await self.connected(guild_id)
        if not player.paused:
            now = self._clock()
            player.position, player.anchor, player.paused = player.position_at(now), now, True
            await self._save(player)
        return player

    async def resume(self, guild_id: str) -> Player:
        player = await self.connected(guild_id)
        if player.paused:
            player.anchor, player.paused = self._clock(), False
            await self._save(player)
        return player

    async def stop(self, guild_id: str) -> None:
        """Disconnect and forget the queue; stopping a stopped player is fine."""
        self._cache[guild_id] = None
        await self._store.delete_player(guild_id)

    def now(self) -> float:
        return self._clock()


# ---------------------------------------------------------------------------
# Guards
# ---------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Services:
    """What the routes of one app share; built in the app's lifespan."""

    config: Config
    store: Store
    players: Players
    resolver: Resolver


def services(request: Request) -> Services:
    return request.app.state.xe


_ELIXIR_KEY = re.compile(r"[0-9a-f]{64}")


def elixir_key(authorization: str | None) -> str | None:
    """The key in ``Authorization: Bearer <key>`` (scheme word in any case), or a bare key."""
    if not authorization:
        return None
    parts = authorization.split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        key = parts[1]
    elif len(parts) == 1:
        key = parts[0]
    else:
        return None
    return key if _ELIXIR_KEY.fullmatch(key) else None


def path_id(value: str, field: str) -> str:
    """A snowflake from the path, or a 400 in the shape of the route's API."""
    try:
        return snowflake(value, field)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


async def elixir_caller(request: Request, guild_id: str) -> tuple[str, str, ElixirBody]:
    """Parse and authorize an Elixir write: ``(guild_id, user_id, body)``.

    The key must be bound to the path's guild and the body's user. It is checked before any
    guild, channel or player lookup (the original looked first, letting anyone probe ids).
    """
    guild_id = path_id(guild_id, "guild")
    key = elixir_key(request.headers.get("authorization"))
    owner = await services(request).store.key_owner(key) if key else None
    if owner is None or owner[0] != guild_id:
        raise ElixirError(401, NOT_AUTHORIZED)
    body = decode_body(await request.body(), ElixirBody)
    if body.user is None:
        raise ElixirError(400, 'Missing "user" (or "user.id") in body.')
    if body.user != owner[1]:
        raise ElixirError(401, NOT_AUTHORIZED)
    return guild_id, body.user, body


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    token: str = connection.app.state.xe.config.admin_token or ""
    given = connection.headers.get("authorization", "")
    scheme, _sep, value = given.partition(" ")
    if not (
        token and scheme.lower() == "bearer" and hmac.compare_digest(digest(value.strip()), digest(token))
    ):
        raise XenonError(401, "Unauthorized")


# ---------------------------------------------------------------------------
# Elixir routes
# ---------------------------------------------------------------------------

_ELIXIR_POST = {"status_code": 200}
_QUERY_LIMIT = 500


@post("/{guild_id:str}/join", **_ELIXIR_POST)
async def elixir_join(request: Request, guild_id: FromPath[str]) -> Joined:
    guild_id, user_id, body = await elixir_caller(request, guild_id)
    if body.channel is None:
        raise ElixirError(400, 'Missing "channel" (or "channel.id") in body.')
    xe = services(request)
    if await xe.store.get_guild(guild_id) is None:
        raise ElixirError(400, "Guild not found.")
    if not await xe.store.has_voice_channel(guild_id, body.channel):
        raise ElixirError(400, "Voice channel not found.")
    await xe.players.join(guild_id, body.channel)
    return Joined(guild_id, body.channel, user_id, "Successfully joined the voice channel.")


def volume_of(value: Any) -> int:
    if type(value) is str and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or not 0 <= value <= 100:
        raise ElixirError(400, "Volume must be between 0 and 100.")
    return value


@post("/{guild_id:str}/volume", **_ELIXIR_POST)
async def elixir_volume(request: Request, guild_id: FromPath[str]) -> Controlled:
    guild_id, user_id, body = await elixir_caller(request, guild_id)
    volume = volume_of(body.volume)
    await services(request).players.set_volume(guild_id, volume)
    return Controlled(guild_id, user_id, f"Successfully changed the volume to {volume}.")


def play_query(query: str | None) -> str:
    """A play query: 1-500 characters, and a URL only with an http(s) scheme."""
    query = (query or "").strip()
    scheme = _URL_SCHEME.match(query)
    if not query or len(query) > _QUERY_LIMIT or (scheme and scheme[0].lower() not in ("http://", "https://")):
        raise ElixirError(400, "Invalid query.")
    return query


@post("/{guild_id:str}/play", **_ELIXIR_POST)
async def elixir_play(request: Request, guild_id: FromPath[str]) -> ElixirTrack | list[ElixirTrack]:
    guild_id, user_id, body = await elixir_caller(request, guild_id)
    query = play_query(body.query)
    xe = services(request)
    await xe.players.connected(guild_id)
    found = await xe.resolver.resolve(query)
    if not found:
        raise ElixirError(404, "No track found.")
    tracks = found if isinstance(found, list) else [found]
    await xe.players.enqueue(guild_id, tracks, user_id)
    answer = [elixir_track(t, user_id) for t in tracks]
    return answer if isinstance(found, list) else answer[0]


def _control_route(action: str, verb: str) -> Any:
    """stop, pause and resume differ only in the player call and the message's verb."""

    async def control(request: Request, guild_id: FromPath[str]) -> Controlled:
        guild_id, user_id, _ = await elixir_caller(request, guild_id)
        await getattr(services(request).players, action)(guild_id)
        return Controlled(guild_id, user_id, f"Successfully {verb} the player.")

    control.__name__ = f"elixir_{action}"
    return post(f"/{{guild_id:str}}/{action}", name=f"elixir_{action}", **_ELIXIR_POST)(control)


@post("/{guild_id:str}/skip", **_ELIXIR_POST)
async def elixir_skip(request: Request, guild_id: FromPath[str]) -> ElixirTrack | Message:
    guild_id, user_id, _ = await elixir_caller(request, guild_id)
    xe = services(request)
    player = await xe.players.skip(guild_id)
    if (entry := player.current) is None:
        return Message("Skipped the track. The queue is now empty.")
    return elixir_track(entry.track, entry.requested_by, player.position_at(xe.players.now()))


@get("/{guild_id:str}/nowplaying")
async def elixir_nowplaying(request: Request, guild_id: FromPath[str]) -> ElixirTrack:
    xe = services(request)
    player = await xe.players.get(path_id(guild_id, "guild"))
    if player is None or (entry := player.current) is None:
        raise ElixirError(410, NOTHING_PLAYING)
    return elixir_track(entry.track, entry.requested_by, player.position_at(xe.players.now()))


@get("/{guild_id:str}/queue")
async def elixir_queue(request: Request, guild_id: FromPath[str]) -> QueueView:
    xe = services(request)
    player = await xe.players.get(path_id(guild_id, "guild"))
    if player is None or not player.queue:
        return QueueView(None, [])
    head, *rest = player.queue
    return QueueView(
        elixir_track(head.track, head.requested_by, player.position_at(xe.players.now())),
        [elixir_track(e.track, e.requested_by) for e in rest],
    )


ELIXIR_ROUTES = [
    elixir_join,
    elixir_volume,
    elixir_play,
    _control_route("stop", "stopped"),
    _control_route("pause", "paused"),
    _control_route("resume", "resumed"),
    elixir_skip,
    elixir_nowplaying,
    elixir_queue,
]


# ---------------------------------------------------------------------------
# Admin routes
# ---------------------------------------------------------------------------


@post("/keys", status_code=201)
async def admin_create_key(request: Request) -> KeyOut:
    ask = decode_body(await request.body(), KeyIn)
    key, _ = await services(request).store.create_key(str(ask.guild), str(ask.user), rotate=ask.rotate)
    return KeyOut(str(ask.guild), str(ask.user), key)


@delete("/keys/{guild_id:str}/{user_id:str}", status_code=200)
async def admin_revoke_key(request: Request, guild_id: FromPath[str], user_id: FromPath[str]) -> Empty:
    await services(request).store.revoke_key(path_id(guild_id, "guild"), path_id(user_id, "user"))
    return Empty()


@put("/guilds/{guild_id:str}")
async def admin_put_guild(request: Request, guild_id: FromPath[str]) -> Guild:
    ask = decode_body(await request.body(), GuildIn)
    try:
        guild = Guild(id=guild_id, name=ask.name, voice_channels=ask.voice_channels)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return await services(request).store.put_guild(guild)


@delete("/guilds/{guild_id:str}", status_code=200)
async def admin_delete_guild(request: Request, guild_id: FromPath[str]) -> Empty:
    await services(request).store.delete_guild(path_id(guild_id, "guild"))
    return Empty()


@post("/tracks", status_code=200)
async def admin_import_tracks(request: Request) -> Count:
    tracks = decode_body(await request.body(), list[Track])
    count, _ = await services(request).store.import_catalog(tracks)
    return Count(count)


@post("/playlists", status_code=200)
async def admin_put_playlist(request: Request) -> Playlist:
    playlist = decode_body(await request.body(), Playlist)
    await services(request).store.import_catalog((), [playlist])
    return playlist


ADMIN_ROUTES = [
    admin_create_key,
    admin_revoke_key,
    admin_put_guild,
    admin_delete_guild,
    admin_import_tracks,
    admin_put_playlist,
]


# ---------------------------------------------------------------------------
# Host API
# ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_services(config: Config) -> AsyncIterator[Services]:
    """Open the store and everything built on it; close them on exit."""
    store = await Store(config.db).open()
    try:
        players = Players(store, config.clock)
        await players.open()
        resolver = config.resolver(store) if config.resolver else CatalogResolver(store)
        yield Services(config, store, players, resolver)
    finally:
        await store.close()


class Host:
    """The Python door to the host-side operations (the admin API and the CLI are the others).

    Get it from a started app with :func:`host_of`, or open one on a database file with
    ``async with Host.open(Config(db=...)) as host``. Bad input raises ``ValueError``
    (``msgspec.ValidationError`` is one); refusals raise :class:`ApiError`.
    """

    def __init__(self, services: Services) -> None:
        self._services = services

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: Config) -> AsyncIterator[Host]:
        async with open_services(config) as opened:
            yield cls(opened)

    @property
    def players(self) -> Players:
        return self._services.players

    @property
    def store(self) -> Store:
        return self._services.store

    async def create_key(self, guild_id: str | int, user_id: str | int, *, rotate: bool = False) -> str:
        """A new Elixir key for (guild, user), shown only now. ``rotate`` replaces an existing one."""
        ask = KeyIn(guild=guild_id, user=user_id, rotate=rotate)
        key, _ = await self.store.create_key(str(ask.guild), str(ask.user), rotate=rotate)
        return key

    async def revoke_key(self, guild_id: str | int, user_id: str | int) -> bool:
        return await self.store.revoke_key(snowflake(guild_id, "guild"), snowflake(user_id, "user"))

    async def put_guild(self, guild_id: str | int, name: str, voice_channels: Iterable[str | int] = ()) -> Guild:
        return await self.store.put_guild(Guild(id=guild_id, name=name, voice_channels=list(voice_channels)))

    async def delete_guild(self, guild_id: str | int) -> bool:
        return await self.store.delete_guild(snowflake(guild_id, "guild"))

    async def import_catalog(
        self, tracks: Iterable[Track | dict[str, Any]] = (), playlists: Iterable[Playlist | dict[str, Any]] = ()
    ) -> tuple[int, int]:
        """Upsert tracks and playlists (dicts in the admin API's format are accepted)."""
        return await self.store.import_catalog(
            [t if isinstance(t, Track) else msgspec.convert(t, Track) for t in tracks],
            [p if isinstance(p, Playlist) else msgspec.convert(p, Playlist) for p in playlists],
        )


def host_of(app: Litestar) -> Host:
    """The host API of a started app (its lifespan has run)."""
    host = getattr(app.state, "host", None)
    if host is None:
        raise RuntimeError("the app has not started: run its lifespan first")
    return host


# ---------------------------------------------------------------------------
# App factory
# ---------------------------------------------------------------------------


def create_app(config: Config | None = None, **overrides: Any) -> Litestar:
    """Build an app. Nothing is opened until the app's lifespan runs.

    ``overrides`` replace fields of ``config`` (by default :meth:`Config.from_env`).
    """
    config = dataclasses.replace(config or Config.from_env(), **overrides)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services(config) as opened:
            app.state.xe = opened
            app.state.host = Host(opened)
            try:
                yield
            finally:
                app.state.host = None

    routers = [Router(config.elixir_prefix, route_handlers=ELIXIR_ROUTES, opt={"api": "elixir"})]
    if config.admin_token:
        routers.append(
            Router(
                config.admin_prefix,
                route_handlers=ADMIN_ROUTES,
                guards=[admin_guard],
                opt={"api": "admin"},
                request_max_body_size=config.admin_max_body_size,
            )
        )
    app = Litestar(
        route_handlers=routers,
        lifespan=[lifespan],
        exception_handlers={Exception: _error_response},
        request_max_body_size=config.max_body_size,
    )
    app.state.xe_config = config
    return app


app = create_app()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


class CliError(Exception):
    """A command failed; its message is printed as one line to stderr."""


def _cli_host(args: argparse.Namespace) -> contextlib.AbstractAsyncContextManager[Host]:
    config = Config.from_env()
    return Host.open(config if args.db is None else dataclasses.replace(config, db=args.db))


async def _cmd_genkey(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        print(await host.create_key(args.guild, args.user, rotate=args.rotate))


async def _cmd_revoke_key(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        if not await host.revoke_key(args.guild, args.user):
            raise CliError(f"no key for guild {args.guild} and user {args.user}")
        print(f"revoked the key of guild {args.guild} and user {args.user}")


async def _cmd_add_guild(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        guild = await host.put_guild(args.guild, args.name, args.voice)
        print(f"guild {guild.id} ({guild.name}) with {len(guild.voice_channels)} voice channel(s)")


async def _cmd_remove_guild(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        if not await host.delete_guild(args.guild):
            raise CliError(f"guild {args.guild} is not in the registry")
        print(f"removed guild {args.guild}")


async def _cmd_import_tracks(args: argparse.Namespace) -> None:
    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        decoded = msgspec.json.decode(raw, type=list[Track] | Catalog)
    except msgspec.DecodeError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    catalog = decoded if isinstance(decoded, Catalog) else Catalog(tracks=decoded)
    async with _cli_host(args) as host:
        tracks, playlists = await host.import_catalog(catalog.tracks, catalog.playlists)
    print(f"imported {tracks} track(s) and {playlists} playlist(s)")


def _cmd_schema(_: argparse.Namespace) -> None:
    sys.stdout.write(SCHEMA)


def _cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    overrides = {} if args.db is None else {"db": args.db}
    uvicorn.run(create_app(**overrides), host=args.host, port=args.port, log_level=args.log_level)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xenon-elixir", description="Serve and feed the Xenon partner API and the Elixir Music API."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", help="SQLite file (default: $XE_DB, else ./xenon_elixir.db)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[db], help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    serve.set_defaults(run=_cmd_serve)

    genkey = commands.add_parser("genkey", parents=[db], help="create an Elixir key and print it")
    genkey.add_argument("guild")
    genkey.add_argument("user")
    genkey.add_argument("--rotate", action="store_true", help="replace (and revoke) an existing key")
    genkey.set_defaults(run=_cmd_genkey)

    revoke = commands.add_parser("revoke-key", parents=[db], help="revoke the Elixir key of a guild and user")
    revoke.add_argument("guild")
    revoke.add_argument("user")
    revoke.set_defaults(run=_cmd_revoke_key)

    add_guild = commands.add_parser("add-guild", parents=[db], help="add or replace a guild in the registry")
    add_guild.add_argument("guild")
    add_guild.add_argument("--name", required=True)
    add_guild.add_argument("--voice", action="append", default=[], metavar="ID", help="a voice channel id (repeat)")
    add_guild.set_defaults(run=_cmd_add_guild)

    remove_guild = commands.add_parser("remove-guild", parents=[db], help="remove a guild from the registry")
    remove_guild.add_argument("guild")
    remove_guild.set_defaults(run=_cmd_remove_guild)

    imports = commands.add_parser(
        "import-tracks",
        parents=[db],
        help="upsert catalog tracks (and playlists) from a JSON file",
        description='FILE holds a list of tracks, or {"tracks": [...], "playlists": [...]}, '
        "in the format of POST /admin/tracks and /admin/playlists.",
    )
    imports.add_argument("file", metavar="FILE.json")
    imports.set_defaults(run=_cmd_import_tracks)

    schema = commands.add_parser("schema", help="print the SQL schema")
    schema.set_defaults(run=_cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        outcome = args.run(args)
        if asyncio.iscoroutine(outcome):
            asyncio.run(outcome)
    except (CliError, StoreError) as exc:
        print(f"xenon-elixir: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"xenon-elixir: {exc.message}", file=sys.stderr)
        return 1
    except (ValueError, sqlite3.Error) as exc:  # msgspec.ValidationError is a ValueError
        print(f"xenon-elixir: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
