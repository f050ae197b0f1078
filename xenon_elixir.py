"""xenon_elixir: the Xenon partner API and the Elixir Music API in one embeddable module.

One Litestar app backed by a SQLite file or a PostgreSQL database, and Redis for several
processes. Read it top to bottom: each numbered section uses only what is above it.

     1 Configuration      Config, XE_* settings, the rate-limit table
     2 Wire models        the bodies of both APIs and the host API
     3 Errors             domain refusals; the two APIs' error shapes
     4 Domain             loaders, mappers, players: pure rules, no I/O
     5 Interfaces         Resolver, Limiter, Broker, AudioBackend
     6 Metrics            GET /metrics
     7 Storage seam       Database and Transaction, remembered answers, group commit, the tables
     8 Storage areas      the rules of each storage area, written once over the seam
     9 SQLite             the file, its writer thread, what only SQLite does
    10 PostgreSQL         the pool, its claim, what only PostgreSQL does; STORES
    11 Moving             xenon-elixir migrate: a SQLite file into PostgreSQL
    12 Rate limiter       the sliding-window rule and the 429 it answers
    13 Event hub          subscribers, streams, revocations, ordered delivery
    14 Redis              the fleet's limiter, broker, status windows, metrics, session lease
    15 Xenon services     loaders and partners
    16 Music              resolver, track ends, the player service
    17 Lavalink           a Lavalink v4 node as resolver and audio backend; voice lost, held
    18 Wiring             Services and open_services: which parts an app is built from
    19 HTTP helpers       answers, error bodies, client address, OpenAPI
    20 Guards             tokens, keys, the admin token
    21-23 Routes          Xenon, Elixir, admin
    24 Host API           the Python door for an embedding bot
    25 Demo               seed data and simulated loads
    26 Sandbox            XE_SANDBOX: fixed credentials, faults, the clock, the record, reset
    27 Player page        GET /player/{guild}
    28 App factory        create_app, the lifespan, the layer in front of Litestar
    29 Command line       xenon-elixir, and xenon_elixir.sandbox() with its pytest fixture

To change...
    the rate limit        read 12 (the rule, the 429), 1 (groups and defaults), 14 (the same
                          rule in Lua for a fleet); 20 and 21 say which group a request
                          counts in.
    a route               read its API's routes (21, 22 or 23), the service it calls (15 or 16),
                          and the wire models (2) of its body; every door (HTTP, admin, host
                          API, CLI) calls that one service operation. Its decorator gives the
                          OpenAPI document its group (tags, described in 19), operation id,
                          summary, description and error answers.
    a storage area        read its class in 8 (its SQL and rules, once for both stores), and
                          the backend's own half in 9 and 10 where it has one (catalog,
                          players, loaders); the tables are in 7, for both stores.
    a backend             read 7 (Database, Transaction: what a store must do), one of 9 or 10
                          as the example, and STORES at the end of 10 (the URL's scheme).
    the sandbox           read 26 (its faults, clock, record, reset and routes; 28 installs its
                          layer and lifespan), and 29 for sandbox() and the pytest fixture.
    revocation            read 7 (CREDENTIAL_TAGS and Remembering: each use of a remembered
                          credential looks at the credentials counter, or defers the look to its
                          player change, deferred_look), 10 (a batch's read takes the counter) and
                          20 (looked_at_by_the_change: the Elixir writes that defer it).

    uvicorn xenon_elixir:app            # reads XE_* from the environment
    xenon-elixir serve --db bot.db      # the same, from the command line
"""

from __future__ import annotations

import argparse
import array
import asyncio
import atexit
import bisect
import concurrent.futures
import contextlib
import contextvars
import copy
import dataclasses
import difflib
import email.utils
import errno
import fcntl
import functools
import gc
import hashlib
import heapq
import hmac
import http
import ipaddress
import itertools
import logging
import math
import os
import re
import secrets
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import unicodedata
import weakref
from collections import Counter, OrderedDict, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    Literal,
    NamedTuple,
    NoReturn,
    Protocol,
    Self,
    TextIO,
    TypeVar,
    cast,
)
from urllib.parse import parse_qs, parse_qsl, unquote_plus, urlsplit

import msgspec
from litestar import Litestar, Request, Response, Router, WebSocket, asgi, delete, get, post, put, websocket
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import ClientException, HTTPException, InternalServerException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, Example, Operation, RequestBody, Schema, SecurityScheme
from litestar.openapi.spec import Tag as OpenAPITag
from litestar.params import Body, Parameter, ParameterKwarg, PathParameter, QueryParameter
from litestar.routes import HTTPRoute
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
    WebSocketScope,
)
from litestar.types import Message as ASGIMessage
from litestar.utils.path import normalize_path

__all__ = [
    "SCHEMA",
    "ApiError",
    "Broker",
    "CatalogResolver",
    "Config",
    "Conflict",
    "DomainError",
    "ElixirError",
    "Forbidden",
    "Guild",
    "Host",
    "InOrder",
    "Invalid",
    "Limiter",
    "NotFound",
    "Player",
    "PlayerState",
    "Playlist",
    "Resolver",
    "Track",
    "Unavailable",
    "XenonError",
    "create_app",
    "follow",
    "fts_match",
    "host_of",
    "main",
    "player_topic",
]

__version__ = "0.1.0"

log = logging.getLogger("xenon_elixir")

T = TypeVar("T")
W = TypeVar("W")

MIB = 1024 * 1024


# ---------------------------------------------------------------------------
# 1. Configuration: Config, XE_* settings, the rate-limit table
# ---------------------------------------------------------------------------


class ConfigError(ValueError):
    """A setting that cannot work; the message names it."""


_MAX_HITS = 100_000


_MAX_WINDOW = 7 * 86_400.0


_SETTING_BOUNDS: dict[str, tuple[float, float]] = {
    "status_interval": (0.0, 86_400.0),
    "cache_seconds": (0, 31_536_000),
    "max_queue": (1, 1_000_000),
    "subscriber_backlog": (1, 1_000_000),
    "event_log_size": (0, 10_000_000),
    "event_log_seconds": (0.0, 10 * 31_536_000.0),
    "max_body_size": (1024, 1 << 30),
    "admin_max_body_size": (1024, 1 << 30),
    "demo_interval": (0.01, 86_400.0),
    "write_wait": (0.0, 600.0),
    "max_streams_per_address": (1, 1_000_000),
    "lavalink_voice_grace": (0.0, 3600.0),
    "lavalink_lease": (0.1, 600.0),
}
"""The range of each numeric setting: wider than any real use, narrower than what breaks."""


_ENV_NAMES = {
    "db": "XE_DB",
    "admin_token": "XE_ADMIN_TOKEN",
    "status_interval": "XE_STATUS_INTERVAL",
    "cache_seconds": "XE_CACHE_SECONDS",
    "max_queue": "XE_MAX_QUEUE",
    "rate_limits": "XE_RATE_LIMITS",
    "access_log": "XE_ACCESS_LOG",
    "request_metrics": "XE_REQUEST_METRICS",
    "lavalink_url": "XE_LAVALINK_URL",
    "redis_url": "XE_REDIS_URL",
    "lavalink_user_id": "XE_LAVALINK_USER_ID",
    "lavalink_voice_grace": "XE_LAVALINK_VOICE_GRACE",
    "lavalink_lease": "XE_LAVALINK_LEASE",
    "trusted_proxies": "XE_TRUSTED_PROXIES",
    "max_streams_per_address": "XE_MAX_STREAMS_PER_ADDRESS",
    "sandbox": "XE_SANDBOX",
}


def _setting_name(field: str) -> str:
    return _ENV_NAMES.get(field, field)


_ON_OFF = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(("0", "false", "no", "off"), False)
_ON_OFF_SETTINGS = ("access_log", "request_metrics", "demo", "sandbox")
"""The on/off settings: a bool as a keyword, one of :data:`_ON_OFF` in the environment."""


def _on_off(name: str, raw: str | None, default: bool) -> bool:
    """An on/off setting from the environment: exactly ``1/0/true/false/yes/no/on/off`` (any case);
    unset or empty is the default. Anything else (``flase``) stops the start instead of being on."""
    if not raw or not raw.strip():
        return default
    value = _ON_OFF.get(raw.strip().lower())
    if value is None:
        raise ConfigError(f"{name} must be one of 1/0/true/false/yes/no/on/off, not {raw[:40]!r}")
    return value


def _file_or_postgres(db: str) -> None:
    """Refuse a database setting that is neither a file path nor a PostgreSQL URL, with what to
    write instead: SQLAlchemy's ``sqlite:///x.db`` is the file ``x.db``; ``:memory:`` is no file."""
    if db in ("", ":memory:"):
        raise ConfigError(
            f"{db or 'an empty name'} cannot be the database (--db or XE_DB): it must be a file "
            "(for a throwaway one, a temporary file)"
        )
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", db)
    if scheme is None or scheme[1].lower() in ("postgresql", "postgres"):
        return
    if scheme[1].lower() == "sqlite" and (path := db[len("sqlite:///") :]):
        raise ConfigError(
            f"the database (--db or XE_DB) is a file path or a postgresql:// URL: for {db} write {path}"
        )
    raise ConfigError(f"the database (--db or XE_DB) is a file path or a postgresql:// URL, not {db[:60]!r}")


RATE_LIMITS: dict[str, tuple[int, float]] = {
    "mappers": (30, 10.0),
    "templates": (30, 10.0),
    "loaders_ws": (1, 1.0),
    "auth_failures": (100, 60.0),
}
"""The default limits (those of the original Xenon API), per bot token or, for ``auth_failures``,
per client address."""


def parse_rate_limits(spec: str) -> dict[str, tuple[int, float] | None]:
    """Each group's ``(hits, seconds)`` under ``spec`` (:attr:`Config.rate_limits`), or ``None``
    when off. Raises ``ConfigError`` on bad syntax."""
    table: dict[str, tuple[int, float] | None] = dict(RATE_LIMITS)
    spec = spec.strip()
    if spec.lower() == "off":
        return dict.fromkeys(table)
    for item in filter(None, (part.strip() for part in spec.split(","))):
        group, _, limit = item.partition("=")
        group, limit = group.strip(), limit.strip().lower()
        if group not in table:
            raise ConfigError(f"XE_RATE_LIMITS: unknown group {group[:40]!r} (known: {', '.join(table)})")
        if limit == "off":
            table[group] = None
            continue
        hits, _, seconds = limit.partition("/")
        try:
            parsed = (int(hits), float(seconds)) if len(hits) <= 12 else (0, 0.0)
        except ValueError:
            raise ConfigError(
                f"XE_RATE_LIMITS: {item[:60]!r} is not GROUP=HITS/SECONDS or GROUP=off"
            ) from None
        if not (1 <= parsed[0] <= _MAX_HITS and 0 < parsed[1] <= _MAX_WINDOW):
            raise ConfigError(
                f"XE_RATE_LIMITS: {item[:60]!r} needs 1 to {_MAX_HITS} hits in more than 0 and at most "
                f"{_MAX_WINDOW:g} seconds"
            )
        table[group] = parsed
    return table


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed (``XE_TRUSTED_PROXIES``): a comma list of
    addresses and CIDR networks. Empty: none, and the client address is always the socket peer."""

    def __init__(self, spec: str) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(
                    f"XE_TRUSTED_PROXIES: {item[:60]!r} is not an IP address or a CIDR network "
                    "(e.g. 127.0.0.1,10.0.0.0/8)"
                ) from None

        # Asked for every request from a proxy: an address is parsed and looked up once.
        self._trusts = functools.lru_cache(maxsize=4096)(self._trust)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: str) -> bool:
        return bool(self.networks) and self._trusts(host)

    def _trust(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # not an address ("unknown", a unix socket): never a trusted proxy
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:  # a dual-stack socket
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def settings_from_env(env: Mapping[str, str], defaults: type[Config]) -> dict[str, Any]:
    """The settings the ``XE_*`` variables of ``env`` give, as keyword arguments of ``Config``
    (``defaults``) for :meth:`Config.from_env`; a number setting that is not a number stops the start."""

    def number(name: str, kind: type[float | int], default: float) -> Any:
        raw = env.get(name)
        if not raw:
            return default
        try:
            return kind(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {raw[:40]!r}") from None

    return dict(
        db=env.get("XE_DB") or defaults.db,
        admin_token=env.get("XE_ADMIN_TOKEN") or None,
        status_interval=number("XE_STATUS_INTERVAL", float, defaults.status_interval),
        cache_seconds=number("XE_CACHE_SECONDS", int, defaults.cache_seconds),
        max_queue=number("XE_MAX_QUEUE", int, defaults.max_queue),
        rate_limits=env.get("XE_RATE_LIMITS", ""),
        access_log=_on_off("XE_ACCESS_LOG", env.get("XE_ACCESS_LOG"), defaults.access_log),
        request_metrics=_on_off(
            "XE_REQUEST_METRICS", env.get("XE_REQUEST_METRICS"), defaults.request_metrics
        ),
        redis_url=env.get("XE_REDIS_URL", "").strip(),
        redis_prefix=env.get("XE_REDIS_PREFIX") or defaults.redis_prefix,
        lavalink_url=env.get("XE_LAVALINK_URL", "").strip(),
        lavalink_password=env.get("XE_LAVALINK_PASSWORD") or defaults.lavalink_password,
        lavalink_user_id=env.get("XE_LAVALINK_USER_ID", "").strip(),
        lavalink_search_prefix=env.get("XE_LAVALINK_SEARCH_PREFIX") or defaults.lavalink_search_prefix,
        lavalink_voice_grace=number("XE_LAVALINK_VOICE_GRACE", float, defaults.lavalink_voice_grace),
        lavalink_lease=number("XE_LAVALINK_LEASE", float, defaults.lavalink_lease),
        trusted_proxies=env.get("XE_TRUSTED_PROXIES", ""),
        max_streams_per_address=number("XE_MAX_STREAMS_PER_ADDRESS", int, defaults.max_streams_per_address),
        sandbox=_on_off("XE_SANDBOX", env.get("XE_SANDBOX"), defaults.sandbox),
    )


def check_settings(config: Config) -> None:
    """Refuse a setting of ``config`` that cannot work (:meth:`Config.check`)."""
    for field, (low, high) in _SETTING_BOUNDS.items():
        value = getattr(config, field)
        kind = int if isinstance(low, int) else float
        if isinstance(value, bool) or not isinstance(value, int | float if kind is float else int):
            raise ConfigError(f"{_setting_name(field)} must be a{'n integer' if kind is int else ' number'}")
        if not low <= value <= high:  # nan fails both comparisons
            raise ConfigError(f"{_setting_name(field)} must be between {low} and {high}, not {value}")
    for field in _ON_OFF_SETTINGS:
        if not isinstance(value := getattr(config, field), bool):
            raise ConfigError(f"{_setting_name(field)} must be True or False, not {value!r:.40}")
    _file_or_postgres(config.db)
    for field in ("xenon_prefix", "elixir_prefix", "admin_prefix", "health_path"):
        if not getattr(config, field).startswith("/"):
            raise ConfigError(f"{field} must start with /")
    if config.sandbox and config.redis_url:  # (its limits would live in Redis, on Redis's clock)
        raise ConfigError(
            "the sandbox is one process: its clock, faults, record and reset are that process's, "
            "and it would speak for a fleet on that Redis; unset XE_REDIS_URL (from Python: redis_url=None)"
        )
    if config.redis_url and not re.fullmatch(r"(rediss?|unix)://\S+", config.redis_url):
        raise ConfigError(f"XE_REDIS_URL must be redis://host:port/db, not {config.redis_url[:60]!r}")
    if config.lavalink_url and not re.fullmatch(r"https?://[^\s/?#]+/?", config.lavalink_url):
        raise ConfigError(f"XE_LAVALINK_URL must be http(s)://host:port, not {config.lavalink_url[:60]!r}")
    if config.lavalink_user_id and not re.fullmatch(r"[0-9]{15,20}", config.lavalink_user_id):
        raise ConfigError("XE_LAVALINK_USER_ID must be a Discord user id (15-20 digits)")
    config.proxies  # noqa: B018 (parsed here, so a bad one stops the start)
    parse_rate_limits(config.rate_limits)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything an app instance needs; each field has an ``XE_*`` variable or a default."""

    db: str = "./xenon_elixir.db"
    """Where the data lives (``XE_DB``): a SQLite file's path (WAL mode needs a real file, not
    ``:memory:``) or a ``postgresql://`` URL; the scheme picks the store (``STORES``)."""

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

    status_interval: float = 5.0
    """Seconds between status events of one loader (``XE_STATUS_INTERVAL``); the newest status of a
    window is sent at its end."""

    cache_seconds: int = 60
    """``max-age`` of cacheable Xenon answers (``XE_CACHE_SECONDS``)."""

    rate_limits: str = ""
    """``off``, or overrides such as ``mappers=30/10,templates=off`` (``XE_RATE_LIMITS``); groups and
    defaults are in :data:`RATE_LIMITS`."""

    subscriber_backlog: int = 1000
    """Undelivered start/done events a loader subscriber may fall behind by before it is closed (1013)."""

    event_log_size: int = 10_000
    """Start/done events kept for ``?since=`` replay, at most ..."""

    event_log_seconds: float = 24 * 3600
    """... and none older than this."""

    health_path: str = "/health"
    """Path of the health check (database reachable, version)."""

    access_log: bool = True
    """One line per request on the ``xenon_elixir.access`` logger (``XE_ACCESS_LOG=0`` turns it off)."""

    demo: bool = False
    """Seed demo data, print it with ready-to-paste ``curl`` lines, and simulate a backup load
    every ``demo_interval`` seconds (``serve --demo``)."""

    demo_interval: float = 60.0
    """Seconds between the demo's simulated loads."""

    public_url: str = "http://127.0.0.1:8000"
    """Where clients reach the server, for the demo's banner (``serve`` sets it)."""

    clock: Callable[[], float] = time.time
    """Wall clock in epoch seconds. Player positions are anchored to it so they survive a restart;
    tests and simulations may pass their own."""

    monotonic: Callable[[], float] = time.monotonic
    """Clock of rate limits and status windows."""

    timers: Timers | None = None
    """Runs callbacks after a delay (track ends, status windows); ``None`` is the running event
    loop. Tests pass one that fires when they move their clock, so no test waits on real time."""

    resolver: Callable[[CatalogStore], Resolver] | None = None
    """Builds the query resolver from the catalog; ``None`` means the local catalog (:class:`CatalogResolver`)."""

    limiter: Callable[[Config], Limiter] | None = None
    """Builds the rate limiter; ``None`` means the in-process one (:class:`LocalLimiter`)."""

    broker: Callable[[Config], Broker] | None = None
    """Builds the fan-out of hub events between processes; ``None`` means this process only."""

    max_queue: int = 1000
    """Tracks that may wait in a guild's queue (``XE_MAX_QUEUE``); a play that would pass it is refused whole."""

    write_wait: float = 5.0
    """Seconds a write waits for another process's lock on the file before it is refused with 503."""

    request_metrics: bool = True
    """Count and time every request for ``/metrics`` (``XE_REQUEST_METRICS=0`` turns it off: about
    2 µs a request; the other figures of ``/metrics`` stay)."""

    redis_url: str = ""
    """Redis (``XE_REDIS_URL``, e.g. ``redis://127.0.0.1:6379/0``) through which every process
    serving the database coordinates: events, rate limits, status windows. Empty: one process."""

    redis_prefix: str = "xe:"
    """What every key this app keeps in Redis starts with (``XE_REDIS_PREFIX``)."""

    lavalink_url: str = ""
    """A Lavalink v4 node (``XE_LAVALINK_URL``, e.g. ``http://127.0.0.1:2333``): it resolves play
    queries and plays what the players say. Empty: the local catalog and the simulated clock."""

    lavalink_password: str = "youshallnotpass"
    """The node's password (``XE_LAVALINK_PASSWORD``)."""

    lavalink_user_id: str = ""
    """The bot's Discord user id the node's websocket is opened as (``XE_LAVALINK_USER_ID``); when
    empty, the embedding bot gives it once it knows it (:meth:`Host.lavalink_connect`)."""

    lavalink_search_prefix: str = "ytsearch:"
    """What a search query is prefixed with for the node (``XE_LAVALINK_SEARCH_PREFIX``)."""

    lavalink_voice_grace: float = 5.0
    """Seconds the node may report a guild's voice as not connected before it counts as lost
    (``XE_LAVALINK_VOICE_GRACE``): Discord voice reconnects by itself after short drops."""

    lavalink_lease: float = 5.0
    """With ``XE_REDIS_URL``: seconds the process holding the node's websocket session keeps it
    without renewing (``XE_LAVALINK_LEASE``); another process takes it over that long after the
    holder dies."""

    trusted_proxies: str = ""
    """The reverse proxies in front of the app (``XE_TRUSTED_PROXIES``, ``serve --trusted-proxies``):
    a comma list of addresses and CIDR networks, e.g. ``127.0.0.1,10.0.0.0/8``. A request from one of
    them is from the rightmost ``X-Forwarded-For`` hop that is not one of them. Empty: the client
    address (``auth_failures``, the stream bound, the access log) is the socket peer, whatever the
    headers say."""

    max_streams_per_address: int = 64
    """Unauthenticated streams (the player stream, which the now-playing page follows) one client
    address may hold open at once in this process (``XE_MAX_STREAMS_PER_ADDRESS``); the next is
    accepted and closed at once with 4029."""

    sandbox: bool = False
    """Serve as the sandbox a bot developer tests against (``XE_SANDBOX=1``, ``xenon-elixir
    sandbox``): the demo data under fixed credentials, faults, a clock tests move, a record of
    requests (section 26). Its fixed settings give way to any given explicitly."""

    @functools.cached_property
    def proxies(self) -> TrustedProxies:
        """:attr:`trusted_proxies`, parsed once."""
        return TrustedProxies(self.trusted_proxies)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """The settings of ``environ`` (by default the process's environment), defaults for the rest."""
        return cls(**settings_from_env(os.environ if environ is None else environ, cls))

    def check(self) -> Config:
        """Refuse a setting that cannot work (``inf``, ``nan``, negative, absurdly large, an unknown
        group) with a :class:`ConfigError` that names it, before anything starts."""
        check_settings(self)
        return self

    def rate_limit_table(self) -> dict[str, tuple[int, float] | None]:
        """Each group's ``(hits, seconds)``, or ``None`` when off. Raises ``ConfigError`` on bad syntax."""
        return parse_rate_limits(self.rate_limits)


class Cancellable(Protocol):
    def cancel(self) -> object: ...


class Timers(Protocol):
    """Where delayed work is scheduled (see :attr:`Config.timers`)."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable: ...


class LoopTimers:
    """The running event loop's timers."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable:
        return asyncio.get_running_loop().call_later(max(delay, 0.0), callback)


def backing_off(failures: int) -> float:
    """Seconds to wait before trying again after ``failures`` failures in a row: 0.2, 0.4, ...
    up to 2 s, however many (``2 ** failures`` alone overflows a float after 1,024, a half hour
    of an outage)."""
    return min(0.1 * 2 ** min(failures, 5), 2.0)


# ---------------------------------------------------------------------------
# 2. Wire models: the bodies of both APIs and the host API
# ---------------------------------------------------------------------------

_UINT64_END = 1 << 64


def _decimal_below(bound: int, *, shortest: int) -> str:
    """A regular expression of the decimal numbers of at least ``shortest`` digits, with no
    leading zero, below ``bound``: the shorter lengths, then digit by digit up to ``bound - 1``.
    Both the parser and the OpenAPI document use it, so they cannot disagree."""
    top = str(bound - 1)
    parts = [f"[1-9][0-9]{{{shortest - 1},{len(top) - 2}}}"]
    for i, digit in enumerate(top[:-1]):
        low = 1 if i == 0 else 0
        if int(digit) > low:
            parts.append(f"{top[:i]}[{low}-{int(digit) - 1}][0-9]{{{len(top) - i - 1}}}")
    parts.append(f"{top[:-1]}[0-{top[-1]}]")
    return "^(?:" + "|".join(parts) + ")$"


SNOWFLAKE_PATTERN = _decimal_below(_UINT64_END, shortest=15)
"""Exactly what :func:`snowflake` takes as a string: 15-20 digits, no leading zero, below 2**64."""
_SNOWFLAKE = re.compile(SNOWFLAKE_PATTERN.removeprefix("^").removesuffix("$"))


def snowflake(value: object, field: str) -> str:
    """Return ``value`` as a snowflake string, or raise ``ValueError`` naming ``field``.

    Discord ids are unsigned 64-bit integers written with 15-20 digits; they arrive as JSON
    strings or integers and always leave as strings.
    """
    if type(value) is int and 0 < value < _UINT64_END:  # checked first: str() of a huge int raises
        value = str(value)
    if isinstance(value, str) and _SNOWFLAKE.fullmatch(value):
        return value
    raise ValueError(f"Invalid {field}: expected a snowflake id (15-20 digits)")


# --- What the OpenAPI document says about inputs. Litestar copies ``Parameter(...)``/``schema_extra``
# into the schema, msgspec ignores it (decoding and the __post_init__ checks stay as they are).
# Litestar drops msgspec.Meta constraints on union members (``str | int``), hence schema_extra.
_SNOWFLAKE_SCHEMA = {
    "oneOf": [
        {"type": "string", "pattern": SNOWFLAKE_PATTERN},
        {"type": "integer", "minimum": 10**14, "maximum": 2**64 - 1},
    ]
}
_NULLABLE_SNOWFLAKE_SCHEMA = {"oneOf": [*_SNOWFLAKE_SCHEMA["oneOf"], {"type": "null"}]}
# Python's whitespace (str.isspace, re's \s) spelled out: \s/\S mean less in ECMA-262, the dialect
# of OpenAPI patterns (no \x1c-\x1f, no \x85), and schemathesis generates by ECMA rules.
_PY_SPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NOT_BLANK = f"[^{_PY_SPACE}]"
_HTTP_URL_PATTERN = f"^[Hh][Tt][Tt][Pp][Ss]?://[^{_PY_SPACE}/?#]+[^{_PY_SPACE}]*$"
_TEMPLATE_ID_PATTERN = r"^[A-Za-z0-9]{12}$"
_BACKUP_ID_PATTERN = r"^[0-9A-Za-z]{1,32}$"


def _nullable(pattern: str) -> ParameterKwarg:
    return Parameter(schema_extra={"oneOf": [{"type": "string", "pattern": pattern}, {"type": "null"}]})


def _text(shortest: int, longest: int, *, not_blank: bool = False) -> ParameterKwarg:
    extra: dict[str, Any] = {"type": "string", "minLength": shortest, "maxLength": longest}
    if not_blank:
        extra["pattern"] = _NOT_BLANK
    return Parameter(schema_extra=extra)


SnowflakeIn = Annotated[str | int, Parameter(schema_extra=_SNOWFLAKE_SCHEMA)]
"""A snowflake as it may arrive: checked and turned into ``str`` by :func:`snowflake`."""
SnowflakeOrNull = Annotated[str | int | None, Parameter(schema_extra=_NULLABLE_SNOWFLAKE_SCHEMA)]
SNOWFLAKE_SAYS = "A Discord id (a snowflake): 15-20 digits, no leading zero, below 2^64"
"""What the OpenAPI document says of a snowflake, beside the pattern that checks it."""
SnowflakePath = Annotated[
    str, PathParameter(description=SNOWFLAKE_SAYS, schema_extra={"pattern": SNOWFLAKE_PATTERN})
]
TemplateIdPath = Annotated[
    str,
    PathParameter(
        description="A template's id: 12 letters and digits",
        schema_extra={"pattern": _TEMPLATE_ID_PATTERN},
    ),
]

_HTTP_URL = re.compile(r"https?://[^\s/?#]+[^\s]*", re.IGNORECASE)
_SOURCE = re.compile(r"[a-z0-9_-]{1,32}")
_ENCODED = re.compile(r"[A-Za-z0-9+/=]{1,20000}")


class Track(msgspec.Struct, kw_only=True, gc=False):
    """A playable track as the catalog stores it and resolvers return it (``length`` in ms).

    Untracked by the cycle collector (it holds only strings, numbers and booleans, so it can
    be in no cycle): queues hold many, and a full collection would walk every one.
    """

    source: Annotated[str, Parameter(schema_extra={"pattern": r"^[a-z0-9_-]{1,32}$"})]
    identifier: Annotated[str, _text(1, 300)]
    title: Annotated[str, _text(1, 500)]
    author: Annotated[str, _text(0, 500)]
    length: Annotated[int, Parameter(ge=0, lt=10**12)]
    uri: Annotated[str, Parameter(schema_extra={"pattern": _HTTP_URL_PATTERN})]
    thumbnail: Annotated[str | None, _nullable(_HTTP_URL_PATTERN)] = None
    is_stream: bool = False
    encoded: Annotated[str | None, _nullable(r"^[A-Za-z0-9+/=]{1,20000}$")] = None
    """The track as a Lavalink node encodes it (what its player is given), when one resolved it."""

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
        if self.encoded is not None and not _ENCODED.fullmatch(self.encoded):
            raise ValueError("Invalid encoded: expected a base64 Lavalink track of at most 20000 characters")


class Playlist(msgspec.Struct, kw_only=True):
    """A named, ordered list of catalog tracks of one source, found by ``(source, identifier)``."""

    source: Annotated[str, Parameter(schema_extra={"pattern": r"^[a-z0-9_-]{1,32}$"})]
    identifier: Annotated[str, _text(1, 300)]
    name: Annotated[str, _text(1, 500)]
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
    name: Annotated[str, _text(1, 100)]
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

    user: SnowflakeIn | msgspec.UnsetType | None = msgspec.UNSET
    user_alias: SnowflakeIn | msgspec.UnsetType = msgspec.field(default=msgspec.UNSET, name="user.id")
    channel: SnowflakeIn | msgspec.UnsetType | None = msgspec.UNSET
    channel_alias: SnowflakeIn | msgspec.UnsetType = msgspec.field(default=msgspec.UNSET, name="channel.id")
    volume: Any = None
    """Checked by the volume route: a JSON integer or a digit string, 0-100."""
    query: str | None = None

    def __post_init__(self) -> None:
        # Every user id given is checked (null is no id; absent is what the alias may fill), and
        # `user` wins over `user.id`. The channel is checked only by join, the route that reads it:
        # elsewhere it is a key like any other, and unknown keys are ignored.
        if self.user is None:
            raise ValueError("Invalid user: expected a snowflake id (15-20 digits)")
        if self.user_alias is not msgspec.UNSET:
            self.user_alias = snowflake(self.user_alias, "user.id")
        if self.user is not msgspec.UNSET:
            self.user = snowflake(self.user, "user")
        elif self.user_alias is not msgspec.UNSET:
            self.user = self.user_alias
        else:
            self.user = None

    def channel_id(self) -> str | None:
        """The join's channel (``channel`` wins over ``channel.id``); ``ValueError`` if one is not an id."""
        given = ((self.channel, "channel"), (self.channel_alias, "channel.id"))
        checked = [snowflake(value, field) for value, field in given if value is not msgspec.UNSET]
        return checked[0] if checked else None


class ElixirUserBody(msgspec.Struct, kw_only=True):
    """Documentation only (bodies are decoded as :class:`ElixirBody`): ``user`` or ``user.id``."""

    user: SnowflakeIn | msgspec.UnsetType = msgspec.UNSET
    user_alias: SnowflakeIn | msgspec.UnsetType = msgspec.field(default=msgspec.UNSET, name="user.id")


class ElixirJoinBody(ElixirUserBody, kw_only=True):
    channel: SnowflakeIn | msgspec.UnsetType = msgspec.UNSET
    channel_alias: SnowflakeIn | msgspec.UnsetType = msgspec.field(default=msgspec.UNSET, name="channel.id")


class ElixirVolumeBody(ElixirUserBody, kw_only=True):
    volume: Annotated[
        int | str,
        Parameter(
            schema_extra={
                "oneOf": [
                    {"type": "integer", "minimum": 0, "maximum": 100},
                    {"type": "string", "pattern": r"^0*(?:100|[1-9]?[0-9])$"},
                ]
            }
        ),
    ]


class ElixirPlayBody(ElixirUserBody, kw_only=True):
    query: Annotated[str, _text(1, 500, not_blank=True)]


class ElixirTrack(msgspec.Struct, kw_only=True):
    """A track as the Elixir API shows it (field order as in the seed's samples)."""

    title: str
    author: str
    duration: int
    formatted_duration: str = msgspec.field(name="formattedDuration")
    uri: str
    thumbnail: str | None
    position: int
    is_stream: bool = msgspec.field(name="isStream")
    identifier: str
    requested_by: str = msgspec.field(name="requestedBy")


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


_TEMPLATE_ID = re.compile(r"[A-Za-z0-9]{12}")
_BACKUP_ID = re.compile(r"[0-9a-z]{1,32}")


def valid_backup_id(value: str) -> str:
    """A backup id: 1-32 letters or digits, case-insensitive (kept lowercase). Generated ids are
    10 base36 characters; legacy Xenon ids were 16, and bots pass guild ids as backups."""
    value = value.lower()
    if not value.isascii() or not _BACKUP_ID.fullmatch(value):
        raise ValueError("Invalid backup: expected 1-32 letters or digits")
    return value


def valid_template_id(value: str) -> str:
    """A template id: 12 characters of A-Z, a-z and 0-9, case-sensitive."""
    if not _TEMPLATE_ID.fullmatch(value):
        raise ValueError("Invalid template id: expected 12 characters of A-Z, a-z and 0-9")
    return value


def _name(value: str, field: str, longest: int = 100) -> str:
    if not 0 < len(value) <= longest or not value.strip():
        raise ValueError(f"Invalid {field}: expected 1-{longest} characters")
    return value


class Bot(msgspec.Struct):
    """A partner bot: its id and name. Its token is never kept, only its hash."""

    id: str
    name: str


class BotIn(msgspec.Struct, kw_only=True):
    id: SnowflakeIn
    name: Annotated[str, _text(1, 100, not_blank=True)]

    def __post_init__(self) -> None:
        self.id = snowflake(self.id, "bot id")
        _name(self.name, "name")


class BotOut(msgspec.Struct):
    id: str
    name: str
    token: str


class Template(msgspec.Struct):
    """A template's details page data."""

    id: str
    name: str
    source_id: str
    creator_id: str
    bots: list[Bot] = []


class BackupIn(msgspec.Struct, kw_only=True):
    """What makes a backup: its id (``None``: one is generated), the guild it was made from, and
    who made it."""

    id: Annotated[str | None, _nullable(_BACKUP_ID_PATTERN)] = None
    source_id: SnowflakeIn
    creator_id: SnowflakeIn

    @staticmethod
    def checked_id(value: str) -> str:
        return valid_backup_id(value)

    def __post_init__(self) -> None:
        if self.id is not None:
            self.id = self.checked_id(self.id)
        self.source_id = snowflake(self.source_id, "source_id")
        self.creator_id = snowflake(self.creator_id, "creator_id")


class TemplateIn(BackupIn, kw_only=True):
    """What makes a template: a backup's fields, a template id, and a name."""

    id: Annotated[str | None, _nullable(_TEMPLATE_ID_PATTERN)] = None
    name: Annotated[str, _text(1, 100, not_blank=True)]

    @staticmethod
    def checked_id(value: str) -> str:
        return valid_template_id(value)

    def __post_init__(self) -> None:
        super().__post_init__()
        _name(self.name, "name")


class Backup(msgspec.Struct):
    id: str
    source_id: str
    creator_id: str


class AttachBody(msgspec.Struct, kw_only=True):
    """The optional body of attach/detach: the user the bot acts for, who must be the creator."""

    user: SnowflakeOrNull = None

    def __post_init__(self) -> None:
        if self.user is not None:
            self.user = snowflake(self.user, "user")


class TemplateBots(msgspec.Struct):
    bots: list[str]


class BotListed(msgspec.Struct):
    id: str
    name: str
    active: bool
    """Whether it has a token (a revoked bot keeps its row and its attachments)."""
    created_at: str


class KeyListed(msgspec.Struct):
    guild: str
    user: str
    created_at: str


class TemplateListed(msgspec.Struct):
    id: str
    name: str
    source_id: str
    creator_id: str
    created_at: str


class BackupListed(msgspec.Struct):
    id: str
    source_id: str
    creator_id: str
    created_at: str


class LoaderListed(msgspec.Struct):
    target_id: str
    type: str
    source_id: str
    backup_id: str | msgspec.UnsetType = msgspec.UNSET
    template_id: str | msgspec.UnsetType = msgspec.UNSET
    user_id: str | msgspec.UnsetType = msgspec.UNSET
    started_at: str = ""


class Page(msgspec.Struct, Generic[T]):
    """One page of a listing, in id order; ``next`` is the ``after`` of the next page (``null``: none)."""

    items: list[T]
    next: str | None = None


class LoaderData(msgspec.Struct):
    """The ``data`` of a loader event; what does not apply or is not known is left out."""

    id: str
    type: str | msgspec.UnsetType = msgspec.UNSET
    source_id: str | msgspec.UnsetType = msgspec.UNSET
    backup_id: str | msgspec.UnsetType = msgspec.UNSET
    template_id: str | msgspec.UnsetType = msgspec.UNSET
    user_id: str | msgspec.UnsetType = msgspec.UNSET
    status: str | msgspec.UnsetType = msgspec.UNSET
    ok: bool | msgspec.UnsetType = msgspec.UNSET


class LoaderEvent(msgspec.Struct):
    """One message of ``WS /api/loaders/ws``."""

    event: str
    seq: int
    data: LoaderData


STATUS_FRAME = '{"event":"status"'
"""How the frame of a status event begins (its fields are encoded in order): the log holds
statuses too, and replay leaves them out by this."""


class StatusIn(msgspec.Struct):
    status: Annotated[str, _text(1, 200, not_blank=True)]

    def __post_init__(self) -> None:
        _name(self.status, "status", 200)


class IdsIn(msgspec.Struct):
    ids: Annotated[
        dict[str, str | int],
        Parameter(
            schema_extra={
                "type": "object",
                "propertyNames": {"pattern": SNOWFLAKE_PATTERN},
                "additionalProperties": _SNOWFLAKE_SCHEMA,
            }
        ),
    ]

    def __post_init__(self) -> None:
        self.ids = {snowflake(old, "old id"): snowflake(new, "new id") for old, new in self.ids.items()}


class DoneIn(msgspec.Struct):
    ok: bool = True


class PlayerState(msgspec.Struct):
    """A player's state as its followers get it (``WS {elixir}/{guild}/player``, hub topic
    ``player:<guild id>``), on connect and at every change, a track's end included. ``track`` is
    the current one at its live position when the frame was made (``null`` when nothing plays),
    ``queue`` the first 25 waiting, ``queued`` how many wait; ``channel`` is ``null`` when
    Elixir is not connected."""

    seq: int
    guild: str
    channel: str | None
    volume: int
    paused: bool
    track: ElixirTrack | None
    queue: list[ElixirTrack]
    queued: int


class Health(msgspec.Struct, omit_defaults=True):
    status: str
    version: str
    database: str
    subscribers: int
    """Clients connected to the loader event stream (of this process)."""
    redis: str | None = None
    """``ok`` or ``unreachable`` with ``XE_REDIS_URL``; absent without."""


class XenonErrorBody(msgspec.Struct):
    error: str
    retry_after: float | msgspec.UnsetType = msgspec.UNSET


class ElixirErrorBody(msgspec.Struct):
    timestamp: int
    message: str
    retry_after: float | msgspec.UnsetType = msgspec.UNSET


# ---------------------------------------------------------------------------
# 3. Errors: domain refusals and the two APIs' error shapes
# ---------------------------------------------------------------------------


class DomainError(Exception):
    """A refusal by the rules or the storage, in no API's terms: each API maps its ``reason`` to a
    status and a message in one table (:data:`ELIXIR_ERRORS`, :data:`XENON_ERRORS`); a reason
    that is not in the table gets the kind's own status and this message."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message or reason


class NotFound(DomainError):
    """Something named does not exist (a backup, a template, a running loader, ...)."""


class Conflict(DomainError):
    """The change conflicts with what exists (a second key, a loader already running, ...)."""


class Invalid(DomainError, ValueError):
    """The request cannot be carried out as asked (bad input, a player not connected, a full queue)."""


class Forbidden(DomainError):
    """The acting user may not do this."""


class Unchanged(DomainError):
    """Nothing to change after all (a track's end another process already advanced)."""


class Unavailable(DomainError):
    """A backend cannot serve now (the database locked by another process, gone or failing; Redis
    away): retrying can help, so it is a 503 with ``Retry-After``, never a 500."""

    def __init__(
        self, message: str = "Service unavailable: the database is busy; try again shortly."
    ) -> None:
        super().__init__("unavailable", message)


NODE_AWAY = "Service unavailable: the audio node (Lavalink) cannot be reached; try again shortly."
LOCKED = "Service unavailable: the database is locked by another process; try again shortly."
UNAVAILABLE_RETRY_AFTER = 1
"""Seconds a client is told to wait after a 503: a lock held by another process is usually short."""

NOT_AUTHORIZED = "Request not authorized."
RATE_LIMITED = "You got ratelimited"
NO_BODY = "No body provided."
NOT_CONNECTED = "Elixir isn't connected to a voice channel."
NOTHING_PLAYING = "No track is currently playing."
QUEUE_FULL = "The queue is full."
TOO_MANY_STREAMS = "Too many open streams from this address (at most {} at once)."

_KIND_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    Invalid: 400,
    Forbidden: 403,
    Unavailable: 503,
}

ELIXIR_ERRORS: dict[str, tuple[int, str]] = {
    "guild": (400, "Guild not found."),
    "voice channel": (400, "Voice channel not found."),
    "not connected": (400, NOT_CONNECTED),
    "nothing playing": (410, NOTHING_PLAYING),
    "no track": (404, "No track found."),
    "queue full": (400, QUEUE_FULL),
}
"""The Elixir API's status and message for each reason (the original's texts)."""

XENON_ERRORS: dict[str, tuple[int, str]] = {
    "backup": (404, "Unknown backup"),
    "mapper": (404, "No id translator found"),
    "template": (404, "Unknown template"),
    "not the creator": (403, "User is not the creator"),
}
"""The Xenon (and admin) API's status and message for each reason (the original's texts)."""


class ApiError(Exception):
    """A refusal with a status and a message, as a door (HTTP, the host API, the CLI) gives it.
    Plain ``ApiError`` takes the error shape of the API the request came in by; the subclasses
    fix the shape."""

    shape: ClassVar[str | None] = None

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers or {}
        self.retry_after = retry_after
        """Seconds until a rate-limited request would be admitted (sent as ms in the body)."""

    @classmethod
    def of(cls, error: DomainError, api: str) -> ApiError:
        """The answer of ``api`` (``"elixir"``, else Xenon's and the admin's) to a domain refusal."""
        table = ELIXIR_ERRORS if api == "elixir" else XENON_ERRORS
        status, message = table.get(error.reason) or (_KIND_STATUS.get(type(error), 400), error.message)
        if isinstance(error, Unavailable):
            return cls(503, message, headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})
        return cls(status, message)


class XenonError(ApiError):
    """An error of the Xenon or admin API: ``{"error": message}``."""

    shape = "xenon"


class ElixirError(ApiError):
    """An error of the Elixir API: ``{"timestamp": ms, "message": message}``."""

    shape = "elixir"


# What the stores refuse with, in the words of the APIs (a rule that must hold inside one
# transaction is kept by its storage area, section 8; its words are here).


def key_exists() -> Conflict:
    return Conflict("key exists", "A key already exists for this guild and user; rotate it to get a new one")


def id_taken(what: str, given: str | None) -> Conflict:
    return Conflict("exists", f"{what} {given} already exists")


def loader_running(target_id: str | int) -> Conflict:
    return Conflict("loader running", f"A loader is already running on guild {target_id}")


def no_loader(target_id: str | int) -> NotFound:
    return NotFound("loader", f"No loader is running on guild {target_id}")


def unknown_track(playlist: Playlist, identifier: str) -> Invalid:
    return Invalid(
        "unknown track", f"Playlist {playlist.identifier}: unknown track {playlist.source}/{identifier}"
    )


# ---------------------------------------------------------------------------
# 4. Domain: loaders, mappers, players (pure, no I/O)
# ---------------------------------------------------------------------------


class Loader(msgspec.Struct, kw_only=True):
    """One backup or template being loaded into a target guild (the admin API's body too)."""

    target_id: SnowflakeIn
    type: Annotated[str, Parameter(schema_extra={"enum": ["backup", "template"]})]
    source_id: SnowflakeIn
    backup_id: Annotated[str | None, _nullable(_BACKUP_ID_PATTERN)] = None
    template_id: Annotated[str | None, _nullable(_TEMPLATE_ID_PATTERN)] = None
    user_id: SnowflakeOrNull = None

    def __post_init__(self) -> None:
        if self.type not in ("backup", "template"):
            raise ValueError('Invalid type: expected "backup" or "template"')
        self.target_id = snowflake(self.target_id, "target_id")
        self.source_id = snowflake(self.source_id, "source_id")
        if self.backup_id is not None:
            self.backup_id = valid_backup_id(self.backup_id)
        if self.template_id is not None:
            self.template_id = valid_template_id(self.template_id)
        if self.user_id is not None:
            self.user_id = snowflake(self.user_id, "user_id")

    def data(self, **extra: Any) -> LoaderData:
        """What its events say of it; what does not apply or is not known is left out."""

        def known(value: str | int | None) -> Any:
            return msgspec.UNSET if value is None else str(value)

        return LoaderData(
            id=str(self.target_id),
            type=self.type,
            source_id=str(self.source_id),
            backup_id=known(self.backup_id) if self.type == "backup" else msgspec.UNSET,
            template_id=known(self.template_id) if self.type == "template" else msgspec.UNSET,
            user_id=known(self.user_id),
            **extra,
        )


class Mapper(msgspec.Struct):
    """Old ids of a source guild to new ids of a target guild, accumulated over every load."""

    source_id: str
    target_id: str
    ids: dict[str, str]
    loaders: list[str] | msgspec.UnsetType = msgspec.UNSET


def mapper_ids(source_id: str, target_id: str, ids: Mapping[str, str]) -> dict[str, str]:
    """The ids a load adds to a mapper: the source guild always maps to the target guild (the
    @everyone role has the guild's id), then the load's own."""
    return {source_id: target_id, **{old: new for old, new in ids.items() if old != source_id}}


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


class QueueEntry(msgspec.Struct, gc=False):
    """A track in a guild's queue. Untracked by the cycle collector, like :class:`Track`: a
    queue's length must not lengthen the collector's pauses."""

    entry_id: int
    track: Track
    requested_by: str
    shown: ElixirTrack | None = None
    """How a follower's frame shows it while it waits (made once: frames of one change after
    another repeat 24 of their 25 waiting tracks)."""

    def waiting(self) -> ElixirTrack:
        if self.shown is None:
            self.shown = elixir_track(self.track, self.requested_by)
        return self.shown


@dataclasses.dataclass(slots=True, eq=False)
class Player:
    """A guild's music player. Its clock is derived, never ticked: the head of ``queue`` is at
    ``position`` ms at clock time ``anchor`` and advances in real time unless ``paused``.

    ``queue`` may hold only the front of a long queue: ``more`` entries follow it. A change
    counts what it does for the store to write: entries dropped from the front, entries appended.
    """

    guild_id: str
    channel_id: str
    volume: int = 100
    paused: bool = False
    position: float = 0.0
    anchor: float = 0.0
    queue: deque[QueueEntry] = dataclasses.field(default_factory=deque)
    more: int = 0
    """Entries after the ones in ``queue``, not loaded."""
    dropped: int = 0
    """Entries this change took from the front of the queue."""
    appended: list[QueueEntry] = dataclasses.field(default_factory=list)
    """Entries this change added at the end (their ids are given when written)."""

    @property
    def current(self) -> QueueEntry | None:
        return self.queue[0] if self.queue else None

    @property
    def size(self) -> int:
        """Entries in the queue, the current one included."""
        return len(self.queue) + self.more

    @property
    def voice_lost(self) -> bool:
        """The audio backend lost the voice connection: the track is held where audio stopped
        (the stored channel is empty) until fresh voice brings it back."""
        return not self.channel_id

    @property
    def held(self) -> bool:
        """The clock stands still: paused by a user, or the voice connection lost."""
        return self.paused or not self.channel_id

    @property
    def ends_at(self) -> float | None:
        """The clock time the current track ends, or ``None`` while nothing will end by itself."""
        entry = self.current
        if entry is None or self.held or entry.track.is_stream:
            return None
        return self.anchor + (entry.track.length - self.position) / 1000

    def position_at(self, now: float) -> float:
        return self.position if self.held else self.position + (now - self.anchor) * 1000

    def settle(self, now: float) -> None:
        """Drop the tracks that ended before ``now``; each next one starts where the last ended.

        A pure function of the stored state and the clock, so a restarted server settles the
        same way and every process answers alike, whether or not the end was written yet.
        """
        while (ends := self.ends_at) is not None and now >= ends:  # the very sum the schedule uses
            self.anchor, self.position = ends, 0.0
            self._drop()

    def settled(self, now: float) -> Player:
        """This player settled to ``now``: itself when nothing ended, else a settled copy (a
        remembered player is shared by every request, so a read never changes it)."""
        ends = self.ends_at
        if ends is None or now < ends:
            return self
        copy = dataclasses.replace(self, queue=deque(self.queue), dropped=0, appended=[])
        copy.settle(now)
        return copy

    def _drop(self) -> None:
        entry = self.queue.popleft()
        if self.appended and self.appended[0] is entry:  # appended by a change not yet written:
            del self.appended[0]  # it is never written (a store that groups changes drops first)
        else:
            self.dropped += 1

    def restart_clock(self, now: float) -> None:
        """The head (if any) starts from its beginning now."""
        self.position, self.anchor = 0.0, now

    # The changes a request asks for: pure, checked here, written by the store.

    def join(self, channel_id: str, now: float) -> None:
        """Move to a channel, keeping the queue (a track held by a lost voice connection plays on
        from where it stopped)."""
        if self.voice_lost:
            self.anchor = now
        self.channel_id = channel_id

    def lose_voice(self, now: float) -> bool:
        """Hold the track where audio stopped, keeping the queue; ``False`` when it already was."""
        if self.voice_lost:
            return False
        self.position, self.anchor, self.channel_id = self.position_at(now), now, ""
        return True

    def set_volume(self, volume: int) -> None:
        self.volume = volume

    def enqueue(self, tracks: Sequence[Track], requested_by: str, now: float, max_queue: int) -> None:
        """Append tracks; an idle player starts the first of them now. A play that would leave
        more than ``max_queue`` tracks waiting is refused whole."""
        if max(self.size - 1, 0) + len(tracks) - (not self.size) > max_queue:
            raise Invalid("queue full", QUEUE_FULL)
        if not self.size:
            self.restart_clock(now)
            self.paused = False
        entries = [QueueEntry(0, track, requested_by) for track in tracks]
        self.appended += entries
        if not self.more:  # the loaded front reaches the end: keep it whole
            self.queue.extend(entries)
        else:
            self.more += len(entries)

    def skip(self, now: float) -> None:
        if not self.queue:
            raise NotFound("nothing playing", NOTHING_PLAYING)
        self._drop()
        self.restart_clock(now)

    def pause(self, now: float) -> bool:
        """Freeze the position; ``False`` when it already was."""
        if self.paused:
            return False
        self.position, self.anchor, self.paused = self.position_at(now), now, True
        return True

    def resume(self, now: float) -> bool:
        if not self.paused:
            return False
        self.anchor, self.paused = now, False
        return True

    def state(self, now: float, seq: int = 0, shown: int = 25) -> PlayerState:
        """What a follower sees: the current track at its live position, the first ``shown`` waiting."""
        entry = self.current
        track = (
            None if entry is None else elixir_track(entry.track, entry.requested_by, self.position_at(now))
        )
        waiting = [e.waiting() for e in itertools.islice(self.queue, 1, shown + 1)]
        return PlayerState(
            seq,
            self.guild_id,
            self.channel_id or None,
            self.volume,
            self.paused,
            track,
            waiting,
            max(self.size - 1, 0),
        )


def stopped_state(guild_id: str, seq: int = 0) -> PlayerState:
    """What a follower sees of a guild Elixir is not connected in."""
    return PlayerState(seq, guild_id, None, 100, False, None, [], 0)


def volume_of(value: Any) -> int:
    """A volume: a JSON integer or a digit string, 0-100. A whole number outside that range gets
    the seed's message; anything else (``45.0``, ``"4 5"``, ``true``) is told it is not one."""
    if type(value) is str and re.fullmatch(r"-?[0-9]+", value):
        # Leading zeros are fine ("045"); a long digit string is out of range before int() sees it.
        digits = value.lstrip("-").lstrip("0") or "0"
        if value.startswith("-") or len(digits) > 3:
            raise Invalid("volume", "Volume must be between 0 and 100.")
        value = int(digits)
    if type(value) is not int:
        raise Invalid("volume", "Volume must be a whole number between 0 and 100.")
    if not 0 <= value <= 100:
        raise Invalid("volume", "Volume must be between 0 and 100.")
    return value


# ---------------------------------------------------------------------------
# 5. Interfaces: the resolver, the limiter, the broker, the audio backend
# ---------------------------------------------------------------------------


class Resolver(Protocol):
    """Turns a play query into a track, a playlist's tracks, or ``None`` (nothing found).

    A resolver may refuse a query it cannot handle by raising ``ElixirError(400, message)``.
    Swap in another (a Lavalink node's ``/v4/loadtracks``, say) with ``Config.resolver``.
    """

    async def resolve(self, query: str) -> Track | list[Track] | None: ...


class Limiter(Protocol):
    """Rate limits: at most so many hits per group and key in any window of the group's length."""

    async def hit(self, group: str, key: str) -> float | None:
        """Count a hit: ``None`` if admitted, else the exact seconds until one would be."""
        ...

    def sweep(self) -> None:
        """Forget callers whose windows have passed (the app calls it now and then)."""
        ...


class Broker(Protocol):
    """Carries hub events between the processes that serve one database (the hub delivers them
    to this process's subscribers). The default carries nothing: one process."""

    async def start(self, deliver: Callable[[str, int, str], None]) -> None:
        """Begin handing events published by other processes to ``deliver(topic, seq, frame)``."""
        ...

    def publish(self, topic: str, seq: int, frame: str) -> None:
        """Send an event to the other processes (queued: publishing never waits)."""
        ...

    async def close(self) -> None: ...


class AudioBackend(Protocol):
    """An audio backend that plays what the players say (a Lavalink node): told of every
    committed change, in commit order."""

    @property
    def available(self) -> bool:
        """Whether it can play now; changes people ask for are refused (503) while it cannot."""
        ...

    def changed(self, guild_id: str, player: Player | None) -> None: ...


# ---------------------------------------------------------------------------
# 6. Metrics: GET /metrics in the Prometheus text format
# ---------------------------------------------------------------------------

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

METRICS_HELP = {
    "xe_requests_total": (
        "counter",
        "Requests answered, by route template and status (WebSocket handshakes too).",
    ),
    "xe_request_seconds": ("histogram", "Time to answer a request, by route template."),
    "xe_subscribers": ("gauge", "WebSocket followers: the loader stream and the player streams."),
    "xe_events_published_total": ("counter", "Events published to followers, by kind (loader, player)."),
    "xe_rate_limited_total": ("counter", "Requests refused by a rate limit, by group."),
    "xe_commit_seconds": ("histogram", "Time of each write transaction (a group commit counts once)."),
}


def _labels(**labels: str) -> str:
    escaped = (f'{k}="{v}"'.replace("\n", " ") for k, v in labels.items())
    return "{" + ",".join(escaped) + "}" if labels else ""


def _in_order(sample: str) -> tuple[str, float]:
    """Samples by series, a histogram's buckets by bound (``+Inf`` last)."""
    bound = re.search(r',?le="([^"]+)"', sample)
    if bound is None:
        return sample, 0.0
    return sample[: bound.start()] + sample[bound.end() :], float(bound[1].replace("+Inf", "inf"))


def _labels_sample(name: str, **labels: str) -> str:
    return name + _labels(**labels)


class Metrics:
    """This process's counters and histograms, as Prometheus samples (``name{labels}`` -> value).
    With Redis, each process keeps its samples there too (refreshed every few seconds and at
    every scrape, expiring when the process is gone) and a scrape through any process sums them
    all: one service, one set of figures."""

    def __init__(self) -> None:
        self.samples: dict[str, float] = {}
        self._histograms: dict[tuple[str, str], list[float]] = {}
        self.gauges: dict[str, Callable[[], int]] = {}
        """Sample -> a function giving its value now (this process's)."""

    def count(self, name: str, labels: str, amount: float = 1) -> None:
        key = name + labels
        self.samples[key] = self.samples.get(key, 0) + amount

    def observe(self, name: str, labels: str, seconds: float) -> None:
        counts = self._histograms.get((name, labels))
        if counts is None:
            # a count per bucket, then those above every bound, the sum and the count
            counts = self._histograms[(name, labels)] = [0.0] * (len(_LATENCY_BUCKETS) + 3)
        counts[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        counts[-2] += seconds
        counts[-1] += 1

    def request(self, counted: str, timed: tuple[str, str], seconds: float) -> None:
        """One answered request: its counter sample, and its latency series."""
        self.samples[counted] = self.samples.get(counted, 0) + 1
        counts = self._histograms.get(timed)
        if counts is None:
            counts = self._histograms[timed] = [0.0] * (len(_LATENCY_BUCKETS) + 3)
        counts[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        counts[-2] += seconds
        counts[-1] += 1

    def snapshot(self) -> dict[str, float]:
        """Every sample of this process now (histograms as cumulative buckets, sum and count)."""
        samples = dict(self.samples)
        for (name, labels), counts in self._histograms.items():
            inner = labels[1:-1] + "," if labels else ""
            running = 0.0
            for bound, count in zip((*_LATENCY_BUCKETS, "+Inf"), counts[:-2], strict=True):
                running += count
                samples[f'{name}_bucket{{{inner}le="{bound}"}}'] = running
            samples[f"{name}_sum{labels}"] = counts[-2]
            samples[f"{name}_count{labels}"] = counts[-1]
        for key, value in self.gauges.items():
            samples[key] = value()
        return samples

    @staticmethod
    def render(samples: Mapping[str, float]) -> str:
        """The Prometheus text format (version 0.0.4) of ``samples``, grouped by metric."""
        lines: list[str] = []
        for name, (kind, text) in METRICS_HELP.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for key in sorted(
                (k for k in samples if re.match(rf"{name}(?:_bucket|_sum|_count)?(?:{{|$)", k)), key=_in_order
            ):
                value = samples[key]
                lines.append(f"{key} {int(value) if value == int(value) else repr(value)}")
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# 7. Storage seam: the Database protocol, remembered answers, group commit, the tables
# ---------------------------------------------------------------------------
# A store is a :class:`Database` (SQLite or PostgreSQL, chosen by the URL's scheme: see
# ``STORES`` at the end of the PostgreSQL section). Every storage area (section 8: keys, the guild
# registry, partners, mappers, loaders, listings, and the shared half of the catalog and the
# players) is written once against it, in SQLite's dialect: ``?`` parameters, and ``rowid`` for
# the order rows came in (PostgreSQL's ``ord`` identity columns; its database rewrites both).
# A backend adds only what its engine does its own way: the catalog's search and bulk writes,
# the grouping of player changes, the staging of a load's ids.


class StoreError(Exception):
    """The database cannot be used (unreadable, locked, or from a newer version)."""


def digest(secret: str) -> str:
    """The only form in which a secret is stored or compared."""
    return hashlib.sha256(secret.encode()).hexdigest()


def iso_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


NUMBER = "UPDATE counters SET value = value + ? WHERE name = ? RETURNING value"
"""A counter moved by some, and its new value (see :meth:`Transaction.number`)."""


class Transaction(Protocol):
    """What a write's ``run`` and a snapshot's ``read`` get: statements run inside one
    transaction, answered with rows that index and unpack like tuples."""

    async def one(self, sql: str, *args: Any) -> Any:
        """The first row, or ``None``."""
        ...

    async def value(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or ``None``."""
        ...

    async def all(self, sql: str, *args: Any) -> list[Any]: ...

    async def run(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per row."""
        ...

    async def number(self, counter: str, by: int = 1) -> int:
        """Move the ``counter`` row by ``by`` and return its new value. The row stays locked to
        the commit, so numbers commit in the order they are given out, in every process."""
        ...


Tag = tuple[Any, ...]
Tags = Sequence[Tag]
"""The tags of remembered answers a write makes stale (see :class:`RememberedAnswers`)."""
Run = Callable[[Any], Awaitable[T]]
"""A transaction function: given a :class:`Transaction`, what it returns once committed."""
After = Callable[[T], None] | None
"""Told a committed write's result, on the loop, in commit order."""
Read = Callable[[], Awaitable[T]]
Keep = Callable[[T], bool]


class Database(Protocol):
    """One store, as every storage area sees it.

    ``write(run)`` runs ``run(transaction)`` in a write transaction and returns its result once
    committed. ``forgets`` are the tags of the remembered answers it may change, forgotten before
    any caller hears of the commit; ``after(result)`` runs on the loop right after the commit, in
    commit order (so events are published in their numbers' order). A ``DomainError`` or a
    ``ValueError`` raised by ``run`` refuses that write and undoes its changes; a unique
    violation is a :class:`Conflict`. A write that cannot get the store (locked past
    ``write_wait``, away, its file removed) is :class:`Unavailable`. Reads outside a write see
    every commit; ``snapshot(read)`` runs several reads on one commit's view."""

    answers: RememberedAnswers
    pause_between_chunks: float
    """Seconds a bulk write (an import) leaves the store free between its transactions."""
    catalog: ClassVar[type[CatalogStore]]
    players: ClassVar[type[PlayerStore]]
    loaders: ClassVar[type[LoaderStore]]
    """The backend's own halves of these areas."""

    async def write(self, run: Run[T], *, forgets: Tags = (), after: After[T] = None) -> T: ...

    async def one(self, sql: str, *args: Any) -> Any: ...
    async def value(self, sql: str, *args: Any) -> Any: ...
    async def all(self, sql: str, *args: Any) -> list[Any]: ...
    async def snapshot(self, read: Run[T]) -> T: ...

    async def remembered(self, tag: Tag, key: Tag, read: Read[T], keep: Keep[T] = bool) -> T:
        """``read()``'s answer, remembered under ``tag`` until a write changes what it covers."""
        ...

    async def credentials(self) -> int:
        """The ``credentials`` counter (see :data:`CREDENTIAL_TAGS`)."""
        ...

    defers_looks: bool
    """Whether a player change's own transaction checks the credentials it was asked with
    (:func:`looked_at_by_the_change`): where a look is a round trip of its own (PostgreSQL)."""

    def on_commit(self, observe: Callable[[float], None]) -> None:
        """Tell ``observe`` the seconds each write transaction takes (metrics)."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers now (the health check)."""
        ...

    async def backup_to(self, path: str) -> None: ...
    async def close(self) -> None: ...


_MISSING: Any = object()
_ANSWERS_KEPT = 1024

WATCHED_KINDS = frozenset({"player"})
"""Tags whose forgets a fleet on PostgreSQL publishes only while some process watches them
(:class:`RedisWatches`): every play forgets its guild's player, and most guilds' players no
process remembers (a follower's frames come by a stream of their own)."""

CREDENTIAL_TAGS: tuple[tuple[str], ...] = (("bots",), ("keys",))
"""The tags of remembered answers about credentials (bot tokens, Elixir keys). A write that
forgets one also moves the ``credentials`` counter in its transaction, and every use of such an
answer first looks at that counter: a revoke is refused from the next request on, in every
process, on either store, with or without Redis (SPEC §0 "Revocation is immediate")."""
CREDENTIALS = "SELECT value FROM counters WHERE name = 'credentials'"
CREDENTIALS_MOVED = (
    "INSERT INTO counters (name, value) VALUES ('credentials', 1) "
    "ON CONFLICT (name) DO UPDATE SET value = counters.value + 1"
)


def moving_credentials(run: Run[T], forgets: Tags) -> Run[T]:
    """``run``, moving the ``credentials`` counter in the same transaction when it forgets a
    credential: the one place a store's write keeps :data:`CREDENTIAL_TAGS`' promise."""
    if not any(tag in CREDENTIAL_TAGS for tag in forgets):
        return run

    async def moved(tx: Any) -> T:
        value = await run(tx)
        await tx.run(CREDENTIALS_MOVED)
        return value

    return moved


class RememberedAnswers:
    """Answers of hot reads (tokens, keys, searches, mappers, players), remembered under a tag
    until a write changes what the tag covers: a key's revoke forgets key answers, a load's done
    its mapper, a play its guild's player; an unrelated write forgets nothing. At most ``kept``
    answers, the least recently used going first; refusals are not worth memory anyone can fill."""

    def __init__(self, kept: int = _ANSWERS_KEPT) -> None:
        self.kept = kept
        self._answers: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._tags: dict[tuple[Any, ...], set[tuple[Any, ...]]] = {}
        self.credentials = 0
        """The ``credentials`` counter the remembered credentials were checked against."""
        self.forgets = 0
        """Forgets so far (of a tag, or of everything): the mark a read takes before it reads."""
        self._forgotten_at: dict[tuple[Any, ...], int] = {}
        self._cleared_at = 0
        self.reads: dict[tuple[Any, ...], ReadUnderWay] = {}
        """The reads of answers under way, by tag and key, that later askers may share."""

    def credentials_at(self, counter: int) -> None:
        """The ``credentials`` counter, just looked at: a credential changed since the last
        look (by any process) makes every remembered credential answer stale."""
        if counter != self.credentials:
            self.credentials = counter
            for tag in CREDENTIAL_TAGS:
                self.forget(tag)

    def get(self, tag: tuple[Any, ...], key: tuple[Any, ...]) -> Any:
        answer = self._answers.get((tag, key), _MISSING)
        if answer is not _MISSING:
            self._answers.move_to_end((tag, key))
        return answer

    def put(self, tag: tuple[Any, ...], key: tuple[Any, ...], answer: Any) -> None:
        self._answers[(tag, key)] = answer
        self._tags.setdefault(tag, set()).add(key)
        if len(self._answers) > self.kept:
            (old_tag, old_key), _ = self._answers.popitem(last=False)
            self._tags[old_tag].discard(old_key)
            if not self._tags[old_tag]:
                del self._tags[old_tag]

    def forget(self, tag: tuple[Any, ...]) -> None:
        self.forgets += 1
        forgotten = self._forgotten_at
        if len(forgotten) >= 4 * self.kept and tag not in forgotten:  # bounded: as if all were
            forgotten.clear()
            self._cleared_at = self.forgets
        forgotten[tag] = self.forgets
        for key in self._tags.pop(tag, ()):
            self._answers.pop((tag, key), None)

    def forget_all(self, tags: Tags) -> None:
        for tag in tags:
            self.forget(tag)

    def clear(self) -> None:
        self.forgets += 1
        self._cleared_at = self.forgets
        self._forgotten_at.clear()
        self._answers.clear()
        self._tags.clear()

    def unchanged(self, tag: tuple[Any, ...], mark: int) -> bool:
        """Whether nothing ``tag`` covers was forgotten since ``mark`` (:attr:`forgets` then): an
        answer read meanwhile may be remembered, whatever else the fleet's writes forgot."""
        return self._cleared_at <= mark and self._forgotten_at.get(tag, 0) <= mark


class ReadLeft(Exception):
    """The request whose read others shared went (cancelled) before the answer came: they ask
    again, and one of them reads."""


@dataclasses.dataclass(slots=True)
class ReadUnderWay:
    """A remembered answer's read under way, begun at ``mark`` (:attr:`RememberedAnswers.forgets`),
    ``seen`` and ``credentials``: a request that asks for the same answer meanwhile, while nothing
    it covers was forgotten since, shares it (``shared``, made by the first to share)."""

    seen: Any
    mark: int
    credentials: int
    shared: asyncio.Future[Any] | None = None

    def settle(self, answer: Any, failure: BaseException | None = None) -> None:
        if self.shared is None:
            return
        if failure is None:
            self.shared.set_result(answer)
            return
        # a failed read fails them all; a reader that went (cancelled) leaves them to ask again
        self.shared.set_exception(failure if isinstance(failure, Exception) else ReadLeft())
        self.shared.exception()  # retrieved: its sharers may all have gone


class FreshLook(Generic[T]):
    """A value read by a look that began after the caller asked, never an older one: callers
    who ask while a look is under way share the next look, so many waiting requests cost one
    query (the credentials counter on PostgreSQL, looked at before each use of a remembered
    credential)."""

    def __init__(self, look: Callable[[], Awaitable[T]]) -> None:
        self._look = look
        self._running: asyncio.Future[T] | None = None
        self._next: asyncio.Future[T] | None = None

    async def __call__(self) -> T:
        if self._running is None:
            return await asyncio.shield(self._start(None))
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._next)

    def _start(self, waiting: asyncio.Future[T] | None) -> asyncio.Future[T]:
        running = self._running = asyncio.ensure_future(self._look())
        running.add_done_callback(lambda done: self._finished(done, waiting))
        return running

    def _finished(self, done: asyncio.Future[T], waiting: asyncio.Future[T] | None) -> None:
        failure = None if done.cancelled() else done.exception()  # retrieved: no "never retrieved" log
        if waiting is not None and not waiting.done():
            if done.cancelled():
                waiting.cancel()
            elif failure is not None:
                waiting.set_exception(failure)
                waiting.exception()  # its waiters may all have gone
            else:
                waiting.set_result(done.result())
        self._running, waiting, self._next = None, self._next, None
        if waiting is not None:
            self._start(waiting)


class CredentialsMoved(Exception):
    """A player change refused because a credential changed (anywhere) since the remembered
    answer its request used was checked: the request is asked again, with a look of its own."""


@dataclasses.dataclass(slots=True)
class DeferredLook:
    """A request whose credentials look is deferred to its player change's transaction
    (:func:`looked_at_by_the_change`): the ``credentials`` counters its remembered credentials
    were checked at, and whether its change was handed to the store."""

    task: weakref.ref[asyncio.Task[Any]]
    looked_at: list[int] = dataclasses.field(default_factory=list)
    submitted: bool = False


_DEFERRED_LOOK: contextvars.ContextVar[DeferredLook | None] = contextvars.ContextVar(
    "xenon_elixir_deferred_look", default=None
)


def deferred_look() -> DeferredLook | None:
    """The request's deferred look, in the request's own task only (a timer or a batch the
    request started inherits its context, not its deferral)."""
    held = _DEFERRED_LOOK.get()
    if held is None or held.task() is not asyncio.current_task():
        return None
    return held


class Remembering:
    """The remembered answers of a :class:`Database`: the rule both stores keep. A credential
    (:data:`CREDENTIAL_TAGS`) is remembered always, and each use first looks at the
    ``credentials`` counter, so a revoke committed anywhere is refused from the next request on.
    Any other answer is remembered while the backend can tell when another process's commit makes
    it stale (``trusted``), and never when what reaches this process changed while it was being
    read (``seen``)."""

    answers: RememberedAnswers
    defers_looks = False
    watch: Callable[[Tag], Awaitable[bool]] | None = None
    """For a tag of :data:`WATCHED_KINDS` (a guild's player), whose forgets the fleet publishes
    only while some process watches it: makes sure every process's commit will tell this one,
    before the answer is read or used (``False``: it cannot now, and nothing is remembered).
    ``None``: every forget reaches this process (one process, or SQLite)."""

    async def credentials(self) -> int:
        raise NotImplementedError

    def trusted(self) -> bool:
        """Whether answers may be remembered now: the backend forgets what other processes made
        stale first (or everything, when it cannot tell), and says no while it cannot tell."""
        raise NotImplementedError

    def seen(self) -> Any:
        """A mark of what reaches this process (whether forgets still come): an answer read
        while it changed is not kept, nor one whose tag was forgotten meanwhile (other tags'
        forgets, which a fleet's writes make all the time, leave it be). Nothing can change
        during a read that never waits."""
        return None

    async def remembered(self, tag: Tag, key: Tag, read: Read[T], keep: Keep[T] = bool) -> T:
        """``read()``'s answer, remembered under ``tag`` until a write changes what it covers."""
        credential = tag in CREDENTIAL_TAGS
        if credential:
            deferred = deferred_look()
            if deferred is not None and (answer := self.answers.get(tag, key)) is not _MISSING:
                deferred.looked_at.append(self.answers.credentials)  # the change's transaction looks
                return cast(T, answer)
            self.answers.credentials_at(await self.credentials())
        elif not self.trusted() or (
            self.watch is not None and tag[0] in WATCHED_KINDS and not await self.watch(tag)
        ):
            return await read()
        answer = self.answers.get(tag, key)
        if answer is _MISSING:
            answer = await self._read_answer(tag, key, read, keep, credential)
        return answer

    async def _read_answer(self, tag: Tag, key: Tag, read: Read[T], keep: Keep[T], credential: bool) -> T:
        """Read an answer not remembered, and remember it if nothing changed it meanwhile. A
        request that asks while the same answer is being read, and nothing it covers was forgotten
        since that read began, shares that read: one query for a crowd (a process's first seconds,
        or the many readers of an answer a write has just forgotten)."""
        answers, place = self.answers, (tag, key)
        under_way = answers.reads.get(place)
        if under_way is not None and self._fresh(under_way, tag, credential):
            if under_way.shared is None:
                under_way.shared = asyncio.get_running_loop().create_future()
            try:
                return cast(T, await asyncio.shield(under_way.shared))
            except ReadLeft:  # from the top: one of them reads, the others share again
                return await self.remembered(tag, key, read, keep)
        mine = answers.reads[place] = ReadUnderWay(self.seen(), answers.forgets, answers.credentials)
        try:
            answer = await read()
        except BaseException as exc:
            mine.settle(None, exc)
            raise
        finally:
            if answers.reads.get(place) is mine:
                del answers.reads[place]
        mine.settle(answer)
        if keep(answer) and self._fresh(mine, tag, credential):
            answers.put(tag, key, answer)
        return answer

    def _fresh(self, read: ReadUnderWay, tag: Tag, credential: bool) -> bool:
        """Whether what ``read`` reads is as good as a read begun now: for a credential, no newer
        look at the counter since; for any other answer, nothing ``tag`` covers forgotten since."""
        if credential:
            return read.credentials == self.answers.credentials
        return read.seen == self.seen() and self.answers.unchanged(tag, read.mark)


@contextlib.asynccontextmanager
async def opening(store: Any, refusal: Callable[[BaseException], StoreError | None]) -> AsyncIterator[None]:
    """Open ``store``: whatever fails on the way closes it again, and a failure that ``refusal``
    names is answered with the :class:`StoreError` it gives (one line for the operator)."""
    try:
        yield
    except BaseException as exc:
        await store.close()
        refused = refusal(exc)
        if refused is None:
            raise
        raise refused from exc


class TurnLook(Generic[T]):
    """A value looked at once per turn of the event loop: the look is forgotten by a callback
    queued right after it, which runs before any request that arrives later takes a step (the
    loop's queue is first in, first out), so a caller never sees a look older than itself, and a
    busy turn's callers share one (the credentials counter on SQLite, where a look is a read on
    the loop)."""

    def __init__(self, look: Callable[[], T]) -> None:
        self._look = look
        self._looked: list[T] = []

    def __call__(self) -> T:
        if not self._looked:
            looked = self._look()
            try:
                asyncio.get_running_loop().call_soon(self._looked.clear)
            except RuntimeError:  # no loop: nothing to share the look with
                return looked
            self._looked.append(looked)
        return self._looked[0]


class GroupCommit(Generic[W]):
    """Group commit: work that arrives while a batch commits waits, and goes into the next batch
    together. ``commit(batch)`` commits one batch and answers each item's future
    (``done(item)``); a batch that fails as a whole fails each of its items. SQLite's writer
    groups every write, PostgreSQL's players every guild's changes of a process."""

    def __init__(
        self,
        commit: Callable[[list[W]], Awaitable[None]],
        done: Callable[[W], asyncio.Future[Any]],
        linger: float = 0.0,
    ) -> None:
        self._commit = commit
        self._done = done
        self._linger = linger
        """Seconds a batch that follows another at once waits for more (a lone change never waits)."""
        self._waiting: list[W] = []
        self._running: asyncio.Task[None] | None = None

    def add(self, item: W) -> None:
        self._waiting.append(item)
        if self._running is None:
            self._running = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while batch := self._waiting:
                self._waiting = []  # what comes meanwhile is the next batch
                try:
                    await self._commit(batch)
                except BaseException as exc:  # the batch failed together
                    self._fail(batch, exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                if self._linger and self._waiting:  # busy: let the next batch grow
                    await asyncio.sleep(self._linger)
        finally:
            left, self._waiting, self._running = self._waiting, [], None
            if left:  # its task was cancelled: they go nowhere
                self._fail(left, asyncio.CancelledError())

    def _fail(self, batch: list[W], exc: BaseException) -> None:
        for item in batch:
            done = self._done(item)
            if done.done():
                continue
            if isinstance(exc, asyncio.CancelledError):
                done.cancel()
            else:
                done.set_exception(exc)

    async def drain(self) -> None:
        """Wait for the batches under way: acknowledged or not, started changes are finished."""
        if self._running is not None:
            await asyncio.gather(self._running)


# Who may serve one database together, on every store: each server says what it is (its mark)
# where the others can read it (the SQLite file's ``<db>.server``, PostgreSQL's application_name),
# and a lock of the store's own, exclusive without Redis and shared by one Redis fleet, keeps the
# check race-free and is dropped by whatever ends the process (see ServerLock, PostgresClaim).

MIGRATING = "migrate"
"""The mark of ``xenon-elixir migrate`` while it copies a file: no server may write it meanwhile."""


def fleet_mark(config: Config) -> str:
    """What a server process says of itself to the others on its database: ``alone`` (``demo``
    for the demo) without Redis; with it, ``redis`` and a hash of the Redis URL (its password
    aside) and the key prefix, which every server of one fleet shares."""
    if not config.redis_url:
        return "demo" if config.demo else "alone"
    parts = urlsplit(config.redis_url)
    where = parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.rpartition("@")[2].lower())
    return "redis " + hashlib.sha256(f"{where.geturl()}\n{config.redis_prefix}".encode()).hexdigest()[:12]


def fleet_joins(mine: str, theirs: Iterable[str]) -> bool:
    """Whether a server marked ``mine`` may serve a database beside the servers marked ``theirs``:
    only servers with one Redis, URL and prefix alike, ever share one (a server without Redis could
    not tell the others of its writes, nor hear of theirs)."""
    return mine.startswith("redis ") and all(mark == mine for mark in theirs)


def fleet_refusal(mine: str, theirs: Iterable[str], where: str) -> str:
    """The one line a server (or ``migrate``) marked ``mine`` is refused with beside ``theirs``."""
    others = set(theirs)
    if MIGRATING in others and mine == MIGRATING:
        return f"another xenon-elixir migrate is copying {where}: let it finish first"
    if MIGRATING in others:
        return f"xenon-elixir migrate is copying {where}: start the server once it has finished"
    if mine == MIGRATING:  # the source file, or the target database (a URL)
        harm = (
            "the copy would be mixed with what it writes"
            if "://" in where
            else "what it writes during the copy stays behind"
        )
        return f"a server serves {where}: stop it first, or {harm}"
    if "demo" in others or mine == "demo":
        return f"another server (the demo) serves {where}: give this one its own --db and --port"
    if mine.startswith("redis ") and any(mark.startswith("redis ") for mark in others):
        return (
            f"the servers of {where} use another Redis: give every one the same XE_REDIS_URL and "
            "XE_REDIS_PREFIX (see the README's Scaling out)"
        )
    if mine.startswith("redis "):
        return (
            f"a server without XE_REDIS_URL serves {where}: stop it, or set the same XE_REDIS_URL "
            "on every server (see the README's Scaling out)"
        )
    if any(mark.startswith("redis ") for mark in others):
        return (
            f"servers with XE_REDIS_URL serve {where}: set the same XE_REDIS_URL and XE_REDIS_PREFIX "
            "to join them (see the README's Scaling out)"
        )
    return (
        f"another server process serves {where}: set XE_REDIS_URL to run several "
        "(see the README's Scaling out)"
    )


# --- The tables, once for both stores ---------------------------------------------------
# Each store fills in its own types (``{text}``, ``{real}``, ``{int}``, ``{bool}``), its row ids
# (``{id}``), the order rows came in (``{ord}``: SQLite's rowid, PostgreSQL's identity column
# ``ord``), and what only it has (``{tail}``: SQLite's full-text index, PostgreSQL's word counts).

_TRACK_TABLE_COLUMNS = """\
    source     {text} NOT NULL,
    identifier {text} NOT NULL,
    title      {text} NOT NULL,
    author     {text} NOT NULL,
    length     {int} NOT NULL,
    uri        {text} NOT NULL,
    thumbnail  {text},"""

_TABLES = """\
-- Elixir API keys: only the SHA-256 hex of a key is kept.
CREATE TABLE IF NOT EXISTS elixir_keys (
    key_hash   {text} PRIMARY KEY,
    guild_id   {text} NOT NULL,
    user_id    {text} NOT NULL,
    created_at {real} NOT NULL,
    UNIQUE (guild_id, user_id)
){without_rowid};

-- The guild registry that Elixir's join checks, fed by the host bot.
CREATE TABLE IF NOT EXISTS guilds (
    guild_id {text} PRIMARY KEY,
    name     {text} NOT NULL
){without_rowid};

-- Voice channels are answered in the order they were given in.
CREATE TABLE IF NOT EXISTS voice_channels (
    guild_id   {text} NOT NULL REFERENCES guilds (guild_id) ON DELETE CASCADE,
    channel_id {text} NOT NULL,{ord}
    PRIMARY KEY (guild_id, channel_id)
);

-- The local catalog the default resolver plays from (length in ms).
CREATE TABLE IF NOT EXISTS tracks (
    track_id   {id},
{track_columns}
    is_stream  {bool} NOT NULL DEFAULT {false},
    encoded    {text},  -- the track as a Lavalink node encodes it, when one resolved it{track_words}
    UNIQUE (source, identifier)
);

CREATE TABLE IF NOT EXISTS playlists (
    playlist_id {id},
    source      {text} NOT NULL,
    identifier  {text} NOT NULL,
    name        {text} NOT NULL,
    UNIQUE (source, identifier)
);

CREATE TABLE IF NOT EXISTS playlist_tracks (
    playlist_id {int} NOT NULL REFERENCES playlists (playlist_id) ON DELETE CASCADE,
    position    {int} NOT NULL,
    track_id    {int} NOT NULL REFERENCES tracks (track_id) ON DELETE CASCADE,
    PRIMARY KEY (playlist_id, position)
){without_rowid};

-- One music player per connected guild. The head of its queue is the current track;
-- its position is `position` ms at clock time `anchor` (frozen while paused). `ends_at` is when
-- the current track ends (NULL while nothing ends by itself), so the next end is one indexed
-- lookup; `size` counts the queue's entries, the current one included.
CREATE TABLE IF NOT EXISTS players (
    guild_id   {text} PRIMARY KEY,
    channel_id {text} NOT NULL,
    volume     {int} NOT NULL,
    paused     {bool} NOT NULL,
    position   {real} NOT NULL,
    anchor     {real} NOT NULL,
    ends_at    {real},
    size       {int} NOT NULL DEFAULT 0
){without_rowid};

CREATE INDEX IF NOT EXISTS players_by_end ON players (ends_at) WHERE ends_at IS NOT NULL;

-- Queue entries hold a copy of their track, so any resolver's tracks can be queued.
-- Entries are only appended (entry_id grows) and deleted from the head.
CREATE TABLE IF NOT EXISTS queue (
    entry_id   {id},
    guild_id   {text} NOT NULL,
{track_columns}
    is_stream  {bool} NOT NULL,
    requested_by {text} NOT NULL,
    encoded    {text}
);

CREATE INDEX IF NOT EXISTS queue_by_guild ON queue (guild_id, entry_id);

-- Xenon partner bots. A revoked bot keeps its row (and its template attachments) with no token.
CREATE TABLE IF NOT EXISTS bots (
    bot_id     {text} PRIMARY KEY,
    name       {text} NOT NULL,
    token_hash {text} UNIQUE,
    created_at {real} NOT NULL
){without_rowid};

CREATE TABLE IF NOT EXISTS templates (
    template_id {text} PRIMARY KEY,
    name        {text} NOT NULL,
    source_id   {text} NOT NULL,
    creator_id  {text} NOT NULL,
    created_at  {real} NOT NULL
){without_rowid};

-- Bots are listed in the order they attached.
CREATE TABLE IF NOT EXISTS template_bots (
    template_id {text} NOT NULL REFERENCES templates (template_id) ON DELETE CASCADE,
    bot_id      {text} NOT NULL REFERENCES bots (bot_id) ON DELETE CASCADE,{ord}
    PRIMARY KEY (template_id, bot_id)
);

CREATE TABLE IF NOT EXISTS backups (
    backup_id  {text} PRIMARY KEY,
    source_id  {text} NOT NULL,
    creator_id {text} NOT NULL,
    created_at {real} NOT NULL
){without_rowid};

-- Id mappers: one per (source guild, target guild), accumulated over every load; ids and
-- loaders are answered in first-seen order.
CREATE TABLE IF NOT EXISTS mapper_ids (
    source_id {text} NOT NULL,
    target_id {text} NOT NULL,
    old_id    {text} NOT NULL,
    new_id    {text} NOT NULL,{ord}
    PRIMARY KEY (source_id, target_id, old_id)
);

CREATE TABLE IF NOT EXISTS mapper_loaders (
    source_id {text} NOT NULL,
    target_id {text} NOT NULL,
    user_id   {text} NOT NULL,{ord}
    PRIMARY KEY (source_id, target_id, user_id)
);

-- Running loaders: at most one per target guild. `start_seq`, the number of its start event,
-- names one loader apart from the next on the same target.
CREATE TABLE IF NOT EXISTS loaders (
    target_id   {text} PRIMARY KEY,
    type        {text} NOT NULL,
    source_id   {text} NOT NULL,
    backup_id   {text},
    template_id {text},
    user_id     {text},
    started_at  {real} NOT NULL,
    start_seq   {int} NOT NULL DEFAULT 0
){without_rowid};

-- The loader events, as the frames that were sent: start/done for ?since= replay; statuses
-- too, so that a process can fill in one that reached it late (they are not replayed).
CREATE TABLE IF NOT EXISTS events (
    seq        {int} PRIMARY KEY,
    frame      {text} NOT NULL,
    created_at {real} NOT NULL
);

CREATE INDEX IF NOT EXISTS events_by_time ON events (created_at);

-- Named values the app keeps across restarts, as JSON: the Lavalink node's session and the bot's
-- voice credentials in each guild, so a restarted app resumes the session (version 5 / 2).
CREATE TABLE IF NOT EXISTS kept (
    name  {text} PRIMARY KEY,
    value {text} NOT NULL
){without_rowid};

-- Numbers (event_seq: events, status events included; pruned_seq: the newest event dropped from
-- the log) come from these rows, moved inside the transaction that publishes; the row stays
-- locked until the commit, so numbers commit in order and keep increasing across restarts.
-- player_seq no longer moves: it numbered every guild's player changes in one order before
-- version 5 (SQLite; 2 on PostgreSQL), and a guild's own numbers start above it.
CREATE TABLE IF NOT EXISTS counters (
    name  {text} PRIMARY KEY,
    value {int} NOT NULL
){without_rowid};

-- The number of each guild's newest player change: a guild's changes are numbered in their
-- order, apart from every other guild's (so they never wait for each other's numbers); the row
-- outlives the player, so a guild's numbers never go back. followed_until: until when (on the
-- app's clock) some process of the fleet has followers of the guild's player; written under
-- the guild's lock (version 6 / 3), so a change sees every follower that could miss it.
CREATE TABLE IF NOT EXISTS player_seqs (
    guild_id       {text} PRIMARY KEY,
    seq            {int} NOT NULL,
    followed_until {real}
){without_rowid};
{tail}
INSERT INTO counters (name, value)
VALUES ('event_seq', 0), ('pruned_seq', 0), ('player_seq', 0){counters}
ON CONFLICT DO NOTHING;
"""


class Dialect(NamedTuple):
    """How a store spells the schema's types (see ``_TABLES``)."""

    text: str
    real: str
    int: str
    bool: str
    false: str
    id: str
    ord: str
    without_rowid: str


def schema_for(head: str, dialect: Dialect, *, track_words: str, counters: str, tail: str) -> str:
    """The schema script of one store: its ``head`` (a comment), then the tables in its dialect."""
    columns = _TRACK_TABLE_COLUMNS.format(**dialect._asdict())
    return head + _TABLES.format(
        track_columns=columns, track_words=track_words, counters=counters, tail=tail, **dialect._asdict()
    )


# --- Rows of tracks, as every table that holds one has them --------------------------------

TRACK_COLUMNS = "source, identifier, title, author, length, uri, thumbnail, is_stream, encoded"
_TRACK_SELECT = ", ".join("t." + column for column in TRACK_COLUMNS.split(", "))
_IMPORT_CHUNK = 5000


def track_row(track: Track) -> tuple[Any, ...]:
    return (
        track.source,
        track.identifier,
        track.title,
        track.author,
        track.length,
        track.uri,
        track.thumbnail,
        track.is_stream,
        track.encoded,
    )


class StoredTrack(Track, kw_only=True, gc=False):
    """A track read back from the database: checked when it was written, not again (the checks'
    regular expressions were 40% of loading a queue)."""

    def __post_init__(self) -> None:
        pass


def track_of(row: Sequence[Any]) -> Track:
    source, identifier, title, author, length, uri, thumbnail, is_stream, encoded = row
    return StoredTrack(
        source=source,
        identifier=identifier,
        title=title,
        author=author,
        length=length,
        uri=uri,
        thumbnail=thumbnail,
        is_stream=bool(is_stream),
        encoded=encoded,
    )


# ---------------------------------------------------------------------------
# 8. Storage areas: keys, registry, partners, mappers, loaders, catalog, players, listings
# ---------------------------------------------------------------------------
# Each area is written once against the seam above: its SQL (SQLite's dialect) and its rules.


class Area:
    """A storage area: its SQL and what it does with the rows, on one :class:`Database`."""

    def __init__(self, database: Database) -> None:
        self.database = database


class KeyStore:
    """Elixir keys: only the SHA-256 hex of a key is kept."""

    owner_of = "SELECT guild_id, user_id FROM elixir_keys WHERE key_hash = ?"
    delete = "DELETE FROM elixir_keys WHERE guild_id = ? AND user_id = ?"
    insert = "INSERT INTO elixir_keys (key_hash, guild_id, user_id, created_at) VALUES (?, ?, ?, ?)"

    def __init__(self, database: Database, clock: Callable[[], float]) -> None:
        self.database = database
        self.clock = clock

    async def owner(self, key: str) -> tuple[str, str] | None:
        """The (guild_id, user_id) a key is bound to, or ``None`` for an unknown or revoked key."""
        hashed = digest(key)

        async def read() -> tuple[str, str] | None:
            row = await self.database.one(self.owner_of, hashed)
            return None if row is None else (row[0], row[1])

        return await self.database.remembered(("keys",), (hashed,), read)

    async def create(self, guild_id: str, user_id: str, *, rotate: bool) -> tuple[str, bool]:
        """Make the key of (guild, user); returns it (the only time it exists in clear) and whether
        it replaced one. A second key for the same pair needs ``rotate``, which revokes the first."""
        key, now = secrets.token_hex(32), self.clock()

        async def run(tx: Transaction) -> bool:
            existed = await tx.run(self.delete, guild_id, user_id) > 0
            if existed and not rotate:
                raise key_exists()
            await tx.run(self.insert, digest(key), guild_id, user_id, now)
            return existed

        return key, await self.database.write(run, forgets=[("keys",)])

    async def revoke(self, guild_id: str, user_id: str) -> bool:
        async def run(tx: Transaction) -> bool:
            return await tx.run(self.delete, guild_id, user_id) > 0

        return await self.database.write(run, forgets=[("keys",)])


SANDBOX_MARK = "sandbox"
"""The ``kept`` row a sandbox writes into the database it empties and seeds: the mark that lets
a sandbox empty that database again (on a reset, at the next start). Anything else that opens
the database's services takes it off (:func:`open_services`): data a real server or bot wrote
is never a sandbox's to empty."""


class KeptStore(Area):
    """Named values kept across restarts, as JSON (the Lavalink session and voice credentials)."""

    value_of = "SELECT value FROM kept WHERE name = ?"
    upsert = (
        "INSERT INTO kept (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"
    )
    delete_one = "DELETE FROM kept WHERE name = ?"
    # the prefixes are the module's own (no % or _ in them)
    delete_under = "DELETE FROM kept WHERE name LIKE ?"
    values_under = "SELECT name, value FROM kept WHERE name LIKE ? ORDER BY name"

    async def get(self, name: str) -> Any:
        raw = await self.database.value(self.value_of, name)
        return None if raw is None else msgspec.json.decode(raw)

    async def put(self, name: str, value: Any) -> None:
        """Keep ``value`` under ``name`` (``None``: forget it)."""

        async def run(tx: Transaction) -> None:
            if value is None:
                await tx.run(self.delete_one, name)
            else:
                await tx.run(self.upsert, name, msgspec.json.encode(value).decode())

        await self.database.write(run)

    async def under(self, prefix: str) -> dict[str, Any]:
        """Every value whose name starts with ``prefix``, by the rest of its name."""
        rows = await self.database.all(self.values_under, prefix + "%")
        return {name[len(prefix) :]: msgspec.json.decode(value) for name, value in rows}

    async def forget_under(self, prefix: str) -> None:
        async def run(tx: Transaction) -> None:
            await tx.run(self.delete_under, prefix + "%")

        await self.database.write(run)


class RegistryStore(Area):
    """The guilds Elixir is in, with their voice channels, as the host bot reports them."""

    upsert = (
        "INSERT INTO guilds (guild_id, name) VALUES (?, ?) "
        "ON CONFLICT (guild_id) DO UPDATE SET name = excluded.name"
    )
    delete_guild = "DELETE FROM guilds WHERE guild_id = ?"
    name_of = "SELECT name FROM guilds WHERE guild_id = ?"
    channels_clear = "DELETE FROM voice_channels WHERE guild_id = ?"
    channel_insert = "INSERT INTO voice_channels (guild_id, channel_id) VALUES (?, ?)"
    channels_of = "SELECT channel_id FROM voice_channels WHERE guild_id = ? ORDER BY rowid"
    channel_exists = "SELECT 1 FROM voice_channels WHERE guild_id = ? AND channel_id = ?"

    async def put(self, guild: Guild) -> Guild:
        async def run(tx: Transaction) -> Guild:
            await tx.run(self.upsert, guild.id, guild.name)
            await tx.run(self.channels_clear, guild.id)
            await tx.many(self.channel_insert, [(guild.id, str(c)) for c in guild.voice_channels])
            return guild

        return await self.database.write(run)

    async def delete(self, guild_id: str) -> bool:
        async def run(tx: Transaction) -> bool:
            return await tx.run(self.delete_guild, guild_id) > 0

        return await self.database.write(run)

    async def get(self, guild_id: str) -> Guild | None:
        row = await self.database.one(self.name_of, guild_id)
        if row is None:
            return None
        channels = [c for (c,) in await self.database.all(self.channels_of, guild_id)]
        return Guild(id=guild_id, name=row[0], voice_channels=channels)

    async def has_voice_channel(self, guild_id: str, channel_id: str) -> bool:
        return await self.database.value(self.channel_exists, guild_id, channel_id) is not None


_ID_CHARACTERS = {
    12: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    10: "0123456789abcdefghijklmnopqrstuvwxyz",
}


async def insert_with_id(
    tx: Transaction, sql: str, given: str | None, length: int, rest: Sequence[Any], what: str
) -> str:
    """Insert a row under the given id, or under a generated one (``length`` characters, a new
    one after each collision, 8 at most); a given id that is taken is a conflict."""
    for _ in range(1 if given else 8):
        chosen = given or "".join(secrets.choice(_ID_CHARACTERS[length]) for _ in range(length))
        if await tx.run(sql, chosen, *rest):
            return chosen
    raise id_taken(what, given)


class PartnerStore:
    """Xenon's partner bots (a revoked bot keeps its row and attachments, with no token),
    templates and the bots attached to them, and backups."""

    bot_exists = "SELECT 1 FROM bots WHERE bot_id = ?"
    bot_grant = """
        INSERT INTO bots (bot_id, name, token_hash, created_at) VALUES (?, ?, ?, ?)
        ON CONFLICT (bot_id) DO UPDATE SET name = excluded.name, token_hash = excluded.token_hash"""
    bot_revoke = "UPDATE bots SET token_hash = NULL WHERE bot_id = ?"
    bot_of_token = "SELECT bot_id, name FROM bots WHERE token_hash = ?"
    template_insert = """
        INSERT INTO templates (template_id, name, source_id, creator_id, created_at) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT DO NOTHING"""
    template_get = "SELECT template_id, name, source_id, creator_id FROM templates WHERE template_id = ?"
    template_bots = """
        SELECT b.bot_id, b.name FROM template_bots AS tb JOIN bots AS b ON b.bot_id = tb.bot_id
        WHERE tb.template_id = ? ORDER BY tb.rowid"""
    template_attach = "INSERT INTO template_bots (template_id, bot_id) VALUES (?, ?) ON CONFLICT DO NOTHING"
    template_detach = "DELETE FROM template_bots WHERE template_id = ? AND bot_id = ?"
    backup_insert = """
        INSERT INTO backups (backup_id, source_id, creator_id, created_at) VALUES (?, ?, ?, ?)
        ON CONFLICT DO NOTHING"""
    backup_get = "SELECT backup_id, source_id, creator_id FROM backups WHERE backup_id = ?"

    def __init__(self, database: Database, clock: Callable[[], float]) -> None:
        self.database = database
        self.clock = clock

    async def grant_bot(self, bot: BotIn) -> tuple[str, bool]:
        """A new token for the bot, shown only now; granting again rotates (the old token stops
        working). Returns the token and whether the bot existed."""
        token, now = secrets.token_urlsafe(48), self.clock()

        async def run(tx: Transaction) -> bool:
            existed = await tx.value(self.bot_exists, bot.id) is not None
            await tx.run(self.bot_grant, bot.id, bot.name, digest(token), now)
            return existed

        return token, await self.database.write(run, forgets=[("bots",)])

    async def revoke_bot(self, bot_id: str) -> bool:
        async def run(tx: Transaction) -> bool:
            return await tx.run(self.bot_revoke, bot_id) > 0

        return await self.database.write(run, forgets=[("bots",)])

    async def bot_by_token(self, token: str) -> Bot | None:
        hashed = digest(token)

        async def read() -> Bot | None:
            row = await self.database.one(self.bot_of_token, hashed)
            return None if row is None else Bot(row[0], row[1])

        return await self.database.remembered(("bots",), (hashed,), read)

    async def create_template(self, template: TemplateIn) -> Template:
        """Store a template under its id, or a generated one (12 of A-Z, a-z, 0-9)."""
        source_id, creator_id = str(template.source_id), str(template.creator_id)
        rest = (template.name, source_id, creator_id, self.clock())

        async def run(tx: Transaction) -> str:
            return await insert_with_id(tx, self.template_insert, template.id, 12, rest, "Template")

        return Template(await self.database.write(run), template.name, source_id, creator_id)

    async def template(self, template_id: str, *, with_bots: bool = True) -> Template | None:
        row = await self.database.one(self.template_get, template_id)
        if row is None:
            return None
        attached = await self.database.all(self.template_bots, template_id) if with_bots else []
        return Template(row[0], row[1], row[2], row[3], bots=[Bot(b, n) for b, n in attached])

    async def set_template_bot(self, template_id: str, bot_id: str, *, attached: bool) -> None:
        statement = self.template_attach if attached else self.template_detach

        async def run(tx: Transaction) -> None:
            await tx.run(statement, template_id, bot_id)

        await self.database.write(run)

    async def create_backup(self, backup: BackupIn) -> Backup:
        """Store a backup under its id, or a generated one (10 of 0-9, a-z)."""
        source_id, creator_id = str(backup.source_id), str(backup.creator_id)
        rest = (source_id, creator_id, self.clock())

        async def run(tx: Transaction) -> str:
            return await insert_with_id(tx, self.backup_insert, backup.id, 10, rest, "Backup")

        return Backup(await self.database.write(run), source_id, creator_id)

    async def backup(self, backup_id: str) -> Backup | None:
        row = await self.database.one(self.backup_get, backup_id)
        return None if row is None else Backup(row[0], row[1], row[2])


MAPPER_MERGE = """
    INSERT INTO mapper_ids (source_id, target_id, old_id, new_id) VALUES (?, ?, ?, ?)
    ON CONFLICT (source_id, target_id, old_id) DO UPDATE SET new_id = excluded.new_id"""
MAPPER_LOADER = """
    INSERT INTO mapper_loaders (source_id, target_id, user_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"""


class MapperStore(Area):
    """Id mappers: one per (source guild, target guild), accumulated over every successful load."""

    ids_of = "SELECT old_id, new_id FROM mapper_ids WHERE source_id = ? AND target_id = ? ORDER BY rowid"
    loaders_of = "SELECT user_id FROM mapper_loaders WHERE source_id = ? AND target_id = ? ORDER BY rowid"

    async def mapper_json(self, source_id: str, target_id: str) -> bytes | None:
        """The mapper of (source, target) encoded as its answer, remembered until a load changes it."""

        async def read() -> bytes | None:
            found = await self.mapper(source_id, target_id)
            return None if found is None else msgspec.json.encode(found)

        return await self.database.remembered(("mapper", source_id, target_id), (), read)

    async def mapper(self, source_id: str, target_id: str) -> Mapper | None:
        async def read(tx: Transaction) -> Mapper | None:
            ids = await tx.all(self.ids_of, source_id, target_id)
            if not ids:
                return None
            loaders = [u for (u,) in await tx.all(self.loaders_of, source_id, target_id)]
            return Mapper(source_id, target_id, dict(ids), loaders or msgspec.UNSET)

        return await self.database.snapshot(read)

    async def merge_ids(self, source_id: str, target_id: str, ids: Mapping[str, str]) -> None:
        """Merge old->new ids into the mapper of (source, target) at once (seeding, outside a load)."""
        rows = [
            (source_id, target_id, old, new) for old, new in mapper_ids(source_id, target_id, ids).items()
        ]

        async def run(tx: Transaction) -> None:
            await tx.many(MAPPER_MERGE, rows)

        await self.database.write(run, forgets=[("mapper", source_id, target_id)])


Numbered = tuple[int, str]
"""An event's seq and its frame."""


LOADER_FIELDS = ("target_id", "type", "source_id", "backup_id", "template_id", "user_id")


class LoaderStore:
    """The running loaders and their staged ids, and the numbered event log they publish to.
    Each method that numbers an event calls ``after(numbered)`` right after its commit, in commit
    (so seq) order. A backend says how a load's ids are staged and merged (``stage``, ``ids_merge``)."""

    loader_columns = f"{', '.join(LOADER_FIELDS)}, start_seq"
    loader_insert = """
        INSERT INTO loaders (target_id, type, source_id, backup_id, template_id, user_id, started_at)
        VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"""
    loader_named = "UPDATE loaders SET start_seq = ? WHERE target_id = ?"
    loader_delete = "DELETE FROM loaders WHERE target_id = ?"
    loader_get = f"SELECT {loader_columns} FROM loaders WHERE target_id = ?"
    loader_is = "SELECT 1 FROM loaders WHERE target_id = ? AND start_seq = ?"
    ids_merge: ClassVar[str]
    """Merge a finished load's staged ids (source, target) into its mapper, in first-seen order."""
    ids_drop = "DELETE FROM loader_ids WHERE target_id = ?"
    seq_bounds = """
        SELECT (SELECT value FROM counters WHERE name = 'pruned_seq'),
               (SELECT value FROM counters WHERE name = 'event_seq')"""
    event_insert = "INSERT INTO events (seq, frame, created_at) VALUES (?, ?, ?)"
    events_after = f"""
        SELECT seq, frame FROM events WHERE seq > ? AND substr(frame, 1, {len(STATUS_FRAME)}) <> '{STATUS_FRAME}'
        ORDER BY seq LIMIT ?"""
    events_all_after = "SELECT seq, frame FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
    # The newest seq to drop: `size` numbers or more behind the newest (so at most `size` events
    # stay; by seq, no count), or older than the cut-off time (by the index on created_at: seq
    # and time grow together). Either costs the same at any log size.
    events_older = "SELECT seq FROM events WHERE created_at < ? ORDER BY created_at DESC LIMIT 1"
    events_prune = "DELETE FROM events WHERE seq <= ?"
    pruned_raise = "UPDATE counters SET value = ? WHERE name = 'pruned_seq' AND value < ?"

    def __init__(
        self, database: Database, clock: Callable[[], float], log_size: int, log_seconds: float
    ) -> None:
        self.database = database
        self.clock = clock
        self.log_size = log_size
        self.log_seconds = log_seconds

    async def stage(self, tx: Transaction, target_id: str, ids: Mapping[str, str]) -> None:
        """Keep a running load's ids, in the order they came."""
        raise NotImplementedError

    async def running(self, target_id: str) -> tuple[Loader, int] | None:
        """The loader running on ``target_id`` and the seq of its start event (which names it)."""
        row = await self.database.one(self.loader_get, target_id)
        if row is None:
            return None
        return Loader(**dict(zip(LOADER_FIELDS, row[:6], strict=True))), row[6]

    async def _number(self, tx: Transaction, frame: Callable[[int], str]) -> Numbered:
        """The next seq and its frame, logged in the caller's transaction (statuses too: see
        :class:`InOrder`), and the log pruned to its size and age."""
        seq = await tx.number("event_seq")
        text, now = frame(seq), self.clock()
        await tx.run(self.event_insert, seq, text, now)
        cut = max(seq - self.log_size, await tx.value(self.events_older, now - self.log_seconds) or 0)
        if cut > 0:
            await tx.run(self.events_prune, cut)
            await tx.run(self.pruned_raise, cut, cut)
        return seq, text

    async def _is_running(self, tx: Transaction, target_id: str, started: int) -> bool:
        return await tx.value(self.loader_is, target_id, started) is not None

    async def _check_running(self, tx: Transaction, target_id: str, started: int) -> None:
        if not await self._is_running(tx, target_id, started):
            raise no_loader(target_id)

    async def start(
        self, loader: Loader, frame: Callable[[int], str], after: Callable[[Numbered], None]
    ) -> Numbered:
        """Record a running loader and its start event together; a conflict if one runs on the target."""
        values = (loader.target_id, loader.type, loader.source_id, loader.backup_id, loader.template_id)

        async def run(tx: Transaction) -> Numbered:
            if not await tx.run(self.loader_insert, *values, loader.user_id, self.clock()):
                raise loader_running(loader.target_id)
            seq, text = await self._number(tx, frame)
            await tx.run(self.loader_named, seq, loader.target_id)
            return seq, text

        return await self.database.write(run, after=after)

    async def status(
        self,
        target_id: str,
        started: int,
        frame: Callable[[int], str],
        after: Callable[[Numbered | None], None],
    ) -> Numbered | None:
        """Number a status of the loader that started at ``started``; ``None`` once it is done."""

        async def run(tx: Transaction) -> Numbered | None:
            if not await self._is_running(tx, target_id, started):
                return None  # its done came first: no status after done
            return await self._number(tx, frame)

        return await self.database.write(run, after=after)

    async def stage_ids(self, target_id: str, started: int, ids: Mapping[str, str]) -> None:
        """Keep ids with the loader that started at ``started`` (not one that replaced it since)."""

        async def run(tx: Transaction) -> None:
            await self._check_running(tx, target_id, started)
            await self.stage(tx, target_id, ids)

        await self.database.write(run)

    async def finish(
        self,
        loader: Loader,
        started: int,
        frame: Callable[[int], str],
        ok: bool,
        after: Callable[[Numbered], None],
    ) -> Numbered:
        """End a loader and log its done event, in one transaction. A load that went well merges
        its staged ids into the mapper and adds its user to the mapper's loaders; a failed one
        discards them and changes no mapper (``loaders`` is a permission check)."""
        source_id, target_id = str(loader.source_id), str(loader.target_id)

        async def run(tx: Transaction) -> Numbered:
            await self._check_running(tx, target_id, started)
            await tx.run(self.loader_delete, target_id)
            if ok:
                await tx.run(MAPPER_MERGE, source_id, target_id, source_id, target_id)
                await tx.run(self.ids_merge, source_id, target_id)
                if loader.user_id is not None:
                    await tx.run(MAPPER_LOADER, source_id, target_id, loader.user_id)
            await tx.run(self.ids_drop, target_id)
            return await self._number(tx, frame)

        return await self.database.write(run, forgets=[("mapper", source_id, target_id)], after=after)

    async def events_since(
        self, seq: int, limit: int, *, statuses: bool = False
    ) -> tuple[int, int, list[Numbered]]:
        """The newest pruned seq, the newest seq given out, and up to ``limit`` logged start/done
        events after ``seq`` (and status events too, with ``statuses``)."""
        query = self.events_all_after if statuses else self.events_after

        async def read(tx: Transaction) -> tuple[int, int, list[Numbered]]:
            pruned, newest = await tx.one(self.seq_bounds)
            return pruned, newest, [(s, f) for s, f in await tx.all(query, seq, limit)]

        return await self.database.snapshot(read)


class CatalogStore(Area):
    """The local catalog the default resolver plays from: tracks and playlists. A backend writes
    a chunk of tracks (``write_tracks``) and searches (``search``) its own way."""

    track_get = f"SELECT {TRACK_COLUMNS} FROM tracks WHERE source = ? AND identifier = ?"
    track_id_of = "SELECT track_id FROM tracks WHERE source = ? AND identifier = ?"
    playlist_upsert = """
        INSERT INTO playlists (source, identifier, name) VALUES (?, ?, ?)
        ON CONFLICT (source, identifier) DO UPDATE SET name = excluded.name
        RETURNING playlist_id"""
    playlist_clear = "DELETE FROM playlist_tracks WHERE playlist_id = ?"
    playlist_track_insert = "INSERT INTO playlist_tracks (playlist_id, position, track_id) VALUES (?, ?, ?)"
    playlist_tracks_of = f"""
        SELECT {_TRACK_SELECT} FROM playlists AS p
        JOIN playlist_tracks AS pt ON pt.playlist_id = p.playlist_id
        JOIN tracks AS t ON t.track_id = pt.track_id
        WHERE p.source = ? AND p.identifier = ? ORDER BY pt.position"""

    async def write_tracks(self, tx: Transaction, chunk: list[Track]) -> None:
        """Upsert a chunk of tracks (and whatever the backend's search keeps beside them)."""
        raise NotImplementedError

    async def search(self, words: Sequence[str], every: bool) -> Track | None:
        """The best match of all the ``words`` (``every``) or of any of them; case and accents
        are folded. An answer stays remembered until the catalog changes."""
        raise NotImplementedError

    async def import_catalog(
        self,
        tracks: list[Track],
        playlists: list[Playlist],
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[int, int]:
        """Upsert tracks, then playlists (which may name those tracks). Everything is checked
        before anything is written: a playlist naming a track that is neither imported nor known
        refuses the whole import. Tracks are then written in transactions of ``_IMPORT_CHUNK``, so
        a million-track import never holds the write lock for long (other writers, in this process
        and others, get their turn between chunks); an interrupted import is finished by running it
        again (upserts). A track given twice: the last wins. ``progress(done, total)`` is told
        after each chunk."""
        latest = {(t.source, t.identifier): t for t in tracks}
        unique = list(latest.values())
        for playlist in playlists:
            for identifier in playlist.tracks:
                known = (playlist.source, identifier) in latest
                if (
                    not known
                    and await self.database.value(self.track_id_of, playlist.source, identifier) is None
                ):
                    raise unknown_track(playlist, identifier)
        for start in range(0, len(unique), _IMPORT_CHUNK):
            chunk = unique[start : start + _IMPORT_CHUNK]
            await self.database.write(
                functools.partial(self.write_tracks, chunk=chunk), forgets=[("catalog",)]
            )
            if progress is not None:
                progress(min(start + _IMPORT_CHUNK, len(unique)), len(unique))
            if self.database.pause_between_chunks and start + _IMPORT_CHUNK < len(unique):
                await asyncio.sleep(self.database.pause_between_chunks)
        if playlists:

            async def run(tx: Transaction) -> None:
                for playlist in playlists:
                    ids = [await tx.value(self.track_id_of, playlist.source, i) for i in playlist.tracks]
                    playlist_id = await tx.value(
                        self.playlist_upsert, playlist.source, playlist.identifier, playlist.name
                    )
                    await tx.run(self.playlist_clear, playlist_id)
                    await tx.many(
                        self.playlist_track_insert, [(playlist_id, i, t) for i, t in enumerate(ids)]
                    )

            await self.database.write(run, forgets=[("catalog",)])
        return len(tracks), len(playlists)

    async def track(self, source: str, identifier: str) -> Track | None:
        row = await self.database.one(self.track_get, source, identifier)
        return None if row is None else track_of(row)

    async def playlist_tracks(self, source: str, identifier: str) -> list[Track]:
        return [track_of(row) for row in await self.database.all(self.playlist_tracks_of, source, identifier)]


PLAYER_FRONT = 26
"""Queue entries read with a player: the current track and the 25 a follower is shown."""

PlayerChange = Callable[[Player | None], Player | None]
"""A change of a player: the player settled to now (``None``: not connected) to the player to
store (``None``: stopped)."""
ChangeCommitted = Callable[[Player | None, int, bool], None]
"""Told right after the commit: the player stored, its number, and whether some process of the
fleet follows the guild (its follower lease was live in the transaction)."""

FOLLOW_LEASE = 60.0
"""Seconds a process's follower lease on a guild lasts (renewed while it has followers there):
long enough for the processes' clocks to differ by some seconds, short enough that a guild
nobody follows soon costs a change nothing but its own write."""


@dataclasses.dataclass(slots=True)
class PendingChange:
    """A player change on its way to a transaction (and, when it waits to go with others, the
    future its caller waits on)."""

    guild_id: str
    change: PlayerChange
    now: float
    after: ChangeCommitted | None
    front: int
    done: asyncio.Future[Player | None] | None = None
    looked_at: tuple[int, ...] = ()
    """The ``credentials`` counters the request's remembered credentials were checked at, when
    its look is deferred to this change's transaction (:func:`deferred_look`)."""


async def apply_change(
    player: Player | None,
    change: PlayerChange,
    now: float,
    front: int,
    more: Callable[[Player, int], Awaitable[None]],
) -> Player | None:
    """``change`` on ``player`` settled to ``now``, with at least ``front`` entries of the queue
    read before and after (``more(player, count)`` reads ``count`` more from the store): settled
    deeper than the front that was read when it all ended, and read further when the change
    skipped into what was not read. The rule every store's change keeps."""
    if player is not None:
        while True:
            player.settle(now)
            if player.queue or not player.more:
                break
            await more(player, PLAYER_FRONT)
        if len(player.queue) < front and player.more:
            await more(player, front - len(player.queue))
    changed = change(player)
    if changed is not None and len(changed.queue) < front and changed.more:
        await more(changed, front - len(changed.queue))
    return changed


def player_copy(player: Player | None) -> Player | None:
    """A player to go on changing, apart from the one given as an answer (whose queue must not
    move with the next change)."""
    return player and dataclasses.replace(player, queue=deque(player.queue), appended=list(player.appended))


class PlayerStore(Area):
    """Players and their queues. A change runs on the stored player in one transaction, so every
    process sees one player per guild; a backend groups the changes that arrive while one
    commits into its next transaction (``change``)."""

    player_get = "SELECT channel_id, volume, paused, position, anchor, size FROM players WHERE guild_id = ?"
    queue_front = f"""
        SELECT entry_id, {TRACK_COLUMNS}, requested_by FROM queue WHERE guild_id = ?
        ORDER BY entry_id LIMIT ? OFFSET ?"""
    queue_all: ClassVar[Any] = -1
    """The ``LIMIT`` that reads every row."""
    upsert = """
        INSERT INTO players (guild_id, channel_id, volume, paused, position, anchor, ends_at, size)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (guild_id) DO UPDATE SET channel_id = excluded.channel_id, volume = excluded.volume,
            paused = excluded.paused, position = excluded.position, anchor = excluded.anchor,
            ends_at = excluded.ends_at, size = excluded.size"""
    """Stores a player's row (:meth:`row_of`), new or changed."""

    @staticmethod
    def row_of(player: Player) -> tuple[Any, ...]:
        """The player's row of ``players``, in :attr:`upsert`'s order."""
        clock = (player.position, player.anchor, player.ends_at, player.size)
        return (player.guild_id, player.channel_id, player.volume, player.paused, *clock)

    delete = "DELETE FROM players WHERE guild_id = ?"
    queue_clear = "DELETE FROM queue WHERE guild_id = ?"
    # Entries are only appended and taken from the front: the front ones are the lowest ids.
    queue_drop_front = """
        DELETE FROM queue WHERE entry_id IN (
            SELECT entry_id FROM queue WHERE guild_id = ? ORDER BY entry_id LIMIT ?)"""
    is_connected = "SELECT 1 FROM players WHERE guild_id = ?"
    seq_now = """
        SELECT coalesce((SELECT seq FROM player_seqs WHERE guild_id = ?),
                        (SELECT value FROM counters WHERE name = 'player_seq'))"""
    numbered = """
        INSERT INTO player_seqs (guild_id, seq)
        VALUES (?1, (SELECT value FROM counters WHERE name = 'player_seq') + ?2)
        ON CONFLICT (guild_id) DO UPDATE SET seq = player_seqs.seq + ?2 RETURNING seq"""
    """Moves the guild's number by some: its new value. The guild's changes are one at a time
    (the store's write lock, or the guild's advisory lock), so numbers commit in their order."""
    lease_of = "SELECT followed_until FROM player_seqs WHERE guild_id = ?"
    leased = """
        INSERT INTO player_seqs (guild_id, seq, followed_until)
        VALUES (?1, (SELECT value FROM counters WHERE name = 'player_seq'), ?2)
        ON CONFLICT (guild_id) DO UPDATE SET followed_until = CASE
            WHEN player_seqs.followed_until > ?2 THEN player_seqs.followed_until ELSE ?2 END"""
    """A process's follower lease on the guild, until ``?2`` (never shortened: another process
    may hold it longer). Taken under the guild's lock, as a change is: a change committed
    before it is in the state its follower reads next, and one after it sees it."""
    due_by = "SELECT guild_id FROM players WHERE ends_at <= ? ORDER BY ends_at"
    first_end = "SELECT min(ends_at) FROM players WHERE ends_at IS NOT NULL"
    every_guild = "SELECT guild_id FROM players ORDER BY guild_id"

    async def change(
        self,
        guild_id: str,
        change: PlayerChange,
        now: float,
        after: ChangeCommitted | None = None,
        front: int = 2,
    ) -> Player | None:
        """Run ``change`` (see :func:`apply_change`) and store what it returns, all in one
        transaction that numbers the change (the guild's own sequence, in every process);
        ``after(player, seq, followed)`` runs right after the commit, in commit order. Returns
        the stored player with the first ``front`` entries (a change needs the current track and
        the next; a follower's frame, 26: as many when the fleet follows the guild)."""
        deferred, looked_at = deferred_look(), tuple[int, ...]()
        if deferred is not None:
            deferred.submitted, looked_at = True, tuple(deferred.looked_at)
        return await self.commit(PendingChange(guild_id, change, now, after, front, looked_at=looked_at))

    async def commit(self, pending: PendingChange) -> Player | None:
        """Commit ``pending`` (alone or with others); the player as it stored it."""
        raise NotImplementedError

    async def follow(self, guild_id: str, until: float) -> None:
        """Hold a follower lease on the guild until ``until`` (see :attr:`leased`)."""
        raise NotImplementedError

    @classmethod
    async def read(cls, tx: Transaction, guild_id: str, front: int | None = PLAYER_FRONT) -> Player | None:
        """A guild's stored player with the first ``front`` entries of its queue (all: ``None``)."""
        row = await tx.one(cls.player_get, guild_id)
        if row is None:
            return None
        channel_id, volume, paused, position, anchor, size = row
        player = Player(guild_id, channel_id, volume, bool(paused), position, anchor, deque(), more=size)
        await cls.load_front(tx, player, front)
        return player

    @classmethod
    async def load_front(cls, tx: Transaction, player: Player, count: int | None) -> None:
        """Read up to ``count`` more entries (``None``: all) after the ones ``player`` holds."""
        offset = player.dropped + len(
            player.queue
        )  # rows before these are loaded (or dropped, not yet deleted)
        limit = cls.queue_all if count is None else count
        rows = await tx.all(cls.queue_front, player.guild_id, limit, offset)
        player.queue.extend(QueueEntry(r[0], track_of(r[1:10]), r[10]) for r in rows)
        player.more = max(player.more - len(rows), 0)

    async def get(self, guild_id: str, *, whole: bool = False) -> Player | None:
        """The player as stored (its front only, unless ``whole``), not yet settled to now, from
        one commit (a track's end may land between reading its row and its queue); the front is
        remembered until it changes."""
        if whole:
            return await self.database.snapshot(lambda tx: self.read(tx, guild_id, None))
        return await self.database.remembered(
            ("player", guild_id), (), lambda: self.database.snapshot(lambda tx: self.read(tx, guild_id))
        )

    async def connected(self, guild_id: str) -> bool:
        """Whether the guild has a player; a yes is remembered until the player is stopped."""

        async def read() -> bool:
            return await self.database.value(self.is_connected, guild_id) is not None

        return await self.database.remembered(("connected", guild_id), (), read)

    async def seq(self, guild_id: str) -> int:
        """The number of the guild's newest change: a state read after it is at least that new."""
        return await self.database.value(self.seq_now, guild_id)

    async def due(self, now: float) -> list[str]:
        """The guilds whose current track has ended by ``now``."""
        return [guild_id for (guild_id,) in await self.database.all(self.due_by, now)]

    async def next_end(self) -> float | None:
        """The earliest time a current track ends."""
        return await self.database.value(self.first_end)

    async def guilds(self) -> list[str]:
        """Every guild with a player."""
        return [guild_id for (guild_id,) in await self.database.all(self.every_guild)]


def _known(value: str | None) -> Any:
    return msgspec.UNSET if value is None else value


@dataclasses.dataclass(frozen=True)
class Listing:
    """How to page through one kind of thing: the query (after a cursor, in id order), a row's
    item, and the cursor a row leaves. Secrets are never selected."""

    sql: str
    item: Callable[[Sequence[Any]], Any]
    cursor_of: Callable[[Sequence[Any]], str] = lambda row: row[0]
    cursor: Callable[[str], tuple[str, ...]] = lambda after: (after,)


LISTINGS: dict[str, Listing] = {
    "bots": Listing(
        "SELECT bot_id, name, token_hash IS NOT NULL, created_at FROM bots WHERE bot_id > ? ORDER BY bot_id LIMIT ?",
        lambda r: BotListed(r[0], r[1], bool(r[2]), iso_time(r[3])),
    ),
    "guilds": Listing(
        "SELECT guild_id, name FROM guilds WHERE guild_id > ? ORDER BY guild_id LIMIT ?",
        lambda r: Guild(id=r[0], name=r[1], voice_channels=[]),
    ),
    "keys": Listing(
        """SELECT guild_id, user_id, created_at FROM elixir_keys WHERE (guild_id, user_id) > (?, ?)
           ORDER BY guild_id, user_id LIMIT ?""",
        lambda r: KeyListed(r[0], r[1], iso_time(r[2])),
        cursor_of=lambda row: f"{row[0]}:{row[1]}",
        cursor=lambda after: (*after.partition(":")[::2],),
    ),
    "templates": Listing(
        """SELECT template_id, name, source_id, creator_id, created_at FROM templates WHERE template_id > ?
           ORDER BY template_id LIMIT ?""",
        lambda r: TemplateListed(r[0], r[1], r[2], r[3], iso_time(r[4])),
    ),
    "backups": Listing(
        """SELECT backup_id, source_id, creator_id, created_at FROM backups WHERE backup_id > ?
           ORDER BY backup_id LIMIT ?""",
        lambda r: BackupListed(r[0], r[1], r[2], iso_time(r[3])),
    ),
    "loaders": Listing(
        """SELECT target_id, type, source_id, backup_id, template_id, user_id, started_at FROM loaders
           WHERE target_id > ? ORDER BY target_id LIMIT ?""",
        lambda r: LoaderListed(r[0], r[1], r[2], _known(r[3]), _known(r[4]), _known(r[5]), iso_time(r[6])),
    ),
}
"""What the operator can list, through every door (admin API, CLI, host API)."""
LISTED_AS = {
    "bots": BotListed,
    "guilds": Guild,
    "keys": KeyListed,
    "templates": TemplateListed,
    "backups": BackupListed,
    "loaders": LoaderListed,
}


class ListingStore(Area):
    """Pages of what an operator has."""

    channels_between = """
        SELECT guild_id, channel_id FROM voice_channels WHERE guild_id >= ? AND guild_id <= ?
        ORDER BY guild_id, rowid"""

    async def page(self, kind: str, limit: int, after: str | None) -> Page[Any]:
        """A page of ``kind`` in id order, after the cursor ``after``."""
        listing = LISTINGS[kind]

        async def read(tx: Transaction) -> Page[Any]:
            rows = await tx.all(listing.sql, *listing.cursor(after or ""), limit + 1)
            items = [listing.item(row) for row in rows[:limit]]
            if kind == "guilds" and items:  # each page's channels in one query
                channels = {guild.id: guild.voice_channels for guild in items}
                for guild_id, channel_id in await tx.all(self.channels_between, items[0].id, items[-1].id):
                    channels[guild_id].append(channel_id)
            return Page(items, listing.cursor_of(rows[limit - 1]) if len(rows) > limit else None)

        return await self.database.snapshot(read)


@dataclasses.dataclass(slots=True)
class Stores:
    """Every storage area of one database, and the database itself."""

    database: Database
    keys: KeyStore
    registry: RegistryStore
    catalog: CatalogStore
    players: PlayerStore
    partners: PartnerStore
    mappers: MapperStore
    loaders: LoaderStore
    listings: ListingStore
    kept: KeptStore

    @classmethod
    def on(cls, database: Database, config: Config) -> Stores:
        """Each storage area on ``database`` (the backend's own halves where it has them)."""
        return cls(
            database,
            KeyStore(database, config.clock),
            RegistryStore(database),
            database.catalog(database),
            database.players(database),
            PartnerStore(database, config.clock),
            MapperStore(database),
            database.loaders(database, config.clock, config.event_log_size, config.event_log_seconds),
            ListingStore(database),
            KeptStore(database),
        )


# ---------------------------------------------------------------------------
# 9. SQLite: one file, its writer thread, and what SQLite does its own way
# ---------------------------------------------------------------------------

SCHEMA_VERSION = 6

SCHEMA = schema_for(
    """\
-- xenon_elixir schema. Every statement is idempotent: the whole script runs, in one transaction,
-- when a file is older than this version. PRAGMA user_version records the version; a file from a
-- newer version is refused. Tables with a rowid keep the order rows came in.

""",
    Dialect("TEXT", "REAL", "INTEGER", "INTEGER", "0", "INTEGER PRIMARY KEY", "", " WITHOUT ROWID"),
    track_words="",
    counters=", ('commits', 0)",
    tail="""
-- A full-text index over the catalog's titles and authors.
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

-- The ids of a running load, merged into its mapper only when the load ends well (done with
-- ok: true), so a failed load changes no mapper; merged in first-seen order (the rowid).
CREATE TABLE IF NOT EXISTS loader_ids (
    target_id TEXT NOT NULL,
    old_id    TEXT NOT NULL,
    new_id    TEXT NOT NULL,
    PRIMARY KEY (target_id, old_id)
);

-- commits: counted by every writing process, so each notices another's commits.
""",
)


def run_now(awaitable: Awaitable[T]) -> T:
    """Run a coroutine that never waits to its end, here and now. SQLite's statements are plain
    calls, so a transaction written against :class:`Transaction` runs whole on the thread that
    holds the connection (the writer's), or on the loop with no await between its reads."""
    step = cast("Coroutine[Any, Any, T]", awaitable)
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise RuntimeError("a SQLite transaction awaited something that waits")


class SqliteTransaction:
    """:class:`Transaction` on a SQLite connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def one(self, sql: str, *args: Any) -> Any:
        return self.conn.execute(sql, args).fetchone()

    async def value(self, sql: str, *args: Any) -> Any:
        row = self.conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    async def all(self, sql: str, *args: Any) -> list[Any]:
        return self.conn.execute(sql, args).fetchall()

    async def run(self, sql: str, *args: Any) -> int:
        return self.conn.execute(sql, args).rowcount

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    async def number(self, counter: str, by: int = 1) -> int:
        return self.conn.execute(NUMBER, (by, counter)).fetchone()[0]

    async def insert(self, sql: str, *args: Any) -> int:
        """Insert a row; its rowid (a row that is always inserted: no ``OR IGNORE``)."""
        rowid = self.conn.execute(sql, args).lastrowid
        assert rowid is not None, "an insert that inserted nothing"
        return rowid


def fts_match(words: Sequence[str], *, every: bool) -> str:
    """An FTS5 match of all the words (or any): each is quoted, so nothing a user types is read
    as query syntax."""
    return (" " if every else " OR ").join(f'"{word}"' for word in words)


class SqliteCatalog(CatalogStore):
    """The catalog on SQLite: a full-text index (FTS5) over title and author."""

    track_upsert = f"""
        INSERT INTO tracks ({TRACK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (source, identifier) DO UPDATE SET
            title = excluded.title, author = excluded.author, length = excluded.length,
            uri = excluded.uri, thumbnail = excluded.thumbnail, is_stream = excluded.is_stream,
            encoded = excluded.encoded"""
    # A search ranks a bounded set of candidates, the first matches in the index, so it costs the
    # same however many tracks match a common word. bm25 ranks lower-is-better; a title hit
    # weighs twice an author hit.
    track_search = f"""
        SELECT {_TRACK_SELECT} FROM (
            SELECT rowid AS track_id, bm25(tracks_fts, 2.0, 1.0) AS rank FROM tracks_fts
            WHERE tracks_fts MATCH ? LIMIT 256
        ) AS m JOIN tracks AS t ON t.track_id = m.track_id ORDER BY m.rank, t.track_id LIMIT 1"""

    async def write_tracks(self, tx: Transaction, chunk: list[Track]) -> None:
        await tx.many(self.track_upsert, [track_row(t) for t in chunk])

    async def search(self, words: Sequence[str], every: bool) -> Track | None:
        match = fts_match(words, every=every)

        async def read() -> Track | None:
            row = await self.database.one(self.track_search, match)
            return None if row is None else track_of(row)

        return await self.database.remembered(("catalog",), (match,), read, keep=lambda _: True)


class SqlitePlayers(PlayerStore):
    """Players on SQLite. A change runs on the stored player inside the write transaction, and a
    change made while another commits lands in the same transaction (the writer's group commit),
    on the player as the change before it in that transaction left it."""

    queue_append = (
        f"INSERT INTO queue (guild_id, {TRACK_COLUMNS}, requested_by) VALUES ({', '.join('?' * 11)})"
    )

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(database)
        self.sqlite = database

    async def commit(self, pending: PendingChange) -> Player | None:
        flipped = False  # connected or disconnected by this change
        database = self.sqlite
        guild_id = pending.guild_id
        change, now, after, front = pending.change, pending.now, pending.after, pending.front

        async def run(tx: SqliteTransaction) -> tuple[Player | None, int, bool]:
            nonlocal flipped
            until = await tx.value(self.lease_of, guild_id)
            followed = until is not None and until > now
            wanted = max(front, PLAYER_FRONT) if followed else front
            # As the previous change of this guild in the same transaction left it, or as stored.
            batch_notes = database.batch_notes("players")
            player = batch_notes.pop(guild_id, _MISSING)
            if player is _MISSING:
                player = await self.read(tx, guild_id, wanted)
            changed = await apply_change(player, change, now, wanted, lambda p, n: self.load_front(tx, p, n))
            await self._write(tx, guild_id, changed)
            flipped = (player is None) != (changed is None)
            batch_notes[guild_id] = player_copy(changed)
            return changed, await tx.value(self.numbered, guild_id, 1), followed

        def committed(numbered: tuple[Player | None, int, bool]) -> None:
            if flipped:
                database.answers.forget(("connected", guild_id))
            if after is not None:
                after(*numbered)

        player, _, _ = await database.write(run, forgets=[("player", guild_id)], after=committed)
        return player

    async def follow(self, guild_id: str, until: float) -> None:
        await self.sqlite.write(lambda tx: tx.run(self.leased, guild_id, until), forgets=(), after=None)

    async def _write(self, tx: SqliteTransaction, guild_id: str, player: Player | None) -> None:
        if player is None:
            await tx.run(self.queue_clear, guild_id)
            await tx.run(self.delete, guild_id)
            return
        if player.dropped:
            await tx.run(self.queue_drop_front, guild_id, player.dropped)
        for entry in player.appended:
            entry.entry_id = await tx.insert(
                self.queue_append, guild_id, *track_row(entry.track), entry.requested_by
            )
        await tx.run(self.upsert, *self.row_of(player))
        player.dropped, player.appended = 0, []


class SqliteLoaders(LoaderStore):
    """Loads on SQLite: an id staged again replaces its new id where it first came."""

    ids_stage = """
        INSERT INTO loader_ids (target_id, old_id, new_id) VALUES (?, ?, ?)
        ON CONFLICT (target_id, old_id) DO UPDATE SET new_id = excluded.new_id"""
    ids_merge = """
        INSERT INTO mapper_ids (source_id, target_id, old_id, new_id)
        SELECT ?1, target_id, old_id, new_id FROM loader_ids WHERE target_id = ?2 AND old_id != ?1 ORDER BY rowid
        ON CONFLICT (source_id, target_id, old_id) DO UPDATE SET new_id = excluded.new_id"""

    async def stage(self, tx: Transaction, target_id: str, ids: Mapping[str, str]) -> None:
        await tx.many(self.ids_stage, [(target_id, old, new) for old, new in ids.items()])


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a file of an older version up to this one, before the schema script runs."""
    columns = {
        table: {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for table in ("players", "loaders", "tracks", "queue", "player_seqs")
    }
    if columns["player_seqs"] and "followed_until" not in columns["player_seqs"]:  # version 6
        conn.execute("ALTER TABLE player_seqs ADD COLUMN followed_until REAL")
    if version >= 4:
        return
    for table in ("tracks", "queue"):  # version 4: a Lavalink node's encoding of a track
        if columns[table] and "encoded" not in columns[table]:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN encoded TEXT")
    if columns["players"] and "ends_at" not in columns["players"]:  # version 3: the next end is indexed
        conn.execute("ALTER TABLE players ADD COLUMN ends_at REAL")
        conn.execute("ALTER TABLE players ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
        for (guild_id,) in conn.execute("SELECT guild_id FROM players").fetchall():
            player = run_now(SqlitePlayers.read(SqliteTransaction(conn), guild_id, None))
            assert player is not None
            conn.execute(
                "UPDATE players SET ends_at = ?, size = ? WHERE guild_id = ?",
                (player.ends_at, player.size, guild_id),
            )
    if columns["loaders"] and "start_seq" not in columns["loaders"]:
        conn.execute("ALTER TABLE loaders ADD COLUMN start_seq INTEGER NOT NULL DEFAULT 0")


_COMMITS = "SELECT value FROM counters WHERE name = 'commits'"
_COUNT_COMMIT = "UPDATE counters SET value = value + 1 WHERE name = 'commits' RETURNING value"


def _locked(exc: BaseException) -> bool:
    """Whether SQLite refused because another connection held the lock past the busy timeout."""
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteFile:
    """The database file as the writer holds it: opened (and brought to this schema version),
    locked for each write transaction within ``write_wait``, and watched for being removed or
    replaced under the server."""

    _LOCK_POLL = 0.0005
    """Seconds before the first retry for another process's write lock (doubling, to 4 ms)."""

    def __init__(self, path: str, write_wait: float) -> None:
        self.path = path
        self.write_wait = write_wait
        self._identity: tuple[int, int] | None = None
        self._gone_logged = False

    def open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._identity = self._file_identity()
        for pragma in (
            "busy_timeout = 1",  # the writer waits for the lock itself (begin), a few ms at a time
            "synchronous = NORMAL",
            "foreign_keys = ON",
        ):
            conn.execute(f"PRAGMA {pragma}")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this xenon_elixir knows up to {SCHEMA_VERSION}"
            )
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if version < SCHEMA_VERSION:
            # Write transactions that wait their turn for the lock (a write sneaked into a read
            # would fail at once against a server writing beside it); a file at this version is
            # opened without writing at all. Each step can run again if the other was cut short.
            self.begin(conn)
            try:
                _migrate(conn, version)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self.begin(conn, f"BEGIN IMMEDIATE;\n{SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;")
        return conn

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return status.st_dev, status.st_ino

    def check(self) -> None:
        """Refuse to write when the path no longer names the open file (deleted or replaced under
        the server): acknowledging writes into a file nobody can open again would lose them all.
        Looked at by the writer thread before each transaction, and by the health check."""
        if self._file_identity() != self._identity:
            if not self._gone_logged:
                self._gone_logged = True
                log.error(
                    "database %s was removed or replaced while open; refusing writes until restarted",
                    self.path,
                )
            raise Unavailable(
                "Service unavailable: the database file is gone; the operator must restart the server."
            )

    def begin(self, conn: sqlite3.Connection, script: str | None = None) -> None:
        """``BEGIN IMMEDIATE`` (or a ``script`` that starts with it), waiting at most
        ``write_wait`` for another process's write lock. It tries again every few milliseconds:
        SQLite's own busy handler sleeps up to 100 ms between tries, and processes writing side
        by side (several workers) would mostly wait out each other's sleeps."""
        deadline = time.monotonic() + self.write_wait
        pause = self._LOCK_POLL
        while True:
            try:
                if script is None:
                    conn.execute("BEGIN IMMEDIATE")
                else:
                    conn.executescript(script)
                return
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if not _locked(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.004)


@dataclasses.dataclass(slots=True)
class _Write:
    run: Callable[[Transaction], Awaitable[Any]]
    done: asyncio.Future[Any]
    forgets: Tags
    after: Callable[[Any], None] | None


class SqliteWriter:
    """The writer connection, on a thread of its own. A write is a transaction function run
    there, whole, in one hop: a writer may wait for a lock (another process, a checkpoint), and
    the event loop must not. Writes that arrive while one commits are committed together in the
    next transaction (group commit), each inside a savepoint of its own, so a refused write takes
    none of the others with it (a write alone needs none: its refusal rolls back all)."""

    def __init__(self, file: SqliteFile, answers: RememberedAnswers) -> None:
        self.file = file
        self.answers = answers
        self.commits = -1
        """The ``commits`` counter after this process's last commit (see :meth:`SqliteDatabase.remembered`)."""
        self.committing = self.before = -1
        """The counter of the commit under way, and the one before it: a reader may see either."""
        self.batch_notes: dict[str, dict[Any, Any]] = {}
        """What the writes of one transaction leave for the next ones of the same batch (a guild's
        player as the last change wrote it); emptied with every transaction and every refusal."""
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="xenon-elixir-writer")
        self._conn: sqlite3.Connection | None = None
        self._batches: GroupCommit[_Write] = GroupCommit(self._commit_batch, lambda write: write.done)
        self.on_commit: Callable[[float], None] | None = None
        """Told the seconds each transaction took, from handing it over to its commit (metrics)."""

    async def open(self) -> None:
        self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, self.file.open)

    async def close(self) -> None:
        try:
            await self._batches.drain()
        finally:
            if self._conn is not None:
                self._executor.submit(self._conn.close)
            # Waited for even when cancelled (a second Ctrl-C): the thread finishes its last
            # transaction and closes the file; the loop is not needed for that.
            self._executor.shutdown(wait=True)
            self._conn = None

    async def write(
        self, run: Callable[[Transaction], Awaitable[T]], forgets: Tags, after: Callable[[T], None] | None
    ) -> T:
        done = asyncio.get_running_loop().create_future()
        self._batches.add(_Write(run, done, forgets, after))
        return await done

    async def _commit_batch(self, batch: list[_Write]) -> None:
        began = time.perf_counter()
        try:
            outcomes, foreign = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._commit, batch
            )
        except sqlite3.OperationalError as exc:
            log.warning("write refused with 503: %s", exc)
            raise (Unavailable(LOCKED) if _locked(exc) else Unavailable()) from exc
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - began)
        if foreign:
            self.answers.clear()  # another process committed since this one's last commit
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            self._answer(write, ok, value)

    def _answer(self, write: _Write, ok: bool, value: Any) -> None:
        if ok:
            self.answers.forget_all(write.forgets)  # before anyone hears of the commit
            if write.after is not None:
                write.after(value)
        if write.done.done():
            return
        if ok:
            write.done.set_result(value)
        else:
            write.done.set_exception(value)

    def _commit(self, batch: list[_Write]) -> tuple[list[tuple[bool, Any]], bool]:
        """On the writer thread: the batch in one transaction, each write in a savepoint. Also
        answers whether another process committed since this one's last commit."""
        conn = self._conn
        assert conn is not None, "database is not open"
        self.file.check()
        self.file.begin(conn)
        changes = conn.total_changes
        alone = len(batch) == 1  # no savepoint: a refusal rolls the transaction back
        tx = SqliteTransaction(conn)
        try:
            outcomes: list[tuple[bool, Any]] = []
            for write in batch:
                if not alone:
                    conn.execute("SAVEPOINT write")
                refused: Exception
                try:
                    value = run_now(write.run(tx))
                except (DomainError, ValueError) as refusal:
                    refused = refusal
                except sqlite3.IntegrityError as refusal:
                    refused = Conflict("conflict", str(refusal))
                else:
                    outcomes.append((True, value))
                    if not alone:
                        conn.execute("RELEASE write")
                    continue
                outcomes.append((False, refused))
                self.batch_notes.clear()
                if alone:
                    conn.execute("ROLLBACK")
                    return outcomes, False
                conn.execute("ROLLBACK TO write")
                conn.execute("RELEASE write")
            if conn.total_changes == changes:  # every write was refused or changed nothing
                conn.execute("ROLLBACK")
                return outcomes, False
            (commits,) = conn.execute(_COUNT_COMMIT).fetchone()
            # Told before the commit is visible, kept after: a reader on the loop, whenever it
            # looks, sees one of these and does not take this commit for another process's.
            self.committing, self.before = commits, self.commits
            conn.execute("COMMIT")
            foreign, self.commits = commits != self.commits + 1, commits
            return outcomes, foreign
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self.batch_notes.clear()


def _backup(source_path: str, path: str) -> None:
    partial = f"{path}.partial"
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target)
            (check,) = target.execute("PRAGMA integrity_check").fetchone()
            if check != "ok":
                raise StoreError(f"the copy failed its integrity check: {check}")
        finally:
            target.close()
        os.replace(partial, path)
    finally:
        source.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


def _flocked(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except OSError:  # EWOULDBLOCK, or a file system without flock: as if another held it
        return False
    return True


class ServerLock:
    """Which servers may serve a database file together (:func:`fleet_joins`): a ``flock`` on
    ``<db>.server`` held while the app runs (the kernel drops it when the process dies, even by
    kill -9), exclusive for a server without Redis (and for ``migrate``), shared by the servers of
    one Redis fleet. The file holds the holder's mark: the first server of a fleet writes it while
    its lock is still exclusive, so whoever gets the shared lock reads the fleet's. Apps of one
    process share it when their marks are the same (tests, embedding)."""

    _held: ClassVar[dict[str, tuple[int, int, str]]] = {}  # path -> (fd, apps holding it, mark)

    def __init__(self, db: str, mark: str = "alone") -> None:
        self.path = os.path.abspath(db) + ".server"
        self.mark = mark

    def acquire(self) -> None:
        fd, count, mark = self._held.get(self.path, (-1, 0, self.mark))
        if count == 0:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:  # a folder that is missing or read-only: opening the database says so
                return
            try:
                self._lock(fd)
            except BaseException:
                os.close(fd)
                raise
        elif mark != self.mark:
            raise StoreError(fleet_refusal(self.mark, [mark], self.path.removesuffix(".server")))
        self._held[self.path] = (fd, count + 1, mark)

    def _lock(self, fd: int) -> None:
        shared = self.mark.startswith("redis ")
        theirs = ""
        for _ in range(200):  # a fleet's first server holds it exclusively for a few µs: ask again
            if _flocked(fd, fcntl.LOCK_EX):
                os.ftruncate(fd, 0)
                os.pwrite(fd, self.mark.encode(), 0)
                if not shared or _flocked(fd, fcntl.LOCK_SH):  # no atomic downgrade: another may get in
                    return
                continue
            if shared and _flocked(fd, fcntl.LOCK_SH):
                theirs = os.pread(fd, 100, 0).decode(errors="replace")
                if fleet_joins(self.mark, [theirs]):
                    return
                fcntl.flock(fd, fcntl.LOCK_UN)
                if theirs.startswith("redis "):
                    break
                continue  # the holder it found left meanwhile, its mark with it
            theirs = os.pread(fd, 100, 0).decode(errors="replace")  # unlocked: for the wording only
            if not (shared and theirs.startswith("redis ")):
                break
            time.sleep(0.001)
        raise StoreError(fleet_refusal(self.mark, [theirs], self.path.removesuffix(".server")))

    def release(self) -> None:
        fd, count, mark = self._held.pop(self.path, (-1, 0, ""))
        if count > 1:
            self._held[self.path] = (fd, count - 1, mark)
        elif count == 1:
            os.close(fd)


def _fetched(cursor: sqlite3.Cursor, first: bool) -> Any:
    return cursor.fetchone() if first else cursor.fetchall()


class SqliteDatabase(Remembering):
    """One SQLite file in WAL mode (:class:`Database`): a writer (:class:`SqliteWriter`), a
    read-only connection on the event loop, and the remembered answers. Reads run on the loop: in
    WAL mode a reader never waits for a writer and sees every committed write, and a point lookup
    costs microseconds, less than a round trip to a thread."""

    catalog: ClassVar[type[CatalogStore]] = SqliteCatalog
    players: ClassVar[type[PlayerStore]] = SqlitePlayers
    loaders: ClassVar[type[LoaderStore]] = SqliteLoaders

    foreign_commits_seen_within = 0.001
    """Seconds: how stale a remembered answer may be after another process's commit."""

    pause_between_chunks = 0.0
    """Seconds a bulk write (an import) leaves the file free between its transactions. A server
    needs none (its own writers queue between chunks); a process beside one (the CLI) does: the
    server's writes wait for the file by polling it, every 100 ms at most, and would keep
    missing gaps shorter than that."""

    def __init__(
        self, path: str, *, write_wait: float = 5.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.answers = RememberedAnswers()
        self._file = SqliteFile(path, write_wait)
        self._writer = SqliteWriter(self._file, self.answers)
        self._monotonic = monotonic
        self._reader: SqliteTransaction | None = None
        self._checked = -math.inf
        self._credentials = TurnLook(lambda: (self._rows(CREDENTIALS, (), True) or (0,))[0])

    async def open(self) -> SqliteDatabase:
        async with opening(self, self._refusal):
            await self._writer.open()
            reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._reader = SqliteTransaction(reader)
            for pragma in ("query_only = ON", "busy_timeout = 1000"):
                reader.execute(f"PRAGMA {pragma}")
            (self._writer.commits,) = reader.execute(_COMMITS).fetchone()
        return self

    def _refusal(self, exc: BaseException) -> StoreError | None:
        if not isinstance(exc, sqlite3.Error | OSError):
            return None
        folder = os.path.dirname(os.path.abspath(self.path))
        reason = "it is locked by another process" if _locked(exc) else str(exc)
        if not os.path.isdir(folder):
            reason = f"the folder {folder} does not exist"
        return StoreError(f"cannot use database {self.path}: {reason}")

    async def close(self) -> None:
        try:
            await self._writer.close()
        finally:
            if self._reader is not None:
                self._reader.conn.close()
            self._reader = None

    async def write(self, run: Run[T], *, forgets: Tags = (), after: After[T] = None) -> T:
        """As :meth:`Database.write`; ``run`` runs on the writer thread (see :func:`run_now`)."""
        return await self._writer.write(moving_credentials(run, forgets), forgets, after)

    def batch_notes(self, area: str) -> dict[Any, Any]:
        """The writer thread's notes for ``area`` within the transaction under way (see
        :attr:`SqliteWriter.batch_notes`): for a write's ``run`` only."""
        return self._writer.batch_notes.setdefault(area, {})

    def on_commit(self, observe: Callable[[float], None]) -> None:
        self._writer.on_commit = observe

    # Reads, on the loop ------------------------------------------------------------

    def _rows(self, sql: str, args: Sequence[Any], first: bool) -> Any:
        return self._reading(lambda conn: _fetched(conn.execute(sql, args), first))

    def _reading(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """``read`` on the loop's connection; a read that could not get the file in time is a 503."""
        assert self._reader is not None, "database is not open"
        try:
            return read(self._reader.conn)
        except sqlite3.OperationalError as exc:
            log.warning("read refused with 503: %s", exc)
            raise Unavailable() from exc

    async def one(self, sql: str, *args: Any) -> Any:
        return self._rows(sql, args, True)

    async def value(self, sql: str, *args: Any) -> Any:
        row = self._rows(sql, args, True)
        return None if row is None else row[0]

    async def all(self, sql: str, *args: Any) -> list[Any]:
        return self._rows(sql, args, False)

    async def snapshot(self, read: Callable[[Transaction], Awaitable[T]]) -> T:
        """``read(transaction)`` in one read transaction: its queries see one commit, never a
        write that lands between two of them."""

        def within(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return run_now(read(SqliteTransaction(conn)))
            finally:
                conn.execute("COMMIT")

        return self._reading(within)

    def trusted(self) -> bool:
        """Always, on a file: this process forgets a tag when it commits a write that names it,
        and another process's commit moves the ``commits`` counter, looked at when a millisecond
        has passed since the last look: all answers are then forgotten, within a millisecond,
        and a hit costs no query. SQLite's reads never wait (:func:`run_now`), so no commit can
        slip in between a read and remembering its answer unseen."""
        now = self._monotonic()
        if now - self._checked >= self.foreign_commits_seen_within:
            self._checked = now
            (commits,) = self._rows(_COMMITS, (), True)
            writer = self._writer
            if commits not in (writer.commits, writer.committing, writer.before):
                self.answers.clear()
                writer.commits = commits
        return True

    async def credentials(self) -> int:
        """The ``credentials`` counter: it moves with every commit that changes a credential.
        Looked at once per turn of the event loop (see :class:`TurnLook`)."""
        return self._credentials()

    # The file -------------------------------------------------------------------

    async def ping(self) -> bool:
        """Whether the file answers a query now and is still the file at the path (the health check)."""
        try:
            self._file.check()
            return await self.value(_COMMITS) is not None
        except (DomainError, sqlite3.Error, AssertionError):
            return False

    async def backup_to(self, path: str) -> None:
        """Copy the database to ``path`` through SQLite's backup API, on a read snapshot: the
        copy is consistent while writers go on. Written beside ``path`` and renamed into place,
        so ``path`` never holds half a copy; an existing file is refused."""
        if os.path.exists(path):
            raise StoreError(f"{path} exists; choose a new file")
        try:
            await asyncio.to_thread(_backup, self.path, path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot back up to {path}: {exc}") from exc


async def open_sqlite(config: Config) -> SqliteDatabase:
    return await SqliteDatabase(config.db, write_wait=config.write_wait).open()


# ---------------------------------------------------------------------------
# 10. PostgreSQL: one store for many machines (XE_DB=postgresql://...)
# ---------------------------------------------------------------------------

PG_SCHEMA_VERSION = 3

PG_SCHEMA = schema_for(
    """\
-- xenon_elixir schema for PostgreSQL. Every statement is idempotent: the whole script runs, in
-- one transaction under an advisory lock, when the database is older than this version (empty,
-- say). counters.schema records the version; a database of a newer version is refused. The
-- tables are SQLite's; identity columns stand for SQLite's rowids (the order things came in).

""",
    Dialect(
        *("text", "double precision", "bigint", "boolean", "false"),
        id="bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        ord="\n    ord        bigint GENERATED BY DEFAULT AS IDENTITY,",
        without_rowid="",
    ),
    # A track's words (lower case, accents removed, as SQLite's unicode61 tokenizer with
    # remove_diacritics 2 cuts them) per column for the ranking, and together for the index.
    track_words="""
    title_words  text[] NOT NULL,
    author_words text[] NOT NULL,
    words        text[] GENERATED ALWAYS AS (title_words || author_words) STORED,""",
    counters=", ('tracks', 0), ('tokens', 0)",
    tail="""
ALTER TABLE player_seqs ADD COLUMN IF NOT EXISTS followed_until double precision;

CREATE INDEX IF NOT EXISTS tracks_by_word ON tracks USING gin (words);

-- search_words counts the tracks holding each word, and the counters 'tracks' and 'tokens' the
-- tracks and their words, for bm25 as SQLite's FTS5 computes it.
CREATE TABLE IF NOT EXISTS search_words (
    word   text PRIMARY KEY,
    tracks bigint NOT NULL
);

CREATE INDEX IF NOT EXISTS mapper_ids_in_order ON mapper_ids (source_id, target_id, ord);

-- A running load's ids, as they came: appended with COPY (an id sent again is a second row;
-- its first row places it, its last gives its new id), merged into the mapper by its done.
CREATE TABLE IF NOT EXISTS loader_ids (
    target_id text NOT NULL,
    old_id    text NOT NULL,
    new_id    text NOT NULL,
    ord       bigint GENERATED BY DEFAULT AS IDENTITY
);

CREATE INDEX IF NOT EXISTS loader_ids_in_order ON loader_ids (target_id, ord);
""",
)

_PG_SCHEMA_LOCK = 7_362_881_013
"""The advisory lock that one process at a time holds to create or check the schema."""
_PG_SERVER_LOCK = 7_362_881_014
"""The advisory lock that a server holds while it serves: see :meth:`PostgresDatabase.claim`."""
_SERVER_NAME = "xenon-elixir serve "
"""How a server's connections' ``application_name`` starts: see :func:`server_name`."""
_PG_GUILD_LOCK = 1_298_401
"""The first key of a guild's advisory lock (the second is a hash of its id)."""
PG_AWAY = "Service unavailable: the database cannot be reached; try again shortly."


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError:
        raise ConfigError("XE_DB=postgresql://... needs asyncpg: pip install 'xenon-elixir[scale]'") from None
    return asyncpg


def is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


_TOKEN = re.compile(r"[^\W_]+")


def search_tokens(text: str) -> list[str]:
    """Words as SQLite's unicode61 tokenizer (remove_diacritics 2) cuts them: runs of letters and
    digits, lower case, accents removed."""
    folded = unicodedata.normalize("NFKD", text.lower())
    return _TOKEN.findall("".join(c for c in folded if not unicodedata.combining(c)))


def bm25(
    terms: Sequence[str],
    fields: Sequence[tuple[Sequence[str], float]],
    document_count: int,
    hits: Mapping[str, int],
    average_size: float,
) -> float:
    """FTS5's bm25 (k1 1.2, b 0.75) of one row, higher is better: each term's frequency counts
    its hits in each field times the field's weight; the row's size is all its words."""
    size = sum(len(words) for words, _ in fields)
    score = 0.0
    for term in terms:
        found = hits.get(term, 0)
        idf = math.log((document_count - found + 0.5) / (found + 0.5))
        idf = idf if idf > 0 else 1e-6
        frequency = sum(weight * words.count(term) for words, weight in fields)
        score += idf * frequency * 2.2 / (frequency + 1.2 * (0.25 + 0.75 * size / (average_size or 1)))
    return score


async def _pg_release(conn: Any) -> None:
    """What a connection needs on its way back to the pool: only a transaction that a
    cancellation left open is rolled back. The store sets no session state, so asyncpg's own
    reset (a round trip each time, a tenth of a play) has nothing to undo."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def masked_url(url: str) -> str:
    """A database URL with its password hidden."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


@functools.lru_cache(maxsize=1024)
def pg_sql(sql: str) -> str:
    """A statement in SQLite's dialect as PostgreSQL reads it: ``?`` and ``?N`` parameters as
    ``$1``, ``$2``, ... and ``$N`` (none of our SQL quotes a ``?``), and ``rowid`` (the order rows
    came in) as the tables' ``ord`` identity columns."""
    count = itertools.count(1)
    sql = re.sub(r"\?(\d*)", lambda m: f"${m.group(1) or next(count)}", sql)
    return re.sub(r"\browid\b", "ord", sql)


def _changed(status: str) -> int:
    """The rows a statement changed, from its status (``UPDATE 3``, ``INSERT 0 1``)."""
    count = status.rpartition(" ")[2]
    return int(count) if count.isdigit() else 0


class PostgresTransaction:
    """:class:`Transaction` on an asyncpg connection, inside its transaction."""

    __slots__ = ("conn", "held", "_database")

    def __init__(self, conn: Any, database: PostgresConnections) -> None:
        self.conn = conn
        self.held: asyncio.Lock | None = None
        self._database = database

    async def one(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchrow(pg_sql(sql), *args)

    async def value(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(pg_sql(sql), *args)

    async def all(self, sql: str, *args: Any) -> list[Any]:
        return await self.conn.fetch(pg_sql(sql), *args)

    async def run(self, sql: str, *args: Any) -> int:
        return _changed(await self.conn.execute(pg_sql(sql), *args))

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self.conn.executemany(pg_sql(sql), rows)

    async def number(self, counter: str, by: int = 1, statement: str | None = None, *args: Any) -> int:
        """As :meth:`Transaction.number`, or the last of several: ``statement`` moves the row
        itself, and returns its value. In this process the ``after`` calls follow the numbers'
        order too (a lock held from here until ``after`` has run)."""
        lock = self._database.ordering(counter)
        await lock.acquire()
        self.held = lock
        if statement is None:
            statement, args = pg_sql(NUMBER), (by, counter)
        return await self.conn.fetchval(statement, *args)


class ClaimRefused(StoreError):
    """Another server serves the database, and this one may not beside it (:func:`fleet_refusal`):
    ``theirs``, the marks of the others found (none: the lock is held by a session that names no
    server, such as this server's own lost one, not yet ended)."""

    def __init__(self, message: str, theirs: list[str]) -> None:
        super().__init__(message)
        self.theirs = theirs


CLAIM_CHECK = 2.0
"""Seconds between looks at a claim's connection (:class:`PostgresClaim`): a failover may cut it
without a word on its socket. A look not answered within :data:`CLAIM_SILENT` finds it lost (a
busy process's loop may answer a look late; a claim taken again needlessly costs a second)."""
CLAIM_SILENT = 5.0
CLAIM_RETRY = 0.5
"""Seconds between tries to take a lost claim again."""


class PostgresClaim:
    """Serve a database as a server marked ``mark`` beside the others (:func:`fleet_joins`), as
    :class:`ServerLock` does a file: a connection of its own, named by the mark, holds an
    advisory lock while the server runs, exclusive without Redis, shared by one Redis fleet
    (PostgreSQL drops it with the connection, a kill -9 included). Each server names itself
    before it looks at the others' names, so of two starting at once at least one sees the
    other. A claim whose connection is lost (a restart, a failover: cut, or silent for
    :data:`CLAIM_SILENT`) is taken again within :data:`CLAIM_RETRY` of the server answering, so a
    server started after that still finds this one, idle or not; one that started in between is
    named in an error every minute until one of them stops. Apps of one process share the claim
    of the first when their marks are the same (tests, embedding), as they share a file's
    :class:`ServerLock`."""

    _held: ClassVar[dict[str, tuple[str, int]]] = {}
    """url -> (mark, apps of this process serving it)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        self._conn: Any = None
        self._counted = False
        self._session: Any = None
        """The claim's session: its pid and its start."""
        self._cut = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    async def take(self, mark: str) -> None:
        database = self.database
        held, count = self._held.get(database.url, (mark, 0))
        if count:
            if held != mark:
                raise ClaimRefused(fleet_refusal(mark, [held], masked_url(database.url)), [held])
            self._held[database.url], self._counted = (mark, count + 1), True
            return
        self._hold(*await self._lock(mark))
        self._held[database.url], self._counted = (mark, 1), True
        self._keeper = asyncio.create_task(self._keep(mark))

    async def _lock(self, mark: str, replacing: Any = None) -> tuple[Any, Any]:
        """A connection that holds the claim's lock, the others' names agreeing with ``mark``, and
        its session (pid and start, which no other session shares, whatever the pid); ``replacing``:
        this claim's lost session, ended first (a session the server still runs holds the lock
        until it ends)."""
        database = self.database
        lock = "pg_try_advisory_lock_shared" if mark.startswith("redis ") else "pg_try_advisory_lock"
        conn = None
        try:
            conn = await database.asyncpg.connect(
                database.url, timeout=database.write_wait, server_settings={"application_name": database.name}
            )
            if replacing is not None:
                with contextlib.suppress(database.asyncpg.PostgresError):  # (not allowed: it ends by itself)
                    await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE pid = $1 AND backend_start = $2 AND pid <> pg_backend_pid()",
                        *replacing,
                    )
            got = await conn.fetchval(f"SELECT {lock}($1)", _PG_SERVER_LOCK)
            session = await conn.fetchrow(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            )
            found = await conn.fetch(
                "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = current_database() "
                "AND starts_with(application_name, $1) AND application_name <> $2",
                _SERVER_NAME,
                database.name,
            )
        except BaseException as exc:  # a cancel too: never a connection left holding the lock
            if conn is not None:
                conn.terminate()
            if isinstance(exc, (database.asyncpg.PostgresError, *database.faults)):
                raise StoreError(f"cannot use database {masked_url(database.url)}: {exc}") from exc
            raise
        theirs = [name.removeprefix(_SERVER_NAME).rpartition(" ")[0] for (name,) in found]
        # The names as well as the lock: a server whose claim a PostgreSQL restart ended is still
        # seen by its pool's connections, named alike (until it takes its claim again).
        if not got or (theirs and not fleet_joins(mark, theirs)):
            conn.terminate()  # its lock, if it got one, with it
            raise ClaimRefused(fleet_refusal(mark, theirs, masked_url(database.url)), theirs)
        return conn, tuple(session)

    def _hold(self, conn: Any, session: Any) -> None:
        self._conn, self._session = conn, session
        self._cut.clear()
        conn.add_termination_listener(lambda lost: self._cut.set() if lost is self._conn else None)

    async def _keep(self, mark: str) -> None:
        """While the claim is held: look at its connection every :data:`CLAIM_CHECK`, and at once
        when it is cut; a lost one is taken again. (``asyncio.timeout``, not ``wait_for``: on
        Python 3.11 a cancel that came as the look was answered was lost, and a drop waited on
        this task for good.)"""
        faults = (TimeoutError, self.database.asyncpg.PostgresError, *self.database.faults)
        while self._counted:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLAIM_CHECK):
                    await self._cut.wait()
            conn = self._conn
            if not self._cut.is_set():
                try:
                    async with asyncio.timeout(CLAIM_SILENT):
                        await conn.fetchval("SELECT 1")
                    continue
                except faults:
                    pass
            self._conn = None
            conn.terminate()
            self._hold(*await self._take_again(mark, self._session))

    async def _take_again(self, mark: str, lost: Any) -> tuple[Any, Any]:
        tries = 0
        while True:
            try:
                held = await self._lock(mark, replacing=lost)
            except StoreError as exc:  # not back yet; or another server took the database meanwhile
                tries += 1
                if tries % int(60 / CLAIM_RETRY) == 2:  # (the first: the lost session may be ending)
                    if not isinstance(exc, ClaimRefused):
                        log.warning("the claim on the database was lost and is not held again yet: %s", exc)
                    elif exc.theirs:  # the fleet is mixed: say so until one of them stops
                        log.error("the claim on the database was lost and is not held again: %s", exc)
                    else:
                        log.warning("the claim on the database was lost and is not held again yet: "
                                    "its lost session has not ended")  # fmt: skip
                await asyncio.sleep(CLAIM_RETRY)
                continue
            log.warning("the claim on the database was lost and is held again")
            return held

    async def drop(self) -> None:
        url = self.database.url
        if self._counted:
            self._counted = False
            mark, count = self._held.pop(url)
            if count > 1:
                self._held[url] = (mark, count - 1)
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None
        if self._conn is not None:
            conn, self._conn = self._conn, None

            async def leave() -> None:  # unlocked first: a server starting next gets in at once
                await conn.execute("SELECT pg_advisory_unlock_all()")
                await conn.close()

            try:
                await asyncio.wait_for(leave(), 2.0)
            except (TimeoutError, self.database.asyncpg.PostgresError, *self.database.faults):
                conn.terminate()


class PostgresConnections:
    """A PostgreSQL database's connections: an asyncpg pool, opened with the schema made or
    checked, its reads, and what asyncpg raises, answered as the API does. A lost connection, a
    server that is starting, shutting down or read-only (a failover under way) is
    :class:`Unavailable` (503); the pool makes new connections as the server comes back."""

    pool_size = 10

    def __init__(self, url: str, *, write_wait: float = 5.0, name: str = "xenon-elixir") -> None:
        self.url = url
        self.write_wait = write_wait
        self.name = name
        """The connections' ``application_name``: a server's says so (see :class:`PostgresClaim`)."""
        self._pool: Any = None
        self._orders: dict[str, asyncio.Lock] = {}
        self.asyncpg = _asyncpg()
        errors = self.asyncpg.exceptions
        self.faults: tuple[type[BaseException], ...] = (
            OSError,
            asyncio.TimeoutError,
            self.asyncpg.InterfaceError,
            errors.PostgresConnectionError,
            errors.CannotConnectNowError,
            errors.OperatorInterventionError,
            errors.ReadOnlySQLTransactionError,
            errors.InsufficientResourcesError,
            errors.ConnectionFailureError,
            # a connection the server cut (a restart, a failover) can answer a new query with
            # this, its protocol still waiting for the end of the server's last words (asyncpg
            # issue #784): a lost connection too, its close follows, and the pool opens another
            self.asyncpg.InternalClientError,
        )

    def __repr__(self) -> str:
        return f"PostgresDatabase({masked_url(self.url)})"

    def ordering(self, counter: str) -> asyncio.Lock:
        """The lock that keeps this process's ``after`` calls in the order of ``counter``'s numbers."""
        return self._orders.setdefault(counter, asyncio.Lock())

    async def open(self) -> Self:
        async with opening(self, self._refusal):
            self._pool = await self.asyncpg.create_pool(
                self.url,
                min_size=0,  # connections on demand: none to restore (and log) while the server is away
                reset=_pg_release,
                max_size=self.pool_size,
                timeout=self.write_wait,
                command_timeout=max(self.write_wait, 5.0),
                # a write waits this long for a lock another transaction holds, as on SQLite
                server_settings={
                    "lock_timeout": f"{max(int(self.write_wait * 1000), 1)}ms",
                    "application_name": self.name,
                },
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_SCHEMA_LOCK)
                exists = await conn.fetchval("SELECT to_regclass('counters')") is not None
                version = (
                    exists and await conn.fetchval("SELECT value FROM counters WHERE name = 'schema'") or 0
                )
                if version > PG_SCHEMA_VERSION:
                    raise StoreError(
                        f"{masked_url(self.url)} has schema version {version}; "
                        f"this xenon_elixir knows up to {PG_SCHEMA_VERSION}"
                    )
                if version < PG_SCHEMA_VERSION:
                    await conn.execute(PG_SCHEMA)
                    await conn.execute(
                        "INSERT INTO counters VALUES ('schema', $1) ON CONFLICT (name) DO UPDATE SET value = $1",
                        PG_SCHEMA_VERSION,
                    )
        return self

    def _refusal(self, exc: BaseException) -> StoreError | None:
        if isinstance(exc, (self.asyncpg.PostgresError, *self.faults)):
            return StoreError(f"cannot use database {masked_url(self.url)}: {exc}")
        return None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except self.faults:  # asyncio.TimeoutError among them
                pool.terminate()

    def _unavailable(self, exc: BaseException) -> Unavailable:
        log.warning("database refused with 503: %s", exc)
        return Unavailable(PG_AWAY)

    async def _read(self, how: str, sql: str, *args: Any) -> Any:
        assert self._pool is not None, "database is not open"
        try:
            return await getattr(self._pool, how)(pg_sql(sql), *args)
        except self.faults as exc:
            raise self._unavailable(exc) from exc

    async def one(self, sql: str, *args: Any) -> Any:
        return await self._read("fetchrow", sql, *args)

    async def value(self, sql: str, *args: Any) -> Any:
        return await self._read("fetchval", sql, *args)

    async def all(self, sql: str, *args: Any) -> list[Any]:
        return await self._read("fetch", sql, *args)

    async def snapshot(self, read: Callable[[PostgresTransaction], Awaitable[T]]) -> T:
        """``read(transaction)`` in one read-only repeatable-read transaction: one commit's view."""
        assert self._pool is not None, "database is not open"
        try:
            async with self._pool.acquire() as conn:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    return await read(PostgresTransaction(conn, self))
        except self.faults as exc:
            raise self._unavailable(exc) from exc

    async def ping(self) -> bool:
        try:
            return await asyncio.wait_for(self.value("SELECT 1"), 2.0) == 1
        except (TimeoutError, DomainError, AssertionError, AttributeError):
            return False


class PostgresDatabase(PostgresConnections, Remembering):
    """A PostgreSQL store (:class:`Database`): each write one transaction on a connection of its
    own (the server runs them side by side; only player changes are grouped, see
    :class:`PostgresPlayers`), reads on any connection (:class:`PostgresConnections`).

    RememberedAnswers are remembered only when a broker tells every process of every commit's forgotten
    tags (Redis: :meth:`shared`); without one, another machine's commit could not be noticed,
    so nothing is remembered."""

    catalog: ClassVar[type[CatalogStore]]
    players: ClassVar[type[PlayerStore]]
    loaders: ClassVar[type[LoaderStore]]  # set below, once the classes exist

    pause_between_chunks = 0.0
    defers_looks = True
    attempts = 3
    """Tries of a write that PostgreSQL aborted to break a deadlock or a serialization conflict."""

    def __init__(self, url: str, *, write_wait: float = 5.0, name: str = "xenon-elixir") -> None:
        super().__init__(url, write_wait=write_wait, name=name)
        self.answers = RememberedAnswers()
        self._claim = PostgresClaim(self)
        self._on_commit: Callable[[float], None] | None = None
        self._share: Callable[[Tags], None] | None = None
        self._sharing: Callable[[], int | None] = lambda: None
        self._trusted_at: int | None = None
        """What :meth:`trusted` last found ``sharing()`` say."""
        self._credentials = FreshLook(self._credentials_look)
        errors = self.asyncpg.exceptions
        self._retried: tuple[type[BaseException], ...] = (
            errors.DeadlockDetectedError,
            errors.SerializationError,
        )
        self._locked: type[BaseException] = errors.LockNotAvailableError

    async def claim(self, mark: str) -> None:
        """Serve this database as a server marked ``mark``: see :class:`PostgresClaim`."""
        await self._claim.take(mark)

    async def close(self) -> None:
        await self._claim.drop()
        await super().close()

    def shared(
        self,
        share: Callable[[Tags], None],
        sharing: Callable[[], int | None],
        watch: Callable[[Tag], Awaitable[bool]] | None = None,
    ) -> None:
        """Remember answers: ``share(tags)`` tells every other process what a commit here made
        stale; ``sharing()`` is ``None`` while their tags cannot reach this process (Redis away),
        and otherwise a number that moves each time they may have been lost since it was last
        read (the broker's epoch: Redis was away, or found emptied); ``watch``: see
        :attr:`Remembering.watch`."""
        self._share, self._sharing, self.watch = share, sharing, watch

    def forget(self, tags: Tags) -> None:
        """Forget what a commit (this process's or another's) made stale."""
        self.answers.forget_all(tags)

    def on_commit(self, observe: Callable[[float], None]) -> None:
        self._on_commit = observe

    async def write(
        self,
        run: Run[T],
        *,
        forgets: Tags = (),
        after: After[T] = None,
        also_forgets: Callable[[], Tags] | None = None,
        first: str | None = None,
    ) -> T:
        """As :meth:`Database.write`; a refusal rolls the whole transaction back, and a deadlock
        is tried again. ``also_forgets()`` names more tags once ``run`` has run (what it found it
        changed). ``first``, a statement without parameters (a lock), goes with the ``BEGIN`` in
        one round trip."""
        assert self._pool is not None, "database is not open"
        run = moving_credentials(run, forgets)
        for attempt in range(self.attempts):
            began = time.perf_counter()
            tx: PostgresTransaction | None = None
            try:
                async with self._pool.acquire() as conn:
                    tx = PostgresTransaction(conn, self)
                    if first is None:
                        async with conn.transaction():
                            value = await run(tx)
                    else:  # what fails leaves the transaction open: the pool's release rolls it back
                        await conn.execute(f"BEGIN; {first}")
                        value = await run(tx)
                        await conn.execute("COMMIT")
                if self._on_commit is not None:
                    self._on_commit(time.perf_counter() - began)
                stale = [*forgets, *(also_forgets() if also_forgets is not None else ())]
                if stale:  # before anyone hears of the commit
                    self.forget(stale)
                    if self._share is not None:
                        self._share(stale)
                if after is not None:
                    after(value)
                return value
            except self._retried as exc:
                if attempt + 1 == self.attempts:
                    raise self._unavailable(exc) from exc
            except self._locked as exc:
                log.warning("write refused with 503: %s", exc)
                raise Unavailable(LOCKED) from exc
            except self.asyncpg.exceptions.IntegrityConstraintViolationError as exc:
                raise Conflict("conflict", str(exc)) from exc
            except self.faults as exc:
                raise self._unavailable(exc) from exc
            finally:
                if tx is not None and tx.held is not None:
                    tx.held.release()
        raise AssertionError("unreachable")

    def trusted(self) -> bool:
        """While every commit's tags reach this process (a broker is up: :meth:`shared`); while
        they do not, nothing is remembered (a credential's counter is looked at on each use,
        shared by the requests waiting for a look: see :class:`FreshLook`). What was remembered
        before tags may have been lost is forgotten before the next use, even when no request
        came while they were (an outage between two requests, or Redis emptied by a restart)."""
        mark = self._sharing()
        if mark is not None and mark == self._trusted_at:
            return True
        self.answers.clear()
        self._trusted_at = mark
        return mark is not None

    def seen(self) -> Any:
        return self._sharing()

    async def credentials(self) -> int:
        """The ``credentials`` counter, by a look that began after the call (see :class:`FreshLook`)."""
        return await self._credentials()

    async def _credentials_look(self) -> int:
        return await self.value(CREDENTIALS) or 0

    async def backup_to(self, path: str) -> None:
        raise StoreError("a PostgreSQL database is backed up with pg_dump, not by xenon-elixir backup")


_SEARCH_CANDIDATES = 256


class PostgresCatalog(CatalogStore):
    """The catalog on PostgreSQL. Search ranks as SQLite's FTS5 does (see the schema): the first
    256 tracks holding all the words (or any), by the GIN index, ranked by bm25 with a title word
    weighing twice an author word. The words are cut here, in Python, for both the index and the
    query, and go to the server as an array parameter: nothing typed is read as query syntax,
    and no extension (unaccent) is needed."""

    track_upsert = f"""
        INSERT INTO tracks ({TRACK_COLUMNS}, title_words, author_words)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (source, identifier) DO UPDATE SET
            title = excluded.title, author = excluded.author, length = excluded.length,
            uri = excluded.uri, thumbnail = excluded.thumbnail, is_stream = excluded.is_stream,
            encoded = excluded.encoded, title_words = excluded.title_words,
            author_words = excluded.author_words"""
    words_of = """
        SELECT t.title_words || t.author_words FROM tracks AS t
        JOIN unnest($1::text[], $2::text[]) AS k (source, identifier)
        ON t.source = k.source AND t.identifier = k.identifier"""
    words_count = """
        INSERT INTO search_words (word, tracks) SELECT * FROM unnest($1::text[], $2::bigint[])
        ON CONFLICT (word) DO UPDATE SET tracks = search_words.tracks + excluded.tracks"""
    counters_add = """
        UPDATE counters SET value = value + CASE name WHEN 'tracks' THEN $1::bigint ELSE $2::bigint END
        WHERE name IN ('tracks', 'tokens')"""
    candidates = """
        SELECT track_id, title_words, author_words FROM tracks WHERE words {op} $1::text[]
        ORDER BY track_id LIMIT {limit}"""
    stats = """
        SELECT (SELECT value FROM counters WHERE name = 'tracks'),
               (SELECT value FROM counters WHERE name = 'tokens'),
               array(SELECT coalesce(s.tracks, 0) FROM unnest($1::text[]) WITH ORDINALITY AS u (word, i)
                     LEFT JOIN search_words AS s ON s.word = u.word ORDER BY u.i)"""
    track_by_id = f"SELECT {TRACK_COLUMNS} FROM tracks WHERE track_id = $1"

    async def write_tracks(self, tx: Transaction, chunk: list[Track]) -> None:
        """The tracks, each import's word counts kept in step."""
        chunk = sorted(chunk, key=lambda t: (t.source, t.identifier))  # one lock order for every import
        before = await tx.all(self.words_of, [t.source for t in chunk], [t.identifier for t in chunk])
        rows, counts, added, tokens = [], Counter[str](), len(chunk) - len(before), 0
        for track in chunk:
            title, author = search_tokens(track.title), search_tokens(track.author)
            rows.append((*track_row(track), title, author))
            counts.update(set(title + author))
            tokens += len(title) + len(author)
        for (words,) in before:
            counts.subtract(set(words))
            tokens -= len(words)
        await tx.many(self.track_upsert, rows)
        changed = sorted((word, n) for word, n in counts.items() if n)
        await tx.run(self.words_count, [w for w, _ in changed], [n for _, n in changed])
        await tx.run(self.counters_add, added, tokens)

    async def search(self, words: Sequence[str], every: bool) -> Track | None:
        terms = [token for word in words for token in search_tokens(word)]
        sql = self.candidates.format(op="@>" if every else "&&", limit=_SEARCH_CANDIDATES)

        async def ranked(tx: Transaction) -> Track | None:
            found = await tx.all(sql, terms) if terms else []
            if not found:
                return None
            tracks, tokens, counts = await tx.one(self.stats, terms)
            hits = dict(zip(terms, counts, strict=True))
            average = tokens / tracks if tracks else 1.0
            best = max(
                found,
                key=lambda r: (bm25(terms, ((r[1], 2.0), (r[2], 1.0)), tracks, hits, average), -r[0]),
            )
            row = await tx.one(self.track_by_id, best[0])
            return None if row is None else track_of(row)

        return await self.database.remembered(
            ("catalog",), (every, *terms), lambda: self.database.snapshot(ranked), keep=lambda _: True
        )


def _future_of(pending: PendingChange) -> asyncio.Future[Player | None]:
    assert pending.done is not None
    return pending.done


_PG_LOCK_GUILDS = (
    "SELECT count(pg_advisory_xact_lock({key}, h)) FROM "
    "(SELECT DISTINCT hashtext(g) AS h FROM unnest({guilds}::text[]) AS g ORDER BY h) AS s"
)
"""Takes the guilds' locks in one order for every transaction of the fleet (their keys sorted:
two batches that share guilds never wait on each other in a circle)."""


def _pg_guilds_lock(guilds: Sequence[str]) -> str | None:
    """:data:`_PG_LOCK_GUILDS` for these guilds, to go with the ``BEGIN``: snowflakes are written
    into it as they are; for any other guild id (none comes from a route), ``None``."""
    if not all(g.isascii() and g.isdecimal() for g in guilds):
        return None
    names = ", ".join(f"'{g}'" for g in guilds)
    return _PG_LOCK_GUILDS.format(key=_PG_GUILD_LOCK, guilds=f"ARRAY[{names}]")


async def _pg_lock_guilds(tx: PostgresTransaction, guilds: Sequence[str]) -> None:
    """Take the guilds' locks, unless they went with the ``BEGIN`` (:func:`_pg_guilds_lock`)."""
    if _pg_guilds_lock(guilds) is None:
        await tx.conn.execute(_PG_LOCK_GUILDS.format(key="$1", guilds="$2"), _PG_GUILD_LOCK, list(guilds))


_PG_FOLLOWED_FRONTS = f"""
    SELECT p.channel_id, p.volume, p.paused, p.position, p.anchor, p.size,
           q.entry_id, {_TRACK_SELECT.replace("t.", "q.")}, q.requested_by,
           coalesce(s.followed_until > $3, false),
           (SELECT value FROM counters WHERE name = 'credentials'), g.guild_id
    FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS g (guild_id, front, i)
    LEFT JOIN player_seqs AS s ON s.guild_id = g.guild_id
    LEFT JOIN players AS p ON p.guild_id = g.guild_id
    LEFT JOIN LATERAL (
        SELECT * FROM queue WHERE queue.guild_id = p.guild_id ORDER BY entry_id
        LIMIT CASE WHEN s.followed_until > $3 THEN greatest(g.front, {PLAYER_FRONT}) ELSE g.front END
    ) AS q ON true
    ORDER BY g.i, q.entry_id"""
"""A batch's first read, under its guilds' locks: for each guild (``$1``), its player and the
front (``$2``) of its queue, as ``player_front`` reads them, whether the fleet follows it at
``$3`` (its front read deeper if so), the ``credentials`` counter (the look of a request whose
look was deferred: :func:`deferred_look`), then the guild: at least one row a guild, in their
order."""

_PG_QUEUE_APPEND = f"""
    INSERT INTO queue (guild_id, {TRACK_COLUMNS}, requested_by)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                         $7::text[], $8::text[], $9::boolean[], $10::text[], $11::text[])
    RETURNING guild_id, entry_id"""
_PG_PLAYERS_UPSERT = PlayerStore.upsert.replace(
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "SELECT * FROM unnest($14::text[], $15::text[], $16::bigint[], $17::boolean[], $18::double precision[], "
    "$19::double precision[], $20::double precision[], $21::bigint[])",
)
"""PlayerStore.upsert (its one conflict rule) over the arrays of a batch's rows."""
_PG_BATCH_WRITE = f"""
    WITH dropped AS (
        DELETE FROM queue WHERE entry_id IN (
            SELECT f.entry_id FROM unnest($12::text[], $13::bigint[]) AS d (guild_id, n),
            LATERAL (SELECT entry_id FROM queue WHERE queue.guild_id = d.guild_id
                     ORDER BY entry_id LIMIT d.n) AS f)
    ), appended AS ({_PG_QUEUE_APPEND}
    ), stored AS ({_PG_PLAYERS_UPSERT}
    ), numbered AS (
        INSERT INTO player_seqs (guild_id, seq)
        SELECT n.guild_id, (SELECT value FROM counters WHERE name = 'player_seq') + n.done
        FROM unnest($22::text[], $23::bigint[]) AS n (guild_id, done)
        ON CONFLICT (guild_id) DO UPDATE
            SET seq = player_seqs.seq + excluded.seq - (SELECT value FROM counters WHERE name = 'player_seq')
        RETURNING guild_id, seq
    )
    SELECT guild_id, seq, NULL::bigint FROM numbered
    UNION ALL SELECT guild_id, NULL, entry_id FROM appended"""
"""A batch's whole write in one statement, over arrays: each guild's entries dropped from the
front of its queue (``$12``, ``$13``) and appended (``$1``-``$11``), its player's row
(``$14``-``$21``), its number moved by its changes (``$22``, ``$23``); answered with each guild's
new number and each appended entry's id. (A change that stopped a player deleted its rows as
it ran: such a guild is only numbered.)"""


async def _pg_lease(guild_id: str, until: float, tx: PostgresTransaction) -> None:
    """A follower lease taken under the guild's lock (see :attr:`PlayerStore.leased`)."""
    await _pg_lock_guilds(tx, [guild_id])
    await tx.run(PlayerStore.leased, guild_id, until)


def _pg_player_of(guild_id: str, rows: Sequence[Any]) -> Player | None:
    """The player of a read's rows (the columns of ``player_front`` first)."""
    if not rows or rows[0][0] is None:
        return None
    channel_id, volume, paused, position, anchor, size = rows[0][:6]
    player = Player(guild_id, channel_id, volume, paused, position, anchor, deque(), more=size)
    if rows[0][6] is not None:
        player.queue.extend(QueueEntry(r[6], track_of(r[7:16]), r[16]) for r in rows)
    player.more = max(size - len(player.queue), 0)
    return player


@dataclasses.dataclass(slots=True)
class _GuildInBatch:
    """One guild's part of a batch of player changes: the player as its changes leave it, how
    many were done, and whether the fleet follows it / a change (dis)connected it."""

    current: Player | None
    followed: bool
    done: int = 0
    flipped: bool = False


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as the column arrays an ``unnest`` statement takes (``width`` empty ones for none)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


async def _pg_write_batch(
    tx: PostgresTransaction, guilds: dict[str, _GuildInBatch]
) -> dict[str, Iterator[int]]:
    """Every changed guild's rows, in one statement; each guild's numbers, in order."""
    drops: list[tuple[str, int]] = []
    entries: list[tuple[Any, ...]] = []
    players: list[tuple[Any, ...]] = []
    counts: list[tuple[str, int]] = []
    for guild_id, part in guilds.items():
        if not part.done:
            continue
        counts.append((guild_id, part.done))
        player = part.current
        if player is None:
            continue
        if player.dropped:
            drops.append((guild_id, player.dropped))
        entries += [(guild_id, *track_row(e.track), e.requested_by) for e in player.appended]
        players.append(PlayerStore.row_of(player))
    if not counts:
        return {}
    rows = await tx.conn.fetch(
        _PG_BATCH_WRITE,
        *_columns(entries, 11),
        *_columns(drops, 2),
        *_columns(players, 8),
        *_columns(counts, 2),
    )
    last = {guild_id: seq for guild_id, seq, entry_id in rows if entry_id is None}
    ids: dict[str, list[int]] = {}
    for guild_id, _, entry_id in rows:
        if entry_id is not None:
            ids.setdefault(guild_id, []).append(entry_id)
    for guild_id, part in guilds.items():
        if part.current is not None and part.done:
            for entry, entry_id in zip(part.current.appended, sorted(ids.get(guild_id, ())), strict=True):
                entry.entry_id = entry_id
    return {g: iter(range(last[g] - n + 1, last[g] + 1)) for g, n in counts}


PG_PLAYERS_LINGER = 0.001
"""Seconds a batch of player changes that follows another at once waits for more: a busy
process's batches grow and cost less a change (4 processes on 2 cores: about 13% more plays a
second), and a lone change never waits."""


class PostgresPlayers(PlayerStore):
    """Players on PostgreSQL. The changes of every guild that arrive while one batch commits are
    applied together in this process's next transaction (group commit), each on its guild's
    player as the change before it left it: the transaction takes the guilds' advisory locks
    with its ``BEGIN`` (sorted: see :func:`_pg_guilds_lock`), so one guild's changes run one at a
    time across every machine; reads every guild's player in one statement, and writes them, and
    moves each guild's own number in ``player_seqs``, in one more (:data:`_PG_BATCH_WRITE`):
    four round trips and one commit for the whole batch, whatever its guilds. A refused change
    leaves the others be (a savepoint, only where it had written already)."""

    queue_all = None
    # The player's row and the front of its queue in one statement (so from one commit).
    player_front = f"""
        SELECT p.channel_id, p.volume, p.paused, p.position, p.anchor, p.size,
               q.entry_id, {_TRACK_SELECT.replace("t.", "q.")}, q.requested_by
        FROM players AS p LEFT JOIN LATERAL (
            SELECT * FROM queue WHERE queue.guild_id = p.guild_id ORDER BY entry_id LIMIT $2
        ) AS q ON true
        WHERE p.guild_id = $1 ORDER BY q.entry_id"""

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__(database)
        self.pg = database
        self._batches: GroupCommit[PendingChange] = GroupCommit(
            self._commit_batch, _future_of, linger=PG_PLAYERS_LINGER
        )

    @classmethod
    async def read(cls, tx: Transaction, guild_id: str, front: int | None = PLAYER_FRONT) -> Player | None:
        return _pg_player_of(guild_id, await tx.all(cls.player_front, guild_id, front))

    async def commit(self, pending: PendingChange) -> Player | None:
        """Every guild's changes go in one line, applied in the order they came, a batch at a time."""
        done = pending.done = asyncio.get_running_loop().create_future()
        self._batches.add(pending)
        return await done

    async def follow(self, guild_id: str, until: float) -> None:
        await self.pg.write(functools.partial(_pg_lease, guild_id, until), first=_pg_guilds_lock([guild_id]))

    async def _commit_batch(self, batch: list[PendingChange]) -> None:
        guilds: dict[str, _GuildInBatch] = {}  # filled by _run, in the order the guilds came

        def committed(outcomes: list[tuple[bool, Any, int]]) -> None:
            for change, (ok, player, seq) in zip(batch, outcomes, strict=True):
                if ok and change.after is not None:
                    change.after(player, seq, guilds[change.guild_id].followed)

        names = list(dict.fromkeys(change.guild_id for change in batch))
        outcomes = await self.pg.write(
            lambda tx: self._run(tx, batch, guilds),
            forgets=[("player", guild_id) for guild_id in names],
            after=committed,
            also_forgets=lambda: [("connected", g) for g, part in guilds.items() if part.flipped],
            first=_pg_guilds_lock(names),
        )
        for change, (ok, answer, _seq) in zip(batch, outcomes, strict=True):
            done = _future_of(change)
            if not done.done():
                if ok:
                    done.set_result(answer)
                else:
                    done.set_exception(answer)

    async def _run(
        self, tx: PostgresTransaction, batch: list[PendingChange], guilds: dict[str, _GuildInBatch]
    ) -> list[tuple[bool, Any, int]]:
        guilds.clear()  # (a batch tried again after a deadlock starts over)
        fronts: dict[str, int] = {}
        for change in batch:
            fronts[change.guild_id] = max(fronts.get(change.guild_id, 0), change.front)
        await _pg_lock_guilds(tx, list(fronts))
        now = min(change.now for change in batch)
        rows = await tx.conn.fetch(_PG_FOLLOWED_FRONTS, list(fronts), list(fronts.values()), now)
        for guild_id, group in itertools.groupby(rows, key=lambda row: row[-1]):
            mine = list(group)
            guilds[guild_id] = _GuildInBatch(_pg_player_of(guild_id, mine), mine[0][-3])
        credentials = rows[0][-2] or 0
        outcomes: list[tuple[bool, Any]] = []
        for item in batch:
            part = guilds[item.guild_id]
            if any(counter != credentials for counter in item.looked_at):
                outcomes.append((False, CredentialsMoved()))
                continue
            if part.followed:  # a follower's frame shows 25 waiting tracks
                item.front = max(item.front, PLAYER_FRONT)
            before = player_copy(part.current)
            wrote: list[bool] = []  # a savepoint was taken: this change wrote before it could be refused
            try:
                changed = await self._one(tx, part.current, item, wrote)
            except (DomainError, ValueError) as refusal:
                if wrote:
                    await tx.conn.execute("ROLLBACK TO SAVEPOINT change")
                outcomes.append((False, refusal))
                part.current = before
                continue
            outcomes.append((True, changed))
            part.done += 1
            part.flipped |= (changed is None) != (part.current is None)
            part.current = player_copy(changed)  # the answer must not move with the next change
        seqs = await _pg_write_batch(tx, guilds)
        numbered: list[tuple[bool, Any, int]] = []
        for item, (ok, value) in zip(batch, outcomes, strict=True):
            if ok and value is not None:
                value.dropped, value.appended = 0, []
            numbered.append((ok, value, next(seqs[item.guild_id]) if ok else 0))
        return numbered

    async def _one(
        self, tx: PostgresTransaction, player: Player | None, item: PendingChange, wrote: list[bool]
    ) -> Player | None:
        """One change on the player as the one before left it (its drops and appends not yet
        written, but when more of the queue must be read)."""

        async def more(target: Player, count: int) -> None:
            if target.dropped or target.appended:
                if not wrote:
                    await tx.conn.execute("SAVEPOINT change")
                    wrote.append(True)
                await self._flush(tx, target)
            await self.load_front(tx, target, count)

        changed = await apply_change(player, item.change, item.now, item.front, more)
        if changed is None and player is not None:  # stopped: its queue goes now
            await self._flush(tx, player)  # (what earlier changes appended gets its ids)
            await tx.run(self.queue_clear, item.guild_id)
            await tx.run(self.delete, item.guild_id)
        return changed

    async def _flush(self, tx: PostgresTransaction, player: Player) -> None:
        """Write the entries a change took from the front and those it appended."""
        if player.dropped:
            await tx.run(self.queue_drop_front, player.guild_id, player.dropped)
        if player.appended:
            rows = [(player.guild_id, *track_row(e.track), e.requested_by) for e in player.appended]
            ids = await tx.all(_PG_QUEUE_APPEND, *_columns(rows, 11))
            for entry, (_, entry_id) in zip(player.appended, sorted(ids, key=lambda r: r[1]), strict=True):
                entry.entry_id = entry_id
        player.dropped, player.appended = 0, []


class PostgresLoaders(LoaderStore):
    """Loads on PostgreSQL: a load's ids are appended with ``COPY`` as they came (an id sent
    again is a second row: its first row places it, its last gives its new id); a loader's row
    is locked by the write that checks it runs."""

    loader_is = "SELECT 1 FROM loaders WHERE target_id = ? AND start_seq = ? FOR UPDATE"
    ids_merge = """
        INSERT INTO mapper_ids (source_id, target_id, old_id, new_id)
        SELECT $1, $2, old_id, (array_agg(new_id ORDER BY ord DESC))[1] FROM loader_ids
        WHERE target_id = $2 AND old_id <> $1 GROUP BY old_id ORDER BY min(ord)
        ON CONFLICT (source_id, target_id, old_id) DO UPDATE SET new_id = excluded.new_id"""

    async def stage(self, tx: Transaction, target_id: str, ids: Mapping[str, str]) -> None:
        await cast(PostgresTransaction, tx).conn.copy_records_to_table(
            "loader_ids",
            records=[(target_id, old, new) for old, new in ids.items()],
            columns=("target_id", "old_id", "new_id"),
        )


PostgresDatabase.catalog = PostgresCatalog
PostgresDatabase.players = PostgresPlayers
PostgresDatabase.loaders = PostgresLoaders

_SERVING: contextvars.ContextVar[bool] = contextvars.ContextVar("xenon_elixir_serving", default=False)
"""Whether the services being opened are a server's (its lifespan), not the CLI's or a script's."""


_PROCESS_TOKEN = secrets.token_hex(3)


def process_label() -> str:
    """This process among every process on every machine: its pid and a random token (in
    containers every server is pid 1)."""
    return f"{os.getpid()}-{_PROCESS_TOKEN}"


def server_name(mark: str) -> str:
    """How a server process marked ``mark`` (:func:`fleet_mark`, or ``migrate``'s) names its
    connections: the mark and the process (:func:`process_label`), as :class:`PostgresClaim`
    reads them back."""
    return f"{_SERVER_NAME}{mark} {process_label()}"


async def open_postgres(config: Config, *, serving: bool | None = None) -> PostgresDatabase:
    """A PostgreSQL store; a server's (its lifespan, or ``serving``) claims it beside the fleet's
    others before it opens it."""
    serving = _SERVING.get() if serving is None else serving
    name = server_name(fleet_mark(config)) if serving else "xenon-elixir"
    database = PostgresDatabase(config.db, write_wait=config.write_wait, name=name)
    if serving:  # first: while migrate copies into it, its schema lock would be waited for in vain
        try:
            await database.claim(fleet_mark(config))
        except BaseException:
            await database.close()
            raise
    return await database.open()


STORES: dict[str, Callable[[Config], Awaitable[Database]]] = {
    "": open_sqlite,
    "postgresql": open_postgres,
    "postgres": open_postgres,
}
"""The store a ``Config.db`` opens, by its URL's scheme: a path (no scheme) is a
SQLite file; ``postgresql://`` and ``postgres://`` a PostgreSQL database. A new backend is one
more row, and a class that keeps :class:`Database`."""


def store_scheme(db: str) -> str:
    scheme, colon, _ = db.partition("://")
    return scheme if colon and scheme.isidentifier() else ""


async def open_stores(config: Config) -> Stores:
    """The storage areas on the database ``config.db`` names (see ``STORES``)."""
    opener = STORES.get(store_scheme(config.db))
    if opener is None:
        raise ConfigError(
            f"XE_DB: no store for {store_scheme(config.db)}://; use a file path or postgresql://"
        )
    return Stores.on(await opener(config), config)


# ---------------------------------------------------------------------------
# 11. Moving a SQLite file to PostgreSQL: xenon-elixir migrate
# ---------------------------------------------------------------------------


def _pg_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclasses.dataclass(frozen=True)
class _Moved:
    """One table's copy from SQLite to PostgreSQL: what to select (in order), the columns it
    fills, and how each value is carried over (``None``: as it is)."""

    table: str
    select: str
    columns: tuple[str, ...]
    convert: tuple[Callable[[Any], Any] | None, ...] = ()


_BOOLEANS = {"paused", "is_stream"}
"""Columns SQLite keeps as 0 and 1 and PostgreSQL as booleans."""


def _moved(table: str, columns: str, order: str, floats: Sequence[str] = ()) -> _Moved:
    """A table's copy: in ``order`` (``rowid``: the order rows came in, kept as ``ord``); times
    (``..._at``) and ``floats`` as floats, :data:`_BOOLEANS` as booleans."""
    names = tuple(c.strip() for c in columns.split(","))
    kept = order == "rowid"

    def convert(name: str) -> Callable[[Any], Any] | None:
        if name.endswith("_at") or name in floats:
            return _pg_float
        return bool if name in _BOOLEANS else None

    return _Moved(
        table,
        f"SELECT {', '.join(names)}{', rowid' if kept else ''} FROM {table} ORDER BY {order}",
        names + (("ord",) if kept else ()),
        tuple(convert(name) for name in names) + ((None,) if kept else ()),
    )


_MOVED = (
    _moved("elixir_keys", "key_hash, guild_id, user_id, created_at", "key_hash"),
    _moved("guilds", "guild_id, name", "guild_id"),
    _moved("voice_channels", "guild_id, channel_id", "rowid"),
    _moved("playlists", "playlist_id, source, identifier, name", "playlist_id"),
    _moved("playlist_tracks", "playlist_id, position, track_id", "playlist_id, position"),
    _moved(
        "players",
        "guild_id, channel_id, volume, paused, position, anchor, ends_at, size",
        "guild_id",
        ("position", "anchor"),
    ),
    _moved("queue", f"entry_id, guild_id, {TRACK_COLUMNS}, requested_by", "entry_id"),
    _moved("bots", "bot_id, name, token_hash, created_at", "bot_id"),
    _moved("templates", "template_id, name, source_id, creator_id, created_at", "template_id"),
    _moved("template_bots", "template_id, bot_id", "rowid"),
    _moved("backups", "backup_id, source_id, creator_id, created_at", "backup_id"),
    _moved("mapper_ids", "source_id, target_id, old_id, new_id", "rowid"),
    _moved("mapper_loaders", "source_id, target_id, user_id", "rowid"),
    _moved("loader_ids", "target_id, old_id, new_id", "rowid"),
    _moved("loaders", f"{', '.join(LOADER_FIELDS)}, started_at, start_seq", "target_id"),
    _moved("events", "seq, frame, created_at", "seq"),
    _moved("kept", "name, value", "name"),
    _moved("player_seqs", "guild_id, seq", "guild_id"),
)
"""Every table but tracks (copied first: their words are cut on the way) and the counters, in
an order that keeps every reference valid."""

_IDENTITIES = (
    ("voice_channels", "ord"),
    ("tracks", "track_id"),
    ("playlists", "playlist_id"),
    ("queue", "entry_id"),
    ("template_bots", "ord"),
    ("mapper_ids", "ord"),
    ("mapper_loaders", "ord"),
    ("loader_ids", "ord"),
)
_MIGRATE_CHUNK = 20_000


async def _copy_to_postgres(
    path: str, url: str, *, replace: bool, progress: Callable[[str, int, int], None] | None
) -> dict[str, int]:
    await (await SqliteDatabase(path).open()).close()  # brought to this version, if older
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    target = PostgresDatabase(url, name=server_name(MIGRATING))
    copied: dict[str, int] = {}
    try:
        await target.claim(MIGRATING)  # first, as a server does: no server serves the target meanwhile
        await target.open()
        source.execute("BEGIN")
        async with target._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_SCHEMA_LOCK)
            tables = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", PG_SCHEMA)
            held = [
                t
                for t in tables
                if t != "counters" and await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {t})")
            ]
            numbered = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM counters WHERE name IN ('event_seq', 'player_seq') AND value > 0)"
            )
            if (held or numbered) and not replace:
                what = ", ".join(held) or "event numbers"
                raise StoreError(
                    f"{masked_url(url)} is not empty ({what}); migrate --replace empties it first"
                )
            if held or numbered:
                await conn.execute(
                    f"TRUNCATE {', '.join(t for t in tables if t != 'counters')} RESTART IDENTITY"
                )
                await conn.execute("UPDATE counters SET value = 0 WHERE name <> 'schema'")

            async def copy(
                table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], total: int
            ) -> None:
                done = 0
                batch: list[Sequence[Any]] = []
                for row in rows:
                    batch.append(row)
                    if len(batch) == _MIGRATE_CHUNK:
                        await conn.copy_records_to_table(table, records=batch, columns=list(columns))
                        done += len(batch)
                        batch = []
                        if progress is not None:
                            progress(table, done, total)
                if batch:
                    await conn.copy_records_to_table(table, records=batch, columns=list(columns))
                    done += len(batch)
                    if progress is not None:
                        progress(table, done, total)
                copied[table] = done

            def count(table: str) -> int:
                return source.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

            words: Counter[str] = Counter()
            tokens = 0

            def tracks() -> Iterator[tuple[Any, ...]]:
                nonlocal tokens
                cursor = source.execute(f"SELECT track_id, {TRACK_COLUMNS} FROM tracks ORDER BY track_id")
                while chunk := cursor.fetchmany(_MIGRATE_CHUNK):
                    for track_id, *row in chunk:
                        title, author = search_tokens(row[2]), search_tokens(row[3])
                        words.update(set(title + author))
                        tokens += len(title) + len(author)
                        yield (track_id, *row[:7], bool(row[7]), row[8], title, author)

            def rows_of(moved: _Moved) -> Iterator[tuple[Any, ...]]:
                cursor = source.execute(moved.select)
                while chunk := cursor.fetchmany(_MIGRATE_CHUNK):
                    for row in chunk:
                        yield tuple(v if f is None else f(v) for v, f in zip(row, moved.convert, strict=True))

            columns = ("track_id", *TRACK_COLUMNS.split(", "), "title_words", "author_words")
            await copy("tracks", columns, tracks(), count("tracks"))
            await copy("search_words", ("word", "tracks"), sorted(words.items()), len(words))
            for moved in _MOVED:
                await copy(moved.table, moved.columns, rows_of(moved), count(moved.table))
            counters = dict(source.execute("SELECT name, value FROM counters").fetchall())
            counters.update(tracks=copied["tracks"], tokens=tokens)
            for name in ("event_seq", "pruned_seq", "player_seq", "tracks", "tokens"):
                await conn.execute(
                    "UPDATE counters SET value = $2 WHERE name = $1", name, counters.get(name, 0)
                )
            for table, column in _IDENTITIES:
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                    f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
                )
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    except target.asyncpg.PostgresError as exc:
        raise StoreError(f"cannot copy into {masked_url(url)}: {exc}") from exc
    finally:
        source.close()
        await target.close()
    return copied


async def migrate_to_postgres(
    path: str, url: str, *, replace: bool = False, progress: Callable[[str, int, int], None] | None = None
) -> dict[str, int]:
    """Copy the SQLite database at ``path`` into the PostgreSQL database at ``url``, whole, in
    one transaction (``COPY``, a chunk at a time): every row, the ids and the order things came
    in, the event and player numbers. The file is read in one read transaction, and no server
    serves it meanwhile (:class:`ServerLock`, held to the end): what a server wrote after the
    copy began would stay behind, so one that serves it is a refusal. Nor does a server serve the
    target (:class:`PostgresClaim`): ``replace`` would empty it under that server's feet, and a
    server starting during the copy is refused. A target that holds anything is refused unless
    ``replace``, which empties it first. ``progress(table, done,
    total)`` is told after each chunk. Returns the rows copied per table."""
    if not os.path.exists(path):
        raise StoreError(f"{path} does not exist")
    lock = ServerLock(path, MIGRATING)
    lock.acquire()
    try:
        return await _copy_to_postgres(path, url, replace=replace, progress=progress)
    finally:
        lock.release()


# ---------------------------------------------------------------------------
# 12. Rate limiter: the rule, and the 429 it answers
# ---------------------------------------------------------------------------


class RateLimiter:
    """At most ``limit`` hits per ``window`` seconds per key, over any window (a sliding log).

    ``retry_after`` is exact: when the oldest hit in the window leaves it (the original always
    answered the whole window). Keys are kept in the order they were last hit, so idle ones are
    dropped from the front as they expire (on each hit, and by :meth:`sweep` when no hit comes)
    and memory follows the keys active in one window; ``max_keys`` caps it even then. A key's
    log is a compact ``array`` of its hit times: 88 bytes for one hit, where a ``deque`` took 784.
    """

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._logs: dict[str, array.array[float]] = {}

    def __len__(self) -> int:
        return len(self._logs)

    def hit(self, key: str) -> float | None:
        """Count a hit for ``key``: ``None`` if admitted, else the seconds until one would be."""
        now = self._clock()
        log = self._logs.pop(key, None)
        if log is None:
            log = array.array("d")
        self._logs[key] = log  # now the most recently hit key
        expired = 0
        while expired < len(log) and log[expired] <= now - self.window:
            expired += 1
        del log[:expired]
        if len(log) >= self.limit:
            return log[0] + self.window - now
        log.append(now)
        self._evict(now)
        return None

    def sweep(self) -> None:
        """Drop the keys whose window has passed, though no hit came to do it."""
        self._evict(self._clock())

    def _evict(self, now: float) -> None:
        logs = self._logs
        while logs:
            oldest = next(iter(logs))
            if logs[oldest][-1] > now - self.window and len(logs) <= self.max_keys:
                return
            del logs[oldest]


class LocalLimiter:
    """The limits of each group (:data:`RATE_LIMITS` and ``XE_RATE_LIMITS``) in this process."""

    def __init__(self, config: Config) -> None:
        self._limiters = {
            group: None if limit is None else RateLimiter(*limit, clock=config.monotonic)
            for group, limit in config.rate_limit_table().items()
        }

    async def hit(self, group: str, key: str) -> float | None:
        limiter = self._limiters[group]
        return None if limiter is None else limiter.hit(key)

    def sweep(self) -> None:
        for limiter in self._limiters.values():
            if limiter is not None:
                limiter.sweep()


class OpenStreams:
    """How many streams each client address holds open in this process, at most ``limit`` each
    (``XE_MAX_STREAMS_PER_ADDRESS``). An address leaves the table with its last stream, so it
    holds only the addresses with a stream open, however many came and went."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def take(self, address: str) -> bool:
        """Count a stream opened by ``address``; False (and nothing counted) when it is at the limit."""
        held = self._open.get(address, 0)
        if held >= self.limit:
            return False
        self._open[address] = held + 1
        return True

    def give_back(self, address: str) -> None:
        """A stream counted by :meth:`take` has closed."""
        held = self._open.pop(address) - 1
        if held:
            self._open[address] = held


async def sweep_every(limiter: Limiter, seconds: float) -> None:
    """Sweep now and then, so a burst of callers is forgotten even if no one calls again."""
    while True:
        await asyncio.sleep(seconds)
        limiter.sweep()


def rate_limited(retry_after: float, error: type[ApiError] = ApiError) -> ApiError:
    """A 429 that says exactly when to come back: ``retry_after`` in ms, ``Retry-After`` in whole seconds."""
    return error(
        429,
        RATE_LIMITED,
        # Rounded to the body's milliseconds first, so float residue never adds a second.
        headers={"Retry-After": str(max(1, math.ceil(round(retry_after, 3))))},
        retry_after=retry_after,
    )


async def over_limit(services: Services, group: str, key: str, error: type[ApiError]) -> ApiError | None:
    """A hit of ``key`` in ``group``: ``None`` when admitted, else the 429 to answer (counted)."""
    if (wait := await services.limiter.hit(group, key)) is None:
        return None
    services.metrics.count("xe_rate_limited_total", _labels(group=group))
    return rate_limited(wait, error)


async def limited(services: Services, group: str, key: str, error: type[ApiError] = XenonError) -> None:
    """Raise a 429 when ``key`` has used up the group's budget."""
    if (refusal := await over_limit(services, group, key, error)) is not None:
        raise refusal


# ---------------------------------------------------------------------------
# 13. Event hub: subscribers, streams, revocations, ordered delivery
# ---------------------------------------------------------------------------

LOADER_TOPIC = "loaders"


class SubscriptionClosed(Exception):
    """The subscription ended: unsubscribed, ``overflowed`` past its backlog, or ``revoked`` (the
    credential that opened it was revoked)."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.overflowed = state == "overflowed"
        self.revoked = state == "revoked"


class Subscription:
    """One subscriber's queue of ``(seq, frame)``. Frames are shared, encoded once per event."""

    __slots__ = (
        "_frames",
        "_reliable",
        "_state",
        "_unsubscribe",
        "_wakeup",
        "backlog",
        "on_dropped",
        "topic",
    )

    def __init__(self, unsubscribe: Callable[[Subscription], None], topic: str, backlog: int) -> None:
        self.topic = topic
        self.backlog = backlog
        self.on_dropped: Callable[[], object] | None = None
        """Called when the subscriber is dropped, for falling behind or for a revoked credential
        (to cancel a blocked send)."""
        self._unsubscribe = unsubscribe
        self._frames: deque[tuple[int, str, bool]] = deque()
        self._reliable = 0
        self._wakeup = asyncio.Event()
        self._state = "open"  # "open" -> "closed" | "overflowed" | "revoked"

    def _push(self, seq: int, frame: str, reliable: bool) -> bool:
        """Queue a frame; False when this pushes the subscriber past its backlog."""
        self._frames.append((seq, frame, reliable))
        self._reliable += reliable
        self._wakeup.set()
        # Best-effort frames count too, at twice the bound, so memory stays bounded either way.
        return self._reliable <= self.backlog and len(self._frames) <= 2 * self.backlog

    def _overflow(self) -> None:
        self._drop("overflowed")

    def revoke(self) -> None:
        """End it for a revoked credential: what is queued is not sent (the follower closes 4001)."""
        self._drop("revoked")
        self._unsubscribe(self)

    def _drop(self, state: str) -> None:
        if self._state != "open":
            return
        self._state = state
        self._frames.clear()
        self._wakeup.set()
        if self.on_dropped is not None:
            self.on_dropped()

    async def next_batch(self) -> list[tuple[int, str]]:
        """Wait for frames and take all that are queued, oldest first."""
        while not self._frames and self._state == "open":
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._state != "open":
            raise SubscriptionClosed(self._state)
        batch = [(seq, frame) for seq, frame, _ in self._frames]
        self._frames.clear()
        self._reliable = 0
        return batch

    @property
    def pending(self) -> int:
        """Frames queued for the subscriber and not yet taken."""
        return len(self._frames)

    @property
    def overflowed(self) -> bool:
        """Dropped for falling more than ``backlog`` start/done events behind."""
        return self._state == "overflowed"

    @property
    def revoked(self) -> bool:
        """Dropped because the credential that opened it was revoked."""
        return self._state == "revoked"

    def close(self) -> None:
        if self._state == "open":
            self._state = "closed"
            self._wakeup.set()
        self.on_dropped = None
        self._unsubscribe(self)

    def __aiter__(self) -> AsyncIterator[tuple[int, str]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[int, str]]:
        try:
            while True:
                for item in await self.next_batch():
                    yield item
        except SubscriptionClosed:
            return


REPLAY_CHUNK = 500
"""Logged events read at a time for a replay: the loop serves others between chunks."""


Replay = Callable[[int, int], Awaitable[tuple[int, int, list[tuple[int, str]]]]]
"""``replay(after, limit)``: the newest pruned seq, the newest seq given out, and up to ``limit``
logged frames after ``after``."""


class Stream:
    """A topic's frames for one follower: first, when ``since`` is given, every logged frame after
    it (read a chunk at a time, the loop serving others in between), then live ones, each seq
    once and in order: ``async for frame in stream``.

    It is subscribed before it reads the log, so an event published meanwhile is both in the log
    and in the queue, and is sent once. A ``since`` whose events were pruned, or that the log
    never gave out (another database, a restore), is answered with a ``reset`` first.
    """

    def __init__(
        self,
        subscription: Subscription,
        since: int | None,
        replay: Replay,
        admit: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.subscription = subscription
        self.since = since
        self._replay = replay
        self.admit = admit
        """Whether the credential that opened the stream still holds: asked before each live batch
        and each replay chunk after the first, so no event reaches a revoked stream."""

    @property
    def overflowed(self) -> bool:
        return self.subscription.overflowed

    @property
    def revoked(self) -> bool:
        return self.subscription.revoked

    async def admitted(self) -> bool:
        """Whether its credential still holds; if not, the stream ends as revoked (4001)."""
        if self.admit is None or await self.admit():
            return True
        self.subscription.revoke()
        return False

    def close(self) -> None:
        self.subscription.close()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[str]:
        try:
            last = -1
            if self.since is not None:
                last = since = self.since
                pruned, newest, logged = await self._replay(since, REPLAY_CHUNK)
                reset_to = pruned if pruned > since else None  # events after `since` are gone
                if since > newest:  # never wait in silence for numbers that may not come
                    last = reset_to = newest
                if reset_to is not None:
                    yield msgspec.json.encode({"event": "reset", "seq": reset_to, "data": {}}).decode()
                while logged:
                    for seq, frame in logged:
                        yield frame
                        last = seq
                    if len(logged) < REPLAY_CHUNK:
                        break
                    await asyncio.sleep(0)
                    if not await self.admitted():
                        return
                    _, _, logged = await self._replay(last, REPLAY_CHUNK)
            while True:
                try:
                    batch = await self.subscription.next_batch()
                except SubscriptionClosed:
                    return
                if not await self.admitted():
                    return
                for seq, frame in batch:
                    if seq > last:  # live events the replay already sent are skipped
                        yield frame
                        last = seq
        finally:
            self.subscription.close()


class Revocations:
    """The open streams a credential authorised, each ended (closed 4001) once its credential is
    revoked, in this process whichever process committed the revoke: while any is open, the
    ``credentials`` counter is looked at every :attr:`every` seconds, and when it has moved each
    stream asks its credential again. (Before each live batch a stream asks too, so no event
    published after a revoke reaches it: see :attr:`Stream.admit`.)"""

    every = 0.1

    def __init__(self, credentials: Callable[[], Awaitable[int]]) -> None:
        self._credentials = credentials
        self._open: dict[Stream, None] = {}
        self._seen: int | None = None
        self._task: asyncio.Task[None] | None = None

    def watch(self, stream: Stream) -> None:
        if stream.admit is None:
            return
        self._open[stream] = None
        self._seen = None  # asked again at the next look, with the others: it may predate a revoke
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    def unwatch(self, stream: Stream) -> None:
        self._open.pop(stream, None)

    async def _run(self) -> None:
        failures = 0
        try:
            while self._open:
                await asyncio.sleep(self.every)
                try:
                    seen = await self._credentials()
                    if seen != self._seen:
                        self._seen = seen
                        await self._ask_all()
                    failures = 0
                except DomainError as exc:  # the database is away: each stream asks before it sends
                    self._seen = None
                    failures += 1
                    log.warning("revocations not checked: %s", exc)
                    await asyncio.sleep(backing_off(failures))
        finally:
            self._task = None

    async def _ask_all(self) -> None:
        """Each stream asks its credential again, all together (they share one look). A method of
        its own, so that no list of them outlives the asking in the loop's frame."""
        streams = list(self._open)
        for stream, admitted in zip(
            streams, await asyncio.gather(*(s.admitted() for s in streams)), strict=True
        ):
            if not admitted:
                self._open.pop(stream, None)

    async def close(self) -> None:
        self._open.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class InOrder:
    """Hands a logged topic's events to this process's subscribers in ``seq`` order, each once,
    whichever process published them and in whatever order they arrive. An event ahead of the
    next number waits a moment for the ones before it, then those are read from the log (which
    is why status events are logged too: one that another process published arrives through the
    broker, which may be late by any time, and a number passed over is never delivered); numbers
    the log no longer holds (pruned) are then passed over."""

    wait = 0.02
    """Seconds an event waits for an earlier one still on its way."""

    def __init__(self, deliver: Callable[[int, str, bool], None], replay: Replay, last: int) -> None:
        self._deliver = deliver
        self._replay = replay
        self.last = last
        self._held: dict[int, tuple[str, bool]] = {}
        self._filling: asyncio.Task[None] | None = None
        self._behind = False

    def offer(self, seq: int, frame: str, reliable: bool) -> None:
        if seq <= self.last or seq in self._held:
            return
        self._held[seq] = (frame, reliable)
        self._release()
        if self._held and self._filling is None:
            self._filling = asyncio.create_task(self._fill())

    def _release(self) -> None:
        while (seq := self.last + 1) in self._held:
            frame, reliable = self._held.pop(seq)
            self.last = seq
            self._deliver(seq, frame, reliable)

    def catch_up(self) -> None:
        """Deliver every event logged so far that was not handed on yet: what the broker carried
        while it was away may be lost (with Redis), and no later event may come to show it."""
        self._behind = True
        if self._filling is None:
            self._filling = asyncio.create_task(self._fill())

    async def _fill(self) -> None:
        try:
            while self._held or self._behind:
                await asyncio.sleep(self.wait)
                if self._behind:
                    _, newest, _ = await self._replay(sys.maxsize, 0)
                    self._behind = False
                    await self._from_log(newest + 1)
                if self._held:
                    await self._from_log(min(self._held))
                self._release()
        except DomainError as exc:  # the log cannot be read now: the next event tries again
            log.warning("events not filled in from the log: %s", exc.message)
        finally:
            self._filling = None

    async def _from_log(self, upto: int) -> None:
        """Deliver what the log holds between the last event handed on and ``upto``."""
        while self.last < upto - 1:  # a chunk at a time: a long outage's events too
            _, _, logged = await self._replay(self.last, min(upto - self.last - 1, REPLAY_CHUNK))
            logged = [(seq, frame) for seq, frame in logged if self.last < seq < upto]
            for seq, frame in logged:
                self._held.pop(seq, None)
                self.last = seq
                self._deliver(seq, frame, not frame.startswith(STATUS_FRAME))
            if not logged:  # what is still missing was pruned
                self.last = upto - 1
        for seq in [seq for seq in self._held if seq <= self.last]:
            del self._held[seq]

    def close(self) -> None:
        if self._filling is not None:
            self._filling.cancel()


_PUBLISHED = {kind: _labels(kind=kind) for kind in ("loader", "player")}


class Hub:
    """Broadcast by topic to this process's subscribers, and through the :class:`Broker` to every
    other process's. Publishing never waits for a subscriber: each has its own queue, and one
    that falls more than its backlog behind is dropped, never silently."""

    def __init__(
        self, backlog: int = 1000, broker: Broker | None = None, counters: Metrics | None = None
    ) -> None:
        self.backlog = backlog
        self.broker = broker
        self._metrics = counters
        self._topics: dict[str, set[Subscription]] = {}
        self._ordered: dict[str, InOrder] = {}
        self.handlers: dict[str, Callable[[str], None]] = {}
        """Topics that are for this process itself, not its subscribers: a frame's handler."""

    async def open(self) -> None:
        if self.broker is not None:
            await self.broker.start(self.deliver)

    async def close(self) -> None:
        for ordered in self._ordered.values():
            ordered.close()
        if self.broker is not None:
            await self.broker.close()

    def subscribe(self, topic: str, backlog: int | None = None) -> Subscription:
        subscription = Subscription(self._unsubscribe, topic, self.backlog if backlog is None else backlog)
        self._topics.setdefault(topic, set()).add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._topics.get(subscription.topic)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._topics[subscription.topic]

    def subscribers(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def player_subscribers(self) -> int:
        """Followers of every guild's player, in this process."""
        return sum(len(s) for topic, s in self._topics.items() if topic.startswith("player:"))

    def publish(self, topic: str, seq: int, frame: str, *, reliable: bool = True) -> None:
        """Deliver to this process's subscribers now, and hand to the broker for the others."""
        if self._metrics is not None:
            kind = "loader" if topic == LOADER_TOPIC else "player"
            self._metrics.count("xe_events_published_total", _PUBLISHED[kind])
        self.deliver(topic, seq, frame, reliable)
        if self.broker is not None:
            self.broker.publish(topic, seq, frame)

    def deliver(self, topic: str, seq: int, frame: str, reliable: bool = True) -> None:
        """Hand an event to this process's subscribers of ``topic`` (in order, if it is ordered)."""
        handler = self.handlers.get(topic)
        if handler is not None:
            handler(frame)
            return
        ordered = self._ordered.get(topic)
        if ordered is not None:
            ordered.offer(seq, frame, reliable)
        else:
            self._fan_out(topic, seq, frame, reliable)

    def _fan_out(self, topic: str, seq: int, frame: str, reliable: bool = True) -> None:
        for subscription in list(self._topics.get(topic, ())):
            if not subscription._push(seq, frame, reliable):
                self._unsubscribe(subscription)
                subscription._overflow()

    def catch_up(self) -> None:
        """Deliver from the logs whatever the broker may have lost (it is back after an outage)."""
        for ordered in self._ordered.values():
            ordered.catch_up()

    def order(self, topic: str, replay: Replay, last: int) -> None:
        """Deliver ``topic`` in ``seq`` order, each event once, filling in from its log what
        arrives late (for a logged topic that other processes publish to, through the broker)."""
        self._ordered[topic] = InOrder(functools.partial(self._fan_out, topic), replay, last)

    def stream(
        self,
        topic: str,
        since: int | None,
        replay: Replay,
        backlog: int | None = None,
        admit: Callable[[], Awaitable[bool]] | None = None,
    ) -> Stream:
        """Follow ``topic`` from ``since`` (see :class:`Stream`); subscribed from this call on."""
        return Stream(self.subscribe(topic, backlog), since, replay, admit)


# ---------------------------------------------------------------------------
# 14. Redis: many processes as one service (XE_REDIS_URL)
# ---------------------------------------------------------------------------

REDIS_AWAY = "Service unavailable: Redis cannot be reached; try again shortly."
BROKER_BUFFER = 10_000
"""Events kept in the Redis stream (approximately), and queued here while Redis is away."""

# A sliding-window log per key, on Redis's clock: the hits of the last window are a sorted set
# of their times in microseconds. Admitted: -1. Refused: the microseconds until a hit would be,
# when the hit that makes room leaves the window (exact, as in one process).
_HIT_SCRIPT = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local hits = redis.call('ZCARD', KEYS[1])
if hits < limit then
    redis.call('ZADD', KEYS[1], now, string.format('%.0f-%d', now, hits))
    redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
    return -1
end
local room = redis.call('ZRANGE', KEYS[1], hits - limit, hits - limit, 'WITHSCORES')
return math.max(tonumber(room[2]) + window - now, 1)
"""


def redis_client(config: Config) -> Any:
    """An asyncio Redis client of ``XE_REDIS_URL`` (the ``[scale]`` extra: redis with hiredis)."""
    try:
        import redis.asyncio
    except ImportError:
        raise ConfigError("XE_REDIS_URL needs the redis package: pip install 'xenon-elixir[scale]'") from None
    return redis.asyncio.Redis.from_url(
        config.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=10
    )


def _redis_errors(*, every: bool = False) -> tuple[type[BaseException], ...]:
    """What Redis away raises (``every``: any error of Redis's, a refused command included)."""
    import redis.exceptions

    if every:
        return (redis.exceptions.RedisError, OSError)
    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class RedisLimiter:
    """The limits of each group shared by every process, in Redis: one round trip per limited
    request (routes without a limit pay nothing). Redis away is :class:`Unavailable` (503)."""

    def __init__(self, config: Config, client: Any) -> None:
        self._redis = client
        self._prefix = config.redis_prefix
        self._limits = config.rate_limit_table()
        self._hit = client.register_script(_HIT_SCRIPT)
        self._errors = _redis_errors()

    async def hit(self, group: str, key: str) -> float | None:
        limit = self._limits[group]
        if limit is None:
            return None
        hits, seconds = limit
        try:
            wait = await self._hit(
                keys=[f"{self._prefix}limit:{group}:{key}"], args=[hits, int(seconds * 1e6)]
            )
        except self._errors as exc:
            raise Unavailable(REDIS_AWAY) from exc
        return None if wait < 0 else wait / 1e6

    def sweep(self) -> None:
        """Nothing to do: each key expires in Redis one window after its last hit."""


async def _backing_off(what: str, exc: BaseException, failures: int) -> None:
    """Say what Redis refused, and wait longer each time it does again (at most 2 s)."""
    log.warning("Redis: %s (%s)", what, exc)
    await asyncio.sleep(backing_off(failures))


_WATCHED_SCRIPT = """
local items = {}
if ARGV[5] ~= '[]' then items[1] = string.sub(ARGV[5], 2, -2) end
for i = 2, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then items[#items + 1] = ARGV[i + 4] end
end
if #items == 0 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
           'o', ARGV[1], 't', ARGV[3], 's', ARGV[4], 'f', '[' .. table.concat(items, ',') .. ']')
return #items
"""
"""An event of the stream (``KEYS[1]``): origin, stream length, topic, seq, then a JSON array
and one more item for each watch key (``KEYS[2..]``), added only while its key exists."""


STREAM_BLOCK = 1.0
"""Seconds a stream read waits in Redis for events before it asks again."""


class RedisBroker:
    """Hub events to and from every other process, through one Redis stream. Publishing never
    waits: events queue here and are sent in order, in batches, and kept (up to
    :data:`BROKER_BUFFER`) while Redis is away. Each process reads the stream from where it
    joined; an event that reaches it late or not at all is filled in from the event log (see
    :class:`InOrder`), so the stream is a fast path, never the record."""

    def __init__(self, config: Config, client: Any) -> None:
        self._redis = client
        self._key = f"{config.redis_prefix}events"
        self._origin = secrets.token_hex(8)
        self._outbox: deque[tuple[str, int, str, Sequence[tuple[str, str]]]] = deque(maxlen=BROKER_BUFFER)
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._errors = _redis_errors()
        self.reading = False
        """Whether the stream is being read now (not while Redis is away)."""
        self.epoch = 0
        """Times the stream was read again after Redis was away, or found Redis emptied (what
        it kept, the watches' keys among it, may be gone)."""
        self._boot_key = f"{config.redis_prefix}boot"
        self._boot: bytes | None = None
        """The mark of this Redis's data as this process last saw it: a restart that kept
        nothing, or a flush, loses it, and the next stream read notices."""
        self.on_back: Callable[[], None] | None = None
        """Called when the stream is read again after Redis was away (events on it may be lost)."""
        self._closing = asyncio.Event()
        self._in_read = False
        """Whether a stream read is under way (see :meth:`close`)."""
        self._wake_errors: tuple[type[BaseException], ...] = (TimeoutError, *_redis_errors(every=True))
        self._wake_key = f"{config.redis_prefix}wake:{self._origin}"
        """A stream of this process's own, read with the events: an entry on it ends a blocking
        read at once (see :meth:`close`)."""

    async def start(self, deliver: Callable[[str, int, str], None]) -> None:
        try:
            self._boot = await self._booted(None)
            last = (await self._redis.xinfo_stream(self._key))["last-generated-id"]
        except self._errors as exc:
            raise StoreError(f"cannot reach Redis at XE_REDIS_URL: {exc}") from exc
        except Exception:  # no stream yet
            last = b"0-0"
        self.reading = True
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._read(deliver, last))]

    def publish(self, topic: str, seq: int, frame: str, watched: Sequence[tuple[str, str]] = ()) -> None:
        """Send an event; with ``watched`` (``frame`` a JSON array), pairs of a Redis key and one
        more JSON item, each added to the array only if its key exists when the event reaches
        Redis (:data:`_WATCHED_SCRIPT`), the event not sent if the array stays empty."""
        self._outbox.append((topic, seq, frame, watched))
        self._wakeup.set()

    async def _send(self) -> None:
        failures = 0
        while True:
            if not self._outbox:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = list(self._outbox)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for topic, seq, frame, watched in batch:
                        if watched:
                            keys, items = zip(*watched, strict=True)
                            head = (self._origin, BROKER_BUFFER, topic, seq, frame)
                            pipe.eval(_WATCHED_SCRIPT, 1 + len(keys), self._key, *keys, *head, *items)
                        else:
                            fields = {"o": self._origin, "t": topic, "s": seq, "f": frame}
                            pipe.xadd(self._key, fields, maxlen=BROKER_BUFFER, approximate=True)
                    await pipe.execute()
            except self._errors as exc:
                failures += 1
                await _backing_off("events not sent yet", exc, failures)
                continue
            failures = 0
            for _ in batch:
                self._outbox.popleft()

    async def _booted(self, boot: bytes | None) -> bytes:
        """The mark of Redis's data: the one there, or a new one where there is none."""
        if boot is None:
            await self._redis.set(self._boot_key, secrets.token_hex(8), nx=True)
            boot = await self._redis.get(self._boot_key)
        return cast(bytes, boot)

    async def _read(self, deliver: Callable[[str, int, str], None], last: bytes) -> None:
        failures = 0
        while not self._closing.is_set():
            try:
                self._in_read = True
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        pipe.get(self._boot_key)  # in the same round trip: was Redis emptied?
                        streams = {self._key: last, self._wake_key: b"0-0"}
                        pipe.xread(streams, count=500, block=int(STREAM_BLOCK * 1000))
                        boot, answer = await pipe.execute()
                finally:
                    self._in_read = False
                if self._closing.is_set():
                    return
                emptied = boot != self._boot
                if emptied:  # a restart that kept nothing, or a flush, between two reads
                    self._boot = await self._booted(boot)
            except self._errors as exc:
                self.reading = False
                failures += 1
                await _backing_off("events not received", exc, failures)
                continue
            away, self.reading, failures = failures > 0 or emptied, True, 0
            self.epoch += away
            for stream, entries in answer or ():
                if stream != self._key.encode():  # the wake stream: close is under way
                    continue
                for entry_id, fields in entries:
                    last = entry_id
                    if fields[b"o"].decode() != self._origin:
                        deliver(fields[b"t"].decode(), int(fields[b"s"]), fields[b"f"].decode())
            if away and self.on_back is not None:
                self.on_back()

    async def _wake(self) -> bool:
        """End the stream read blocked in Redis: an entry on this process's wake stream, which
        expires soon whatever happens next. Whether Redis took it (away, read-only, full: no)."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self._wake_key, {"w": b"1"})
                pipe.pexpire(self._wake_key, int(STREAM_BLOCK * 10_000))
                await asyncio.wait_for(pipe.execute(), STREAM_BLOCK)
        except self._wake_errors:
            return False
        return True

    async def close(self) -> None:
        """Stop sending and reading. A stream read under way is woken (an entry on this process's
        wake stream) and let end, not cancelled: redis-py's pipeline, cancelled in the middle of
        a blocking read, could wait on its own cleanup for good (a process with two hosts on one
        loop hung at exit, now and then, under load). Redis away, the read ends by itself within
        :data:`STREAM_BLOCK`, or fails."""
        self.reading = False
        self._closing.set()
        reader = self._tasks[1:]
        if reader and self._in_read:
            woken = await self._wake()
            await asyncio.wait(reader, timeout=STREAM_BLOCK + 2.0)
            if woken:
                with contextlib.suppress(*self._wake_errors):
                    await asyncio.wait_for(self._redis.delete(self._wake_key), STREAM_BLOCK)
        for task in self._tasks:
            task.cancel()  # the sender, and a reader Redis never answered
        await asyncio.gather(*self._tasks, return_exceptions=True)


FORGET_TOPIC = "forget"
"""The broker's topic of remembered answers made stale by a commit (PostgreSQL)."""

WATCH_LEASE = 60.0
"""Seconds a process's watch of a tag lasts in Redis (renewed by a use in its second half)."""


class RedisWatches:
    """Which watched tags (:data:`WATCHED_KINDS`) some process remembers answers of: a key in
    Redis per tag, set for :data:`WATCH_LEASE` by each process that remembers, before it reads.
    A commit's forget of such a tag is published only if its key exists when the forget reaches
    Redis (:data:`_WATCHED_SCRIPT`): either the forget finds the key, or the commit came before
    the key, and so before the read. A process uses what it remembered only while its own watch
    lasts: a watch that lapsed, or that is older than Redis's last absence (its keys may be gone),
    first forgets what it covers."""

    def __init__(self, config: Config, client: Any, broker: RedisBroker, answers: RememberedAnswers) -> None:
        self._redis = client
        self._prefix = f"{config.redis_prefix}watched:"
        self._broker = broker
        self._answers = answers
        self._held: dict[Tag, tuple[float, int]] = {}  # tag: (until, the broker's epoch then)
        self._errors = _redis_errors()

    def key(self, tag: Tag) -> str:
        return self._prefix + ":".join(tag)

    async def watch(self, tag: Tag) -> bool:
        now, epoch = time.monotonic(), self._broker.epoch
        held = self._held.get(tag)
        if held is not None:
            until, since = held
            if since == epoch and until - now > WATCH_LEASE / 2:
                return True
            if since != epoch or until <= now:  # its forgets may not have come
                self._answers.forget(tag)
        try:
            await self._redis.set(self.key(tag), b"1", px=int(WATCH_LEASE * 1000))
        except self._errors:
            return False
        if len(self._held) >= 4 * self._answers.kept and tag not in self._held:
            for old in self._held:  # bounded: as if every watch had lapsed
                self._answers.forget(old)
            self._held.clear()
        self._held[tag] = (now + WATCH_LEASE, epoch)
        return True


def share_forgets(database: PostgresDatabase, hub: Hub, config: Config, redis: RedisParts) -> None:
    """Every commit's forgotten tags to every process through the Redis stream, so that each can
    remember answers as one process on SQLite does (a revoke is heard everywhere within a
    stream read, about a millisecond); while the stream is not read, nothing is remembered. A
    watched tag (a guild's player) is sent only while some process watches it (:class:`RedisWatches`)."""
    broker, encode = redis.broker, msgspec.json.encode
    watches = RedisWatches(config, redis.client, broker, database.answers)

    def share(tags: Tags) -> None:
        always = encode([tag for tag in tags if tag[0] not in WATCHED_KINDS]).decode()
        watched = [(watches.key(tag), encode(tag).decode()) for tag in tags if tag[0] in WATCHED_KINDS]
        broker.publish(FORGET_TOPIC, 0, always, watched)

    hub.handlers[FORGET_TOPIC] = lambda frame: database.forget([tuple(t) for t in msgspec.json.decode(frame)])
    database.shared(share, lambda: broker.epoch if broker.reading else None, watches.watch)


# The held status of a window that has ended, taken by one process, which opens the next window
# with it in the same step. A window still open (the timer fired in its last millisecond, by
# Redis's clock) keeps its status: the answer is the milliseconds left, to look again then.
_TAKE_SCRIPT = """
local left = redis.call('PTTL', KEYS[1])
if left >= 0 then return left + 1 end
local held = redis.call('GETDEL', KEYS[2])
if held then redis.call('SET', KEYS[1], 1, 'PX', ARGV[1]) end
return held
"""

# A window given back by the status that opened it, which was refused (a 503): only if it is
# still that status's (not one a later status or a timer opened since).
_GIVE_BACK_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


class RedisStatusWindows:
    """Status windows shared by every process: the first status of a quiet loader goes out at
    once (whoever gets the window's key), later ones of the same window are kept in Redis as the
    newest, sent at the window's end by whichever process's timer takes them first."""

    def __init__(self, config: Config, client: Any) -> None:
        self._redis = client
        self._prefix = config.redis_prefix
        self._errors = _redis_errors()
        self._take = client.register_script(_TAKE_SCRIPT)
        self._give_back = client.register_script(_GIVE_BACK_SCRIPT)

    async def open(self, loader: str, seconds: float, opener: str = "1") -> bool:
        """Open the loader's window now, if none is open, in the name of ``opener`` (see
        :meth:`give_back`): whether this status goes out at once."""
        key = f"{self._prefix}window:{loader}"
        try:
            return bool(await self._redis.set(key, opener, nx=True, px=_ms(seconds)))
        except self._errors as exc:
            raise Unavailable(REDIS_AWAY) from exc

    async def give_back(self, loader: str, opener: str) -> None:
        """Close the window ``opener`` opened, if it is still the one open: its status was refused
        (a 503, which the producer may send again), so it did not go out and takes no window."""
        with contextlib.suppress(*self._errors):
            await self._give_back(keys=[f"{self._prefix}window:{loader}"], args=[opener])

    async def hold(self, loader: str, status: str, seconds: float) -> float:
        """Keep ``status`` as the window's newest; the seconds until the window ends."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(f"{self._prefix}pending:{loader}", status, px=_ms(3 * seconds))
                pipe.pttl(f"{self._prefix}window:{loader}")
                _, left = await pipe.execute()
        except self._errors as exc:
            raise Unavailable(REDIS_AWAY) from exc
        return max(left, 0) / 1000

    async def take(self, loader: str, seconds: float) -> str | float | None:
        """At the window's end, the status held for it, taken by one process only, which opens
        the next window (``seconds``) to send it; ``None`` when none is held; the seconds left
        when the window has not quite ended yet, or until it is time to look again (Redis away:
        what it holds may be there again when it is back)."""
        keys = [f"{self._prefix}window:{loader}", f"{self._prefix}pending:{loader}"]
        try:
            taken = await self._take(keys=keys, args=[_ms(seconds)])
        except self._errors:
            return min(seconds, 1.0)
        if isinstance(taken, int):
            return taken / 1000
        return None if taken is None else taken.decode()

    async def forget(self, loader: str) -> None:
        with contextlib.suppress(*self._errors):
            await self._redis.delete(f"{self._prefix}window:{loader}", f"{self._prefix}pending:{loader}")


class RedisMetrics:
    """Every process's samples in Redis: ``<prefix>metrics:<process>`` hashes, refreshed every
    second and at every scrape, that expire a while after their process stops refreshing them.
    A scrape sums them: another process's figures are at most a second old."""

    keep = 30.0
    """Seconds a stopped process's figures stay in the sums."""

    def __init__(self, config: Config, client: Any, process_metrics: Metrics) -> None:
        self._redis = client
        self._prefix = f"{config.redis_prefix}metrics:"
        self._key = self._prefix + secrets.token_hex(8)
        self._metrics = process_metrics

    async def push(self) -> None:
        samples = self._metrics.snapshot()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key)
            if samples:
                pipe.hset(self._key, mapping=samples)
            pipe.expire(self._key, int(self.keep))
            await pipe.execute()

    async def every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            with contextlib.suppress(*_redis_errors()):
                await self.push()

    async def gathered(self) -> dict[str, float]:
        """Every live process's samples, summed (this one's pushed first, so they are current)."""
        try:
            await self.push()
            keys = [key async for key in self._redis.scan_iter(match=self._prefix + "*", count=500)]
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                found = await pipe.execute()
        except _redis_errors() as exc:
            raise Unavailable(REDIS_AWAY) from exc
        total: dict[str, float] = {}
        for samples in found:
            for key, value in samples.items():
                name = key.decode()
                total[name] = total.get(name, 0) + float(value)
        return total


# Taken when free, renewed by its holder (the token it was taken with), never taken from a living one.
_HOLD_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class RedisHold:
    """A lease one process of the fleet holds at a time (the Lavalink node's websocket session):
    taken when free, kept while its holder renews it, free ``seconds`` after the holder stops
    (it died, or lost Redis)."""

    def __init__(self, config: Config, client: Any, name: str, seconds: float) -> None:
        self._redis = client
        self._key = config.redis_prefix + name
        self._token = secrets.token_hex(8)
        self._ms = max(int(seconds * 1000), 1)
        self.seconds = seconds
        self._hold = client.register_script(_HOLD_SCRIPT)
        self._give_back = client.register_script(_GIVE_BACK_SCRIPT)
        self._errors = _redis_errors(every=True)

    async def hold(self) -> bool:
        """Take or renew the lease; whether this process holds it now. Redis away, or refusing
        the script (a replica, read-only during a failover): no, so a holder lets its session go
        rather than keep it unrenewed while another takes it."""
        try:
            return bool(await self._hold(keys=[self._key], args=[self._token, self._ms]))
        except self._errors:
            return False

    async def release(self) -> None:
        with contextlib.suppress(*self._errors):
            await self._give_back(keys=[self._key], args=[self._token])


class RedisParts:
    """Everything one app shares with the other processes of its fleet through one Redis
    (``XE_REDIS_URL``), built in one place: the client, the rate limits, the event stream, the
    status windows and the metrics. The app takes the limiter and the broker unless the embedding
    program brings its own (``Config.limiter``, ``Config.broker``)."""

    def __init__(self, config: Config, process_metrics: Metrics) -> None:
        self.client = redis_client(config)
        self.limiter = RedisLimiter(config, self.client)
        self.broker = RedisBroker(config, self.client)
        self.windows = RedisStatusWindows(config, self.client)
        self.metrics = RedisMetrics(config, self.client, process_metrics)

    def heard_by(self, hub: Hub) -> None:
        """The hub takes its events from :attr:`broker`: once the stream is read again after
        Redis was away, the hub catches up from the event log (events on it may be lost)."""
        self.broker.on_back = hub.catch_up

    async def close(self) -> None:
        await self.client.aclose()


def redis_parts(config: Config, process_metrics: Metrics) -> RedisParts | None:
    """The Redis parts of ``XE_REDIS_URL``, or ``None`` when the app runs alone."""
    return RedisParts(config, process_metrics) if config.redis_url else None


# ---------------------------------------------------------------------------
# 15. Xenon services: loaders and partners
# ---------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _StatusGate:
    started: int
    """The start seq of the loader its statuses belong to: none outlives it into the next load."""
    last_sent: float = -math.inf
    pending: str | None = None
    timer: Cancellable | None = None


def _frame(event: str, data: LoaderData) -> Callable[[int], str]:
    return lambda seq: msgspec.json.encode(LoaderEvent(event, seq, data)).decode()


class Loaders:
    """Running loaders and their events: start -> status* -> ids* -> done.

    Each event is numbered and logged in the transaction that records what it says, and
    published right after that commits, in commit order: subscribers see events in ``seq`` order
    and the log never disagrees with what was sent. Status events are limited per loader: the
    first of a quiet loader goes out at once, later ones in the same window coalesce into the
    newest, sent at the window's end; none is sent after the loader's done.
    """

    def __init__(
        self,
        store: LoaderStore,
        hub: Hub,
        interval: float,
        monotonic: Callable[[], float],
        timers: Timers,
        windows: RedisStatusWindows | None = None,
    ) -> None:
        self._store = store
        self._windows = windows
        """Status windows shared with other processes (Redis); ``None``: this process's own."""
        self._hub = hub
        self._interval = interval
        self._monotonic = monotonic
        self._timers = timers
        self._gates: dict[str, _StatusGate] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        for gate in self._gates.values():
            if gate.timer is not None:
                gate.timer.cancel()
        self._gates.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _published(self, numbered: tuple[int, str] | None, reliable: bool = True) -> None:
        if numbered is not None:
            self._hub.publish(LOADER_TOPIC, *numbered, reliable=reliable)

    async def running(self, target_id: str) -> tuple[Loader, int]:
        """The loader running on ``target_id`` and its start seq."""
        found = await self._store.running(target_id)
        if found is None:
            raise NotFound("loader", f"No loader is running on guild {target_id}")
        return found

    async def start(self, loader: Loader) -> LoaderEvent:
        data = loader.data()
        seq, _ = await self._store.start(loader, _frame("start", data), self._published)
        return LoaderEvent("start", seq, data)

    async def ids(self, target_id: object, ids: IdsIn) -> int:
        """Stage old->new ids with the loader running on ``target_id``, for its done to merge."""
        target_id = snowflake(target_id, "target_id")
        _, started = await self.running(target_id)
        await self._store.stage_ids(target_id, started, ids.ids)  # type: ignore[arg-type]
        return len(ids.ids)

    async def status(self, target_id: object, checked: StatusIn) -> None:
        """A status of the loader running on ``target_id`` (checked here, for every door)."""
        target_id, status = snowflake(target_id, "target_id"), checked.status
        _, started = await self.running(target_id)
        if self._windows is not None:
            await self._shared_status(target_id, started, status)
            return
        gate = self._gates.get(target_id)
        if gate is None or gate.started != started:
            gate = self._gates[target_id] = _StatusGate(started)
        now = self._monotonic()
        if gate.timer is None and now - gate.last_sent >= self._interval:
            sent_before, gate.last_sent = gate.last_sent, now
            try:
                await self._send_status(target_id, gate, status)
            except Exception:  # refused (a 503): it did not go out, so it takes no window
                gate.last_sent = sent_before
                raise
            return
        gate.pending = status
        if gate.timer is None:
            gate.timer = self._timers.call_later(
                gate.last_sent + self._interval - now, lambda: self._flush_status(target_id, gate)
            )

    def _flush_status(self, target_id: str, gate: _StatusGate) -> None:
        if gate.pending is None:
            return
        gate.timer, status, gate.pending = None, gate.pending, None
        gate.last_sent = self._monotonic()
        self._spawn(self._send_status(target_id, gate, status))

    async def _shared_status(self, target_id: str, started: int, status: str) -> None:
        window = f"{target_id}:{started}"
        windows = self._windows
        assert windows is not None
        opener = secrets.token_hex(8)
        try:
            if await windows.open(window, self._interval, opener):
                await self._send_shared(target_id, started, status)
                return
        except Exception:  # refused (a 503), perhaps after opening the window: give it back
            self._spawn(windows.give_back(window, opener))
            raise
        left = await windows.hold(window, status, self._interval)
        if window not in self._gates:  # one timer per window here, whichever status set it
            self._arm_shared(target_id, started, left)

    def _arm_shared(self, target_id: str, started: int, seconds: float) -> None:
        window = f"{target_id}:{started}"
        self._gates[window] = _StatusGate(started)
        flush = lambda: self._spawn(self._flush_shared(target_id, started))  # noqa: E731
        self._gates[window].timer = self._timers.call_later(seconds, flush)

    async def _flush_shared(self, target_id: str, started: int) -> None:
        window = f"{target_id}:{started}"
        self._gates.pop(window, None)
        windows = self._windows
        assert windows is not None
        taken = await windows.take(window, self._interval)  # by one process only
        if isinstance(taken, float):  # the window ends in a moment, by Redis's clock
            if window not in self._gates:
                self._arm_shared(target_id, started, taken)
        elif taken is not None:
            await self._send_shared(target_id, started, taken)

    async def _send_shared(self, target_id: str, started: int, status: str) -> None:
        frame = _frame("status", LoaderData(id=target_id, status=status))
        await self._store.status(target_id, started, frame, lambda n: self._published(n, reliable=False))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_status(self, target_id: str, gate: _StatusGate, status: str) -> None:
        frame = _frame("status", LoaderData(id=target_id, status=status))
        sent = await self._store.status(
            target_id, gate.started, frame, lambda n: self._published(n, reliable=False)
        )
        if sent is None and self._gates.get(target_id) is gate:  # its loader is done
            del self._gates[target_id]

    async def done(self, target_id: object, ok: bool = True) -> LoaderEvent:
        """End the loader running on ``target_id`` (checked here, for every door): ``done`` is
        published, even for a failed load; a successful one merges its staged ids."""
        target_id = snowflake(target_id, "target_id")
        loader, started = await self.running(target_id)
        gate = self._gates.pop(target_id, None)
        if gate is not None and gate.timer is not None:
            gate.timer.cancel()
        data = loader.data(ok=ok)
        seq, _ = await self._store.finish(loader, started, _frame("done", data), ok, self._published)
        if self._windows is not None:
            gate = self._gates.pop(f"{target_id}:{started}", None)
            if gate is not None and gate.timer is not None:
                gate.timer.cancel()
            await self._windows.forget(f"{target_id}:{started}")
        return LoaderEvent("done", seq, data)


class Partners:
    """The Xenon rules of mappers and templates, the same through every door."""

    def __init__(self, partners: PartnerStore, mappers: MapperStore) -> None:
        self._partners = partners
        self._mappers = mappers

    async def mapper_json(self, target_id: str, source_id: str | None, backup_id: str | None) -> bytes:
        """The mapper of a source guild, or a backup's, into ``target_id``, as its answer. A known
        backup wins over ``source_id``; an unknown one falls back to it when given (as the original)."""
        found = await self._partners.backup(backup_id) if backup_id else None
        if found is not None:
            source_id = found.source_id
        elif source_id is None:
            raise (
                NotFound("backup", "Unknown backup")
                if backup_id
                else Invalid("source", "Missing query parameter: source or backup")
            )
        mapper = await self._mappers.mapper_json(source_id, target_id)
        if mapper is None:
            raise NotFound("mapper", "No id translator found")
        return mapper

    async def template(self, template_id: str, *, with_bots: bool = True) -> Template:
        template = None
        if _TEMPLATE_ID.fullmatch(template_id):  # an id that cannot exist is as unknown as any
            template = await self._partners.template(template_id, with_bots=with_bots)
        if template is None:
            raise NotFound("template", "Unknown template")
        return template

    async def set_template_bot(
        self, template_id: str, bot: Bot, user_id: str | None, *, attached: bool
    ) -> None:
        """Attach or detach the acting bot; the user it acts for, when given, must be the creator."""
        template = await self.template(template_id, with_bots=False)
        if user_id is not None and user_id != template.creator_id:
            raise Forbidden("not the creator", "User is not the creator")
        await self._partners.set_template_bot(template_id, bot.id, attached=attached)

    async def grant_bot(self, bot: BotIn) -> tuple[str, bool]:
        """A new token for the bot, and whether it existed (its token is rotated)."""
        return await self._partners.grant_bot(bot)

    async def revoke_bot(self, bot_id: object) -> bool:
        return await self._partners.revoke_bot(snowflake(bot_id, "bot id"))

    async def create_template(self, made: TemplateIn) -> Template:
        return await self._partners.create_template(made)

    async def create_backup(self, made: BackupIn) -> Backup:
        return await self._partners.create_backup(made)

    async def merge_ids(self, source_id: object, target_id: object, ids: IdsIn) -> None:
        """Merge old->new ids into a mapper at once, outside any load (seeding, a migration)."""
        source, target = snowflake(source_id, "source"), snowflake(target_id, "target")
        await self._mappers.merge_ids(source, target, ids.ids)  # type: ignore[arg-type]


LIST_LIMIT = 1000
"""The most items a page of a listing holds."""


class Listings:
    """What an operator can list, a page at a time, the same through every door (admin API,
    host API, CLI): the kind, the page size and the cursor are checked here (``ValueError``)."""

    def __init__(self, listings: ListingStore) -> None:
        self._listings = listings

    async def page(self, kind: str, limit: int = 100, after: str | None = None) -> Page[Any]:
        if kind not in LISTINGS:
            raise ValueError(f"Invalid kind: expected one of {', '.join(LISTINGS)}")
        if after is not None and len(after) > 100:
            raise ValueError("Invalid after: expected the next of a previous page")
        if not 1 <= limit <= LIST_LIMIT:
            raise ValueError(f"Invalid limit: expected 1-{LIST_LIMIT}")
        return await self._listings.page(kind, limit, after)


# ---------------------------------------------------------------------------
# 16. Music: the resolver, track ends and the player service
# ---------------------------------------------------------------------------


class Keys:
    """The Elixir keys, the same through every door (admin API, host API, CLI)."""

    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys

    async def create(self, ask: KeyIn) -> str:
        """A new key for (guild, user), shown only now; ``ask.rotate`` replaces an existing one."""
        key, _ = await self._keys.create(str(ask.guild), str(ask.user), rotate=ask.rotate)
        return key

    async def revoke(self, guild_id: object, user_id: object) -> bool:
        return await self._keys.revoke(snowflake(guild_id, "guild"), snowflake(user_id, "user"))

    async def owner(self, key: str) -> tuple[str, str] | None:
        """The (guild, user) a key is bound to, or ``None``."""
        return await self._keys.owner(key)


class Registry:
    """The guilds Elixir's join checks, the same through every door (admin API, host API, CLI):
    ids and names are checked here (``ValueError``, as :class:`Guild` says)."""

    def __init__(self, registry: RegistryStore) -> None:
        self._registry = registry

    async def put(self, guild_id: object, name: str, voice_channels: Iterable[object] = ()) -> Guild:
        """Add or replace the guild with its voice channels."""
        guild = Guild(id=guild_id, name=name, voice_channels=list(voice_channels))  # type: ignore[arg-type]
        return await self._registry.put(guild)

    async def delete(self, guild_id: object) -> bool:
        return await self._registry.delete(snowflake(guild_id, "guild"))

    async def get(self, guild_id: object) -> Guild | None:
        return await self._registry.get(snowflake(guild_id, "guild"))


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

    Raises :class:`Invalid` for a URL that is not a track or playlist of a supported service
    (each door answers it as its refusals: the Elixir API with a 400 and the message).
    """
    if not _URL_SCHEME.match(query):
        return None
    try:
        parts = urlsplit(query)
        hostname, _ = parts.hostname, parts.port
    except ValueError:  # "http://[x", a port past 65535: not a URL at all
        raise Invalid("query", "Invalid query.") from None
    host = (hostname or "").removeprefix("www.").removeprefix("m.")
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
        raise Invalid("link", UNSUPPORTED_LINK)
    return link


def search_words(query: str) -> list[str]:
    """The words of search text, at most 32 (what a store searches for: all of them, then any)."""
    return _WORD.findall(query)[:32]


class CatalogResolver:
    """The default resolver: the local catalog."""

    def __init__(self, catalog: CatalogStore) -> None:
        self._catalog = catalog

    async def resolve(self, query: str) -> Track | list[Track] | None:
        link = parse_link(query)
        if link is None:
            words = search_words(query)
            for every in (True, False) if words else ():
                if track := await self._catalog.search(words, every):
                    return track
            return None
        if link.kind == "track":
            return await self._catalog.track(link.source, link.identifier)
        return await self._catalog.playlist_tracks(link.source, link.identifier) or None


_QUERY_LIMIT = 500


def play_query(query: str | None) -> str:
    """A play query: 1-500 characters, and a URL only with an http(s) scheme."""
    query = (query or "").strip()
    scheme = _URL_SCHEME.match(query)
    if (
        not query
        or len(query) > _QUERY_LIMIT
        or (scheme and scheme[0].lower() not in ("http://", "https://"))
    ):
        raise Invalid("query", "Invalid query.")
    return query


PLAYER_BACKLOG = 64
"""Player frames a follower may fall behind before it is closed with 1013 (each frame is a
whole state, so a reconnect loses nothing)."""


POSITION_DRIFT = 1000
"""Milliseconds our clock may differ from the audio backend's position before it is corrected."""


def player_topic(guild_id: str) -> str:
    """The hub topic of a guild's player frames (:class:`PlayerState` JSON)."""
    return f"player:{guild_id}"


async def cancelled(timer: Cancellable | None, task: asyncio.Task[None] | None) -> None:
    """Cancel a pending timer and a running task, and wait for the task to end."""
    if timer is not None:
        timer.cancel()
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class TrackEnds:
    """Wakes when the earliest current track ends (one indexed lookup, however many players
    exist), has every guild whose track ended advance its queue, and sleeps until the next end.
    A change that makes a track end sooner wakes it sooner (:meth:`arm`)."""

    def __init__(
        self,
        players: PlayerStore,
        advance: Callable[[str], Awaitable[object]],
        clock: Callable[[], float],
        timers: Timers,
    ) -> None:
        self._players = players
        self._advance = advance
        self._clock = clock
        self._timers = timers
        self._at: float | None = None
        self._timer: Cancellable | None = None
        self._task: asyncio.Task[None] | None = None
        self.poll: float | None = None
        """Seconds between looks when other processes change players too (their changes arm no
        timer here, and a process that died leaves its ends to the others)."""

    def arm(self, at: float | None) -> None:
        if at is None or (self._at is not None and self._at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = self._timers.call_later(at - self._clock(), self._wake)

    def _wake(self) -> None:
        self._at = self._timer = None
        if self._task is None:
            self._task = asyncio.create_task(self.run())

    async def run(self) -> None:
        """Advance every guild whose track has ended, then sleep until the next end."""
        try:
            for guild_id in await self._players.due(self._clock()):
                try:
                    await self._advance(guild_id)
                except DomainError as exc:  # the database is away: the next run takes it up
                    log.warning("could not advance the queue of guild %s: %s", guild_id, exc.message)
            at = await self._players.next_end()
            if self.poll is not None:
                at = min(at if at is not None else math.inf, self._clock() + self.poll)
            self.arm(at)
        except DomainError as exc:
            log.warning("track ends: %s", exc.message)
            self.arm(self._clock() + 1.0)
        finally:
            self._task = None

    async def close(self) -> None:
        await cancelled(self._timer, self._task)


class FollowerLeases:
    """This process's follower leases (with other processes, through a broker): while a guild
    has followers here, its ``player_seqs`` row says so until a while ahead, and every process's
    change of it, seeing that under the guild's lock, is published. A change of a guild nobody
    follows is neither encoded nor published: it costs its own write, and no other process
    anything."""

    def __init__(self, players: PlayerStore, hub: Hub, clock: Callable[[], float], timers: Timers) -> None:
        self._players = players
        self._hub = hub
        self._clock = clock
        self._timers = timers
        self._leases: dict[str, float] = {}
        """The guilds this process holds leases on, and until when."""
        self._renewal: Cancellable | None = None
        self._renewing: asyncio.Task[None] | None = None

    async def take(self, guild_id: str) -> None:
        """With other processes (a broker), hold the fleet's follower lease on the guild, so
        that theirs publish its changes too: taken before a follower reads its first state (a
        change before it is in that state, one after it is published), renewed while the guild
        has followers here, let lapse when it has none."""
        if self._hub.broker is None:
            return
        now = self._clock()
        if self._leases.get(guild_id, -math.inf) - now > FOLLOW_LEASE * 2 / 3:
            return  # taken a moment ago (it is never shortened)
        until = now + FOLLOW_LEASE
        await self._players.follow(guild_id, until)
        self._leases[guild_id] = until
        if self._renewal is None and self._renewing is None:
            self._renewal = self._timers.call_later(FOLLOW_LEASE / 6, self._renew)

    def _renew(self) -> None:
        self._renewal = None
        self._renewing = asyncio.create_task(self._renew_all())

    async def _renew_all(self) -> None:
        try:
            for guild_id in list(self._leases):
                if self._hub.subscribers(player_topic(guild_id)) == 0:
                    del self._leases[guild_id]  # nobody follows it here: it lapses
                    continue
                try:
                    await self.take(guild_id)
                except DomainError as exc:  # the database is away: tried again at the next look
                    log.warning("follower lease of guild %s not renewed: %s", guild_id, exc.message)
        finally:
            self._renewing = None
            if self._leases and self._renewal is None:
                self._renewal = self._timers.call_later(FOLLOW_LEASE / 6, self._renew)

    async def close(self) -> None:
        await cancelled(self._renewal, self._renewing)


class PlayerChanges:
    """The guilds' players as they stand and as they change: read settled to now, followed, and
    changed in one transaction, then published to the guild's followers and the audio backend;
    and the changes nobody asks for, which the clock and the backend make (a track's end, a
    drifted position); published only where someone may follow the guild (:class:`FollowerLeases`).
    :class:`Music` adds the operations someone asks for."""

    def __init__(self, players: PlayerStore, hub: Hub, config: Config, timers: Timers) -> None:
        self._players = players
        self._hub = hub
        self._clock = config.clock
        self.track_ends = TrackEnds(players, self._advance, config.clock, timers)
        self.mirror: AudioBackend | None = None
        """The audio backend that plays what the players say (a Lavalink node), if any."""
        self.leases = FollowerLeases(players, hub, config.clock, timers)

    def now(self) -> float:
        return self._clock()

    async def player(self, guild_id: str, *, whole: bool = False) -> Player | None:
        """The guild's player settled to now (the front of its queue, unless ``whole``), or ``None``
        when Elixir is not connected there."""
        player = await self._players.get(guild_id, whole=whole)
        return None if player is None else player.settled(self._clock())

    async def state(self, guild_id: str) -> PlayerState:
        """What a follower of the guild sees now."""
        seq = await self._players.seq(guild_id)  # numbered before the read: a frame after it is newer
        player = await self.player(guild_id)
        return stopped_state(guild_id, seq) if player is None else player.state(self._clock(), seq)

    async def follow(self, guild_id: str, backlog: int = PLAYER_BACKLOG) -> Stream:
        """The guild's frames for one follower: the state now, then every change as it is
        committed, a track's end included (``WS {elixir}/{guild}/player``). Subscribed before
        the state is read, so a change committed meanwhile is in it or sent after it."""

        async def first(after: int, limit: int) -> tuple[int, int, list[tuple[int, str]]]:
            return 0, state.seq, [(state.seq, msgspec.json.encode(state).decode())]

        stream = self._hub.stream(player_topic(guild_id), 0, first, backlog)
        try:  # read here, not when the stream starts: a database fault refuses the follower
            await self.leases.take(guild_id)
            state = await self.state(guild_id)
        except BaseException:
            stream.close()
            raise
        return stream

    async def _change(
        self, guild_id: str, change: Callable[[Player | None], Player | None], *, asked: bool = True
    ) -> Player | None:
        """Run ``change`` on the guild's player and write it. A change someone ``asked`` for is
        refused while the audio backend is away (it would not be heard); the clock's and the
        backend's own changes are not."""
        if asked and self.mirror is not None and not self.mirror.available:
            raise Unavailable(NODE_AWAY)
        here = self._hub.subscribers(player_topic(guild_id)) > 0  # a frame shows 25 waiting tracks
        after = lambda player, seq, fleet: self._changed(guild_id, player, seq, fleet)  # noqa: E731
        return await self._players.change(guild_id, change, self._clock(), after, PLAYER_FRONT if here else 2)

    def _changed(self, guild_id: str, player: Player | None, seq: int, fleet: bool) -> None:
        """After the commit; published if followed here, or in the fleet (as its transaction saw)."""
        if player is not None:
            self.track_ends.arm(player.ends_at)
        if self.mirror is not None:
            self.mirror.changed(guild_id, player)
        if (fleet and self._hub.broker is not None) or self._hub.subscribers(player_topic(guild_id)) > 0:
            state = stopped_state(guild_id, seq) if player is None else player.state(self._clock(), seq)
            self._hub.publish(player_topic(guild_id), seq, msgspec.json.encode(state).decode())

    async def close(self) -> None:  # the leases lapse
        await self.leases.close()
        await self.track_ends.close()

    async def _advance(self, guild_id: str) -> None:
        """Advance the queue past tracks that ended (the change settles the player first). When
        another process did it first, nothing is written or published again."""

        def settled(player: Player | None) -> Player | None:
            if player is None or not player.dropped:
                raise Unchanged("settled")
            return player

        with contextlib.suppress(Unchanged):
            await self._change(guild_id, settled, asked=False)

    async def track_ended(self, guild_id: str, entry_id: int) -> None:
        """The audio backend finished (or could not play) queue entry ``entry_id``: the next one
        starts, unless the queue has moved on already."""
        now = self._clock()

        def end(player: Player | None) -> Player | None:
            if player is not None and player.current is not None and player.current.entry_id == entry_id:
                player.skip(now)
            return player

        if await self._playing(guild_id, entry_id):
            await self._change(guild_id, end, asked=False)

    async def correct_position(self, guild_id: str, entry_id: int, position: int) -> None:
        """The audio backend is at ``position`` ms into entry ``entry_id``: where our clock
        drifted more than :data:`POSITION_DRIFT` from it, the backend is right."""
        now = self._clock()

        def drifted(player: Player | None) -> bool:
            return (
                player is not None
                and player.current is not None
                and player.current.entry_id == entry_id
                and not player.held
                and abs(player.position_at(now) - position) > POSITION_DRIFT
            )

        def correct(player: Player | None) -> Player | None:
            if drifted(player):
                player.position, player.anchor = float(position), now  # type: ignore[union-attr]
            return player

        if drifted(await self.player(guild_id)):
            await self._change(guild_id, correct, asked=False)

    async def voice_lost(self, guild_id: str) -> bool:
        """The audio backend lost the guild's voice connection: its track is held where audio
        stopped, the queue kept (followers see ``channel: null``). ``False`` when there is no
        player or it was held already."""
        now = self._clock()

        def lose(player: Player | None) -> Player | None:
            if player is None or not player.lose_voice(now):
                raise Unchanged("no voice to lose")
            return player

        try:
            await self._change(guild_id, lose, asked=False)
        except Unchanged:
            return False
        return True

    async def voice_back(self, guild_id: str, channel_id: str) -> Player | None:
        """Fresh voice in ``channel_id`` for a guild whose voice was lost: its track plays on from
        where it was held. The player (``None`` when there is none)."""
        now = self._clock()

        def regain(player: Player | None) -> Player | None:
            if player is None or not player.voice_lost:
                raise Unchanged("voice not lost")
            player.join(channel_id, now)
            return player

        with contextlib.suppress(Unchanged):
            return await self._change(guild_id, regain, asked=False)
        return await self.player(guild_id)

    async def _playing(self, guild_id: str, entry_id: int) -> bool:
        player = await self.player(guild_id)
        return player is not None and player.current is not None and player.current.entry_id == entry_id

    async def guilds_playing(self) -> list[str]:
        """Every guild with a player (connected)."""
        return await self._players.guilds()


class Music(PlayerChanges):
    """The Elixir player's operations that someone asks for, the same through every door (HTTP,
    the host API): join checks the registry, play resolves then enqueues on a connected player;
    each is a change of :class:`PlayerChanges` (one transaction, then published)."""

    def __init__(
        self,
        players: PlayerStore,
        registry: RegistryStore,
        resolver: Resolver,
        hub: Hub,
        config: Config,
        timers: Timers,
    ) -> None:
        super().__init__(players, hub, config, timers)
        self._registry = registry
        self._resolver = resolver
        self._max_queue = config.max_queue

    async def resolve(self, query: str) -> Track | list[Track] | None:
        """What a play of ``query`` finds (the configured resolver)."""
        return await self._resolver.resolve(play_query(query))

    async def join(self, guild_id: str, channel_id: str) -> Player:
        """Connect to a registered voice channel, or move there keeping the queue."""
        if await self._registry.get(guild_id) is None:
            raise NotFound("guild", "Guild not found.")
        if not await self._registry.has_voice_channel(guild_id, channel_id):
            raise NotFound("voice channel", "Voice channel not found.")
        now = self._clock()

        def join(player: Player | None) -> Player:
            if player is None:
                return Player(guild_id, channel_id, anchor=now)
            player.join(channel_id, now)
            return player

        return await self._change(guild_id, join)  # type: ignore[return-value]

    async def set_volume(self, guild_id: str, volume: int) -> Player:
        return await self._connected_change(guild_id, lambda player: player.set_volume(volume))

    async def play(self, guild_id: str, query: str, requested_by: str) -> list[Track] | Track:
        """Resolve the query and enqueue what it finds: a track, or a playlist's tracks in order."""
        query = play_query(query)
        if not await self._players.connected(guild_id):  # refused before a search is spent on it
            raise Invalid("not connected", NOT_CONNECTED)
        found = await self._resolver.resolve(query)
        if not found:
            raise NotFound("no track", "No track found.")
        await self.enqueue(guild_id, found if isinstance(found, list) else [found], requested_by)
        return found

    async def enqueue(self, guild_id: str, tracks: Sequence[Track], requested_by: str) -> Player:
        now = self._clock()
        return await self._connected_change(
            guild_id, lambda player: player.enqueue(tracks, requested_by, now, self._max_queue)
        )

    async def skip(self, guild_id: str) -> Player:
        now = self._clock()
        return await self._connected_change(guild_id, lambda player: player.skip(now))

    async def pause(self, guild_id: str) -> Player:
        now = self._clock()
        return await self._connected_change(guild_id, lambda player: player.pause(now))

    async def resume(self, guild_id: str) -> Player:
        now = self._clock()
        return await self._connected_change(guild_id, lambda player: player.resume(now))

    async def stop(self, guild_id: str) -> None:
        """Disconnect and forget the queue; stopping a stopped player is fine."""
        await self._change(guild_id, lambda player: None)

    async def _connected_change(self, guild_id: str, change: Callable[[Player], object]) -> Player:
        def run(player: Player | None) -> Player:
            if player is None:
                raise Invalid("not connected", NOT_CONNECTED)
            change(player)
            return player

        return await self._change(guild_id, run)  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# 17. Lavalink: real audio through a Lavalink v4 node
# ---------------------------------------------------------------------------

_NODE_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Seconds between attempts to reach a node's websocket, or to have an update taken, the last
one repeated."""

NODE_TIMEOUT = 5.0
"""Seconds a REST call to the node may take (a voice connect blocks its update that long)."""

_TRACK_ATTEMPTS = 3
"""Refusals of one track's update after which the node is taken never to play it: the queue
moves on, as after the node's own ``loadFailed``."""

KEPT_SESSION = "lavalink.session"
KEPT_VOICE = "lavalink.voice."
"""Names in the kept store: the node's session id, and (after this prefix, the guild id) the
bot's voice credentials in a guild."""

NODE_LOAD_FAILED = "Service unavailable: the audio node (Lavalink) could not load the track: {}"


class NodeRefused(Unavailable):
    """The node answered with an error status (4xx or 5xx but a session's 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(NODE_AWAY)
        self.status = status
        self.detail = message
        self.entry_id: int | None = None
        """The queue entry whose track the refused update carried, if it carried one."""


class SessionLost(Unavailable):
    """The node answered 404 for its session: it no longer has it (it restarted, or dropped it)."""


def lavalink_track(data: Mapping[str, Any]) -> Track | None:
    """Our track of a Lavalink v4 track object, or ``None`` when it cannot be one. A track the
    node gave ``encoded`` plays by it, so a null or non-http ``uri`` (a local file, a stream of
    another scheme) is kept, shown with an empty ``uri``."""
    info = data.get("info") or {}
    encoded = data.get("encoded")
    uri = str(info.get("uri") or "")
    linked = bool(_HTTP_URL.fullmatch(uri))
    try:
        track = Track(
            source=re.sub(r"[^a-z0-9_-]", "", str(info.get("sourceName", "")).lower())[:32] or "lavalink",
            identifier=str(info["identifier"])[:300],
            title=str(info.get("title") or "Unknown title")[:500],
            author=str(info.get("author") or "")[:500],
            length=0 if info.get("isStream") else int(info.get("length") or 0),
            uri=uri if linked or not encoded else "https://lavalink.invalid/",  # checked, then emptied
            thumbnail=info.get("artworkUrl") if _HTTP_URL.fullmatch(str(info.get("artworkUrl"))) else None,
            is_stream=bool(info.get("isStream")),
            encoded=encoded,
        )
    except (KeyError, TypeError, ValueError):
        return None
    if not linked:  # only a node's own track may have no link: the API's tracks need one
        track.uri = ""
    return track


class LavalinkNode:
    """One Lavalink v4 node: its REST API, and its websocket, kept open (reconnecting and resuming
    the session) while the app runs. ``on_message`` gets every frame the node sends.

    Follows https://lavalink.dev/api/rest.html and https://lavalink.dev/api/websocket.html.
    """

    def __init__(self, config: Config, kept: KeptStore | None = None, hold: RedisHold | None = None) -> None:
        import httpx  # a dependency of Litestar's; loaded only when a node is configured

        self.url = config.lavalink_url.rstrip("/")
        self._password = config.lavalink_password
        self._rest = httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": self._password}, timeout=NODE_TIMEOUT
        )
        self._transport_errors = httpx.TransportError
        self.on_message: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.session_id: str | None = None
        """The node's session while its websocket is open (players live in it)."""
        self._resumable: str | None = None
        self.kept = kept
        """Where the session id and the voice credentials are kept across restarts of the app."""
        self.hold = hold
        """With Redis, the lease that makes one process of the fleet the session's holder: it keeps
        the websocket; the others drive the players through the same session (no guild is sent to
        two sessions) and take it over, resuming it, when the holder dies."""
        self._socket: Any = None
        self._closing: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.session_id is not None

    async def request(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        """A REST call. The node unreachable or timing out is :class:`Unavailable`; an error status
        :class:`NodeRefused`; a 404 for our session :class:`SessionLost` (and the websocket is
        reopened: the node's answer to it says whether the session lives on)."""
        try:
            answer = await self._rest.request(method, path, json=body, params=params or None)
        except self._transport_errors as exc:
            log.warning("Lavalink %s %s failed: %r", method, path, exc)
            raise Unavailable(NODE_AWAY) from exc
        if answer.status_code < 400:
            return answer.json() if answer.content else None
        try:
            message = str(answer.json().get("message"))
        except ValueError:
            message = answer.text[:200]
        if (
            answer.status_code == 404
            and self.session_id
            and path.startswith(f"/v4/sessions/{self.session_id}")
        ):
            log.warning(
                "Lavalink has no session %s (404 on %s %s): reconnecting", self.session_id, method, path
            )
            self.drop()
            raise SessionLost(NODE_AWAY)
        raise NodeRefused(answer.status_code, message)

    def player_path(self, guild_id: str) -> str:
        if self.session_id is None:
            raise Unavailable(NODE_AWAY)
        return f"/v4/sessions/{self.session_id}/players/{guild_id}"

    def connect(self, user_id: str) -> None:
        """Open the websocket as the bot ``user_id`` (once; later calls change nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(user_id))

    def drop(self) -> None:
        """Close the websocket (it reconnects at once, asking to resume the session)."""
        self.session_id = None
        if self._socket is not None:
            self._closing = asyncio.ensure_future(self._socket.close())

    async def _run(self, user_id: str) -> None:
        from websockets.asyncio.client import connect  # with uvicorn[standard]

        url = "ws" + self.url.removeprefix("http") + "/v4/websocket"
        failures = 0
        if self.kept is not None:  # the session an earlier run of the app left: resumed if it lives
            with contextlib.suppress(DomainError):
                self._resumable = await self.kept.get(KEPT_SESSION)
        while True:
            if self.hold is not None and not await self.hold.hold():
                await self._follow()
                await asyncio.sleep(self.hold.seconds / 3)
                continue
            self.session_id = None  # until this process's ready names it
            headers = {
                "Authorization": self._password,
                "User-Id": user_id,
                "Client-Name": f"xenon_elixir/{__version__}",
            }
            if self._resumable:
                headers["Session-Id"] = self._resumable
            try:
                async with connect(url, additional_headers=headers, open_timeout=5, max_size=None) as socket:
                    self._socket, failures = socket, 0
                    holding = self.hold and asyncio.create_task(self._keep_holding(self.hold, socket))
                    try:
                        async for text in socket:
                            if self.on_message is not None:
                                await self.on_message(msgspec.json.decode(text))
                    finally:
                        if holding:
                            holding.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, dropped, or a frame we could not take
                log.warning("Lavalink websocket: %s", exc)
            self._socket = None
            self._resumable, self.session_id = self.session_id or self._resumable, None
            await asyncio.sleep(_NODE_BACKOFF[min(failures, len(_NODE_BACKOFF) - 1)])
            failures += 1

    async def _follow(self) -> None:
        """Another process holds the session: the players are driven through it, by its id."""
        session = None
        if self.kept is not None:
            with contextlib.suppress(DomainError):
                session = await self.kept.get(KEPT_SESSION)
        self._resumable = session or self._resumable
        if session != self.session_id:
            self.session_id = session
            if session and self.on_message is not None:
                await self.on_message({"op": "follow", "sessionId": session})

    @staticmethod
    async def _keep_holding(hold: RedisHold, socket: Any) -> None:
        while True:
            await asyncio.sleep(hold.seconds / 3)
            if not await hold.hold():  # another process may take the session now: let it go
                log.warning("Lavalink: this process no longer holds the session's lease")
                await socket.close()
                return

    def ready(self, session_id: str) -> None:
        self.session_id = self._resumable = session_id

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.hold is not None:
            await self.hold.release()
        await self._rest.aclose()


class LavalinkResolver:
    """Play queries answered by the node's ``/v4/loadtracks``: a URL as it is, other text as a
    search with the configured prefix (``ytsearch:`` by default)."""

    def __init__(self, node: LavalinkNode, search_prefix: str) -> None:
        self._node = node
        self._prefix = search_prefix

    async def resolve(self, query: str) -> Track | list[Track] | None:
        identifier = query if _URL_SCHEME.match(query) else self._prefix + query
        loaded = await self._node.request("GET", "/v4/loadtracks", identifier=identifier) or {}
        kind, data = loaded.get("loadType"), loaded.get("data")
        if kind == "error":
            data = data if isinstance(data, dict) else {}
            reason = data.get("message") or "unknown error"
            if data.get("severity") in ("suspicious", "fault"):  # the node's or its source's failure
                raise Unavailable(NODE_LOAD_FAILED.format(reason))
            raise Invalid("load failed", f"The track could not be loaded: {reason}")
        if kind == "track" and isinstance(data, dict):
            return lavalink_track(data)
        if kind == "search" and isinstance(data, list):
            return next(filter(None, map(lavalink_track, data)), None)
        if kind == "playlist" and isinstance(data, dict):
            selected = (data.get("info") or {}).get("selectedTrack")
            tracks = data.get("tracks") or []
            if isinstance(selected, int) and 0 <= selected < len(tracks):
                tracks = tracks[selected:]  # the link named a track in it: the play starts there
            return [track for track in map(lavalink_track, tracks) if track] or None
        return None  # empty, or no data where the kind has some


def _lost_voice(code: object) -> bool:
    """Whether a Discord voice close code ends the connection: any 4xxx but 4015, which Lavalink
    resumes by itself."""
    return isinstance(code, int) and 4000 <= code < 5000 and code != 4015


VOICE_LOST_TOPIC = "voice lost"
"""The hub's topic of lost voice connections: the process holding the node's session hears of
them, every process's ``on_voice_lost`` callbacks are called (the bot's may be another)."""

VoiceLostCallback = Callable[[str, int | None, str], object]
"""``callback(guild_id, code, reason)`` (see :meth:`Host.on_voice_lost`); may return an awaitable."""


class NodeVoice:
    """The guilds' voice on the node: the bot's credentials, which guilds the node was given them
    in, and the loss of a voice connection (a close code, or ``connected: false`` past the grace
    period) held on the player and told to the host's callbacks, once per loss."""

    def __init__(self, music: Music, grace: float, timers: Timers, kept: KeptStore | None, hub: Hub) -> None:
        self._music = music
        self._kept = kept
        self._hub = hub
        hub.handlers[VOICE_LOST_TOPIC] = self._told
        self._grace = grace
        self._timers = timers
        self.credentials: dict[str, dict[str, str]] = {}
        self.given: set[str] = set()
        """Guilds whose credentials the node's session has (so a ``connected: false`` is a loss)."""
        self._waiting: dict[str, Cancellable] = {}
        self.callbacks: list[VoiceLostCallback] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def update(self, guild_id: str, update: Mapping[str, str | None]) -> dict[str, str] | None:
        """Merge the bot's voice state/server update: the credentials once complete, else ``None``."""
        voice = self.credentials.setdefault(guild_id, {})
        channel = update.get("channelId", "")
        if channel is None:  # the bot left the channel
            self.credentials.pop(guild_id, None)
            self.keep(guild_id)
            return None
        if channel and voice.get("channelId") not in (None, channel):
            voice.pop("token", None)  # a move: its voice server update brings the new token
        voice.update({k: v for k, v in update.items() if v is not None})
        if {"token", "endpoint", "sessionId", "channelId"} <= set(voice):
            self.keep(guild_id)
            return voice
        return None

    def keep(self, guild_id: str) -> None:
        """Keep the guild's credentials as they are when the write runs (gone: forgotten)."""
        if self._kept is not None:
            self.spawn(self._keep(guild_id))

    async def _keep(self, guild_id: str) -> None:
        voice = self.credentials.get(guild_id)
        complete = voice if voice and {"token", "endpoint", "sessionId", "channelId"} <= set(voice) else None
        with contextlib.suppress(DomainError):
            await self._kept.put(KEPT_VOICE + guild_id, complete)  # type: ignore[union-attr]

    async def recall(self) -> None:
        """After the app restarted into a resumed session: the credentials the node still has."""
        if self._kept is not None and not self.credentials:
            self.credentials.update(await self._kept.under(KEPT_VOICE))
            self.given.update(self.credentials)

    def connected(self, guild_id: str, connected: bool) -> None:
        """The node's ``playerUpdate`` says whether the guild's voice is connected."""
        if connected or guild_id not in self.given:
            if (timer := self._waiting.pop(guild_id, None)) is not None:
                timer.cancel()
        elif guild_id not in self._waiting:
            reason = f"The voice connection was not connected for {self._grace:g} s."
            self._waiting[guild_id] = self._timers.call_later(
                self._grace, lambda: self.spawn(self.lose(guild_id, None, reason))
            )

    async def lose(self, guild_id: str, code: int | None, reason: str) -> None:
        """The guild's voice is gone: its credentials are stale, its track is held, the host told."""
        self.given.discard(guild_id)
        if self.credentials.pop(guild_id, None) is not None:
            self.keep(guild_id)
        if (timer := self._waiting.pop(guild_id, None)) is not None:
            timer.cancel()
        if not await self._music.voice_lost(guild_id):
            return  # no player, or lost already: told once
        log.warning("Lavalink voice lost in guild %s (%s): %s", guild_id, code, reason)
        frame = msgspec.json.encode([guild_id, code, reason]).decode()
        self._hub.deliver(VOICE_LOST_TOPIC, 0, frame)
        if self._hub.broker is not None:  # the bot's process may be another
            self._hub.broker.publish(VOICE_LOST_TOPIC, 0, frame)

    def _told(self, frame: str) -> None:
        guild_id, code, reason = msgspec.json.decode(frame)
        for callback in list(self.callbacks):
            try:
                result = callback(guild_id, code, reason)
                if isinstance(result, Awaitable):
                    self.spawn(self._awaited(result))
            except Exception:
                log.exception("on_voice_lost callback failed")

    @staticmethod
    async def _awaited(result: Awaitable[object]) -> None:
        try:
            await result
        except Exception:
            log.exception("on_voice_lost callback failed")

    async def forget_all(self, reason: str) -> None:
        """A new session (the node restarted): no credentials are valid in it; every guild with a
        player is lost until the bot joins again."""
        self.credentials.clear()
        self.given.clear()
        if self._kept is not None:
            await self._kept.forget_under(KEPT_VOICE)
        for guild_id in await self._music.guilds_playing():
            await self.lose(guild_id, None, reason)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def close(self) -> None:
        for timer in self._waiting.values():
            timer.cancel()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class _Latest:
    """What :meth:`LavalinkPlayers.refresh` wants: the player as stored when it is sent (a player
    read earlier could be older than a change whose own update is already on its way)."""


@dataclasses.dataclass(slots=True)
class NodePlayer:
    """What the node's player of a guild was last told."""

    entry_id: int | None = None
    paused: bool = False
    volume: int = 100


class NodeMirror:
    """Brings the node's player of each guild to match ours, in order, latest wins: the track
    (its queue entry as ``userData``), pause, volume, and the bot's voice with the first update;
    a stop deletes it. A refused or unanswered update is tried again, backing off, until the
    node has it; a track refused :data:`_TRACK_ATTEMPTS` times is skipped like a failed load. A
    player whose voice was lost is left alone until fresh voice brings it back."""

    def __init__(self, node: LavalinkNode, music: Music, config: Config, hub: Hub) -> None:
        self.node = node
        self._music = music
        self._timers = config.timers or LoopTimers()
        self.voice_of = NodeVoice(music, config.lavalink_voice_grace, self._timers, node.kept, hub)
        self._sent: dict[str, NodePlayer] = {}
        self._wanted: dict[str, Player | _Latest | None] = {}
        self._syncing: dict[str, asyncio.Task[None]] = {}
        self._attempts: dict[str, int] = {}
        self._spawn = self.voice_of.spawn
        self.in_line = False
        """Whether the node's players are known since the last ``ready`` (changes wait until then)."""

    @property
    def available(self) -> bool:
        return self.node.connected

    def changed(self, guild_id: str, player: Player | _Latest | None) -> None:
        """After a commit: bring the node's player to ``player`` (in order, latest wins)."""
        self._wanted[guild_id] = player
        if guild_id not in self._syncing and self.node.connected and self.in_line:
            self._syncing[guild_id] = self._spawn(self._sync(guild_id))

    def refresh(self, guild_id: str) -> None:
        """Bring the node's player to ours as it is stored then (unless a change is on its way)."""
        self.changed(guild_id, self._wanted.get(guild_id, _Latest()))

    async def _sync(self, guild_id: str) -> None:
        try:
            while guild_id in self._wanted:
                player = self._wanted.pop(guild_id)
                await self._apply(guild_id, player)
            self._attempts.pop(guild_id, None)
        except SessionLost:  # the reconnect brings every player in line
            self._sent.clear()
        except DomainError as exc:
            self._sent.pop(guild_id, None)  # the node's player is not known now: sent whole next time
            self._refused(guild_id, exc)
        finally:
            del self._syncing[guild_id]

    def _refused(self, guild_id: str, exc: DomainError) -> None:
        attempts = self._attempts[guild_id] = self._attempts.get(guild_id, 0) + 1
        entry_id = exc.entry_id if isinstance(exc, NodeRefused) else None
        what = f"refused ({exc.status}: {exc.detail})" if isinstance(exc, NodeRefused) else "not answered"
        if entry_id is not None and attempts >= _TRACK_ATTEMPTS:
            log.warning(
                "Lavalink update of guild %s %s %d times: entry %d is skipped, as a failed load",
                guild_id, what, attempts, entry_id,
            )  # fmt: skip
            self._attempts.pop(guild_id, None)
            self._spawn(self._music.track_ended(guild_id, entry_id))
            return
        delay = _NODE_BACKOFF[min(attempts - 1, len(_NODE_BACKOFF) - 1)]
        log.warning("Lavalink update of guild %s %s: trying again in %g s", guild_id, what, delay)
        self._timers.call_later(delay, lambda: self.refresh(guild_id))

    async def _apply(self, guild_id: str, wanted: Player | _Latest | None) -> None:
        sent = self._sent.get(guild_id)
        player = await self._music.player(guild_id) if isinstance(wanted, _Latest) else wanted
        if player is None:
            if sent is not None:
                await self.node.request("DELETE", self.node.player_path(guild_id))
            self._sent.pop(guild_id, None)
            return
        if player.voice_lost:  # held: the node hears of it again with fresh voice
            return
        entry, now = player.current, self._music.now()
        want = NodePlayer(None if entry is None else entry.entry_id, player.paused, player.volume)
        body: dict[str, Any] = {}
        if (sent.entry_id if sent else None) != want.entry_id:
            if entry is None:
                body["track"] = {"encoded": None}  # the queue ran out or was skipped past its end
            else:
                given = (
                    {"encoded": entry.track.encoded}
                    if entry.track.encoded
                    else {"identifier": entry.track.uri}
                )
                body["track"] = {**given, "userData": {"entry": entry.entry_id}}
                body["position"] = int(player.position_at(now))
        if sent is None or sent.paused != want.paused or "track" in body:
            body["paused"] = want.paused
        if sent is None or sent.volume != want.volume:
            body["volume"] = want.volume
        if sent is None and (voice := self.voice_of.credentials.get(guild_id)):
            body["voice"] = voice
        if body:
            try:
                await self.node.request("PATCH", self.node.player_path(guild_id), body)
            except NodeRefused as refused:
                refused.entry_id = want.entry_id if body.get("track", {}).get("userData") else None
                raise
            if "voice" in body:
                self.voice_of.given.add(guild_id)
        self._sent[guild_id] = want


class LavalinkPlayers(NodeMirror):
    """Mirrors every player onto the node's (:class:`NodeMirror`), and lets the node's frames
    drive the queue: a ``TrackEndEvent`` that finished (or failed to load) the entry we are
    playing, or a ``TrackStuckEvent`` (no end follows it), advances the queue; a ``cleanup`` end
    sends the track again; ``playerUpdate`` corrects the position while voice is connected. Voice
    lost is held (:class:`NodeVoice`) until the bot sends fresh voice; then the track plays on. On
    every (re)connect the node's players are compared with ours and brought in line; a new
    session (a restarted node) is given no stale voice. Voice credentials come from the
    embedding bot (:meth:`Host.voice_state`, :meth:`Host.voice_server`)."""

    def __init__(self, node: LavalinkNode, music: Music, config: Config, hub: Hub) -> None:
        super().__init__(node, music, config, hub)
        node.on_message = self._message
        if config.lavalink_user_id:
            node.connect(config.lavalink_user_id)

    def voice(self, guild_id: str, **update: str | None) -> None:
        """Merge the bot's voice state/server update; a complete one is sent to the node."""
        if self.voice_of.update(guild_id, update) is not None and self.node.connected:
            self._spawn(self._send_voice(guild_id))

    async def _send_voice(self, guild_id: str) -> None:
        voice = self.voice_of.credentials.get(guild_id)  # gone if the bot left the channel meanwhile
        if voice is None:
            return
        try:
            player = await self._music.player(guild_id)
            if player is not None and player.voice_lost:  # the node's player is sent whole, voice first
                self._sent.pop(guild_id, None)
                await self._music.voice_back(guild_id, voice["channelId"])
                self.refresh(guild_id)  # sent whole (voice first), whoever brought the voice back
                return
            await self.node.request("PATCH", self.node.player_path(guild_id), {"voice": voice})
            self.voice_of.given.add(guild_id)
            self.refresh(guild_id)  # a track the node dropped meanwhile is sent again
        except DomainError as exc:
            log.warning("Lavalink voice for guild %s not sent: %s", guild_id, exc)

    async def _message(self, message: dict[str, Any]) -> None:
        try:
            if message.get("op") == "event":
                await self._event(message.get("type"), message.get("guildId", ""), message)
            else:
                await self._handle(message)
        except DomainError as exc:  # the database or the node is away: the next (re)connect mends it
            log.warning("Lavalink %s frame not handled: %s", message.get("op"), exc.message)

    async def _handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ready":
            session_id = message["sessionId"]
            self.node.ready(session_id)
            self.in_line = False
            try:
                await self._new_session(session_id, bool(message.get("resumed")))
            finally:  # whatever failed above, the players are brought in line
                self._spawn(self._bring_in_line())
        elif op == "follow":  # another process holds the session; its players' state is not known here
            self._sent.clear()
            self.in_line = True
            for guild_id in set(self._wanted):
                self.refresh(guild_id)
        elif op == "playerUpdate":
            guild_id, state = message.get("guildId", ""), message.get("state") or {}
            self.voice_of.connected(guild_id, bool(state.get("connected")))
            sent, position = self._sent.get(guild_id), state.get("position")
            # without voice nobody pulls audio: the node's position stands still, ours is held
            if state.get("connected") and sent and sent.entry_id is not None and isinstance(position, int):
                await self._music.correct_position(guild_id, sent.entry_id, position)

    async def _new_session(self, session_id: str, resumed: bool) -> None:
        if not resumed:
            self._sent.clear()
            await self.voice_of.forget_all("The Lavalink node started a new session (it restarted).")
        else:
            await self.voice_of.recall()
        if self.node.kept is not None:
            await self.node.kept.put(KEPT_SESSION, session_id)
        try:
            await self.node.request("PATCH", f"/v4/sessions/{session_id}", {"resuming": True, "timeout": 60})
        except DomainError as exc:
            log.warning("Lavalink session %s not made resumable: %s", session_id, exc.message)

    async def _event(self, kind: Any, guild_id: str, message: dict[str, Any]) -> None:
        entry_id = ((message.get("track") or {}).get("userData") or {}).get("entry")
        reason = message.get("reason")
        if kind == "TrackEndEvent" and reason in ("finished", "loadFailed") and isinstance(entry_id, int):
            await self._music.track_ended(guild_id, entry_id)
        elif kind == "TrackStuckEvent" and isinstance(entry_id, int):  # the node never ends it
            log.warning("Lavalink track stuck in guild %s: the queue moves on", guild_id)
            await self._music.track_ended(guild_id, entry_id)
        elif kind == "TrackEndEvent" and reason == "cleanup" and isinstance(entry_id, int):
            sent = self._sent.get(guild_id)
            if sent is not None and sent.entry_id == entry_id:  # the node dropped it: sent again
                sent.entry_id = None
                if guild_id in self.voice_of.given:
                    self.refresh(guild_id)
        elif kind == "WebSocketClosedEvent" and _lost_voice(message.get("code")):
            await self.voice_of.lose(guild_id, message["code"], str(message.get("reason") or ""))
        elif kind in ("TrackExceptionEvent", "WebSocketClosedEvent"):
            log.warning("Lavalink %s in guild %s: %s", kind, guild_id, message)

    async def _bring_in_line(self) -> None:
        """After a (re)connect: what the node's players play now, then ours applied over it."""
        try:
            theirs = await self.node.request("GET", f"/v4/sessions/{self.node.session_id}/players") or []
        except SessionLost:  # the next session brings them in line
            return
        except DomainError:  # not known: every player is sent whole
            theirs = []
        self._sent = {}
        for node_player in theirs:
            user_data = (node_player.get("track") or {}).get("userData") or {}
            self._sent[node_player["guildId"]] = NodePlayer(
                user_data.get("entry"), bool(node_player.get("paused")), int(node_player.get("volume", 100))
            )
        self.in_line = True
        # the node's, ours, and any changed while the node was away (a stop among them)
        guilds = set(self._sent) | set(self._wanted)
        with contextlib.suppress(DomainError):
            guilds.update(await self._music.guilds_playing())
        for guild_id in guilds:
            self.refresh(guild_id)

    async def close(self) -> None:
        await self.voice_of.close()
        await self.node.close()


# ---------------------------------------------------------------------------
# 18. Wiring: the services of one app
# ---------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Services:
    """What the routes and the host API of one app share; built in the app's lifespan."""

    config: Config
    stores: Stores
    limiter: Limiter
    hub: Hub
    loaders: Loaders
    music: Music
    partners: Partners
    keys: Keys
    registry: Registry
    listings: Listings
    lavalink: LavalinkPlayers | None = None
    redis: Any = None
    """The Redis client every process coordinates through (``XE_REDIS_URL``), or ``None``."""
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    shared_metrics: RedisMetrics | None = None
    revocations: Revocations | None = None
    """The open streams a credential authorised, closed when it is revoked."""
    streams: OpenStreams = dataclasses.field(
        default_factory=lambda: OpenStreams(Config.max_streams_per_address)
    )
    """The unauthenticated streams open per client address (``XE_MAX_STREAMS_PER_ADDRESS``)."""


def limiter_and_broker(config: Config, redis: RedisParts | None) -> tuple[Limiter, Broker | None]:
    """The embedding program's limiter and broker (``Config.limiter``, ``Config.broker``; one
    given alone leaves the other this process's own), else the fleet's in Redis, else this
    process's own (no broker)."""
    if config.limiter or config.broker:
        limiter = config.limiter(config) if config.limiter else LocalLimiter(config)
        return limiter, config.broker(config) if config.broker else None
    if redis is not None:
        return redis.limiter, redis.broker
    return LocalLimiter(config), None


def chosen_resolver(config: Config, catalog: CatalogStore, node: LavalinkNode | None) -> Resolver:
    """The embedding program's resolver (``Config.resolver``), else the Lavalink node's, else the
    local catalog."""
    if config.resolver:
        return config.resolver(catalog)
    if node is not None:
        return LavalinkResolver(node, config.lavalink_search_prefix)
    return CatalogResolver(catalog)


@contextlib.asynccontextmanager
async def open_services(config: Config) -> AsyncIterator[Services]:
    """Open the storage and everything built on it; close them on exit."""
    config.check()
    stores = await open_stores(config)
    if not config.sandbox and await stores.kept.get(SANDBOX_MARK) is not None:
        await stores.kept.put(SANDBOX_MARK, None)  # real data may come now: no sandbox empties it
    redis = None
    try:
        process_metrics = Metrics()
        redis = redis_parts(config, process_metrics)
        timers = config.timers or LoopTimers()
        limiter, broker = limiter_and_broker(config, redis)
        stores.database.on_commit(lambda seconds: process_metrics.observe("xe_commit_seconds", "", seconds))
        hub = Hub(config.subscriber_backlog, broker, process_metrics)
        process_metrics.gauges[_labels_sample("xe_subscribers", stream="loaders")] = lambda: hub.subscribers(
            LOADER_TOPIC
        )
        process_metrics.gauges[_labels_sample("xe_subscribers", stream="player")] = hub.player_subscribers
        if broker is not None:  # other processes publish too: deliver the log's order, no gap
            _, newest, _ = await stores.loaders.events_since(sys.maxsize, 0)
            hub.order(LOADER_TOPIC, functools.partial(stores.loaders.events_since, statuses=True), newest)
        if redis is not None and broker is redis.broker:  # not a broker the embedding program brought
            redis.heard_by(hub)
            if isinstance(stores.database, PostgresDatabase):
                share_forgets(stores.database, hub, config, redis)
        await hub.open()
        windows = None if redis is None else redis.windows
        loaders = Loaders(stores.loaders, hub, config.status_interval, config.monotonic, timers, windows)
        hold = (
            None
            if redis is None
            else RedisHold(config, redis.client, "lavalink:session", config.lavalink_lease)
        )
        node = LavalinkNode(config, stores.kept, hold) if config.lavalink_url else None
        resolver = chosen_resolver(config, stores.catalog, node)
        music = Music(stores.players, stores.registry, resolver, hub, config, timers)
        if broker is not None or is_postgres(config.db):  # another process's change arms no timer here
            music.track_ends.poll = 1.0  # look every second
        lavalink = None if node is None else LavalinkPlayers(node, music, config, hub)
        music.mirror = lavalink
        sweeper = asyncio.create_task(sweep_every(limiter, 10.0))
        shared_metrics = None if redis is None else redis.metrics
        revocations = Revocations(stores.database.credentials)
        pusher = None if shared_metrics is None else asyncio.create_task(shared_metrics.every(1.0))
        try:
            await music.track_ends.run()  # the tracks that ended while no server ran
            yield Services(
                config,
                stores,
                limiter,
                hub,
                loaders,
                music,
                Partners(stores.partners, stores.mappers),
                Keys(stores.keys),
                Registry(stores.registry),
                Listings(stores.listings),
                lavalink,
                None if redis is None else redis.client,
                process_metrics,
                shared_metrics,
                revocations,
                OpenStreams(config.max_streams_per_address),
            )
        finally:
            await revocations.close()
            if pusher is not None:
                pusher.cancel()
            if lavalink is not None:
                await lavalink.close()
            sweeper.cancel()
            await music.close()
            await loaders.close()
            await hub.close()
    finally:
        if redis is not None:
            await redis.close()
        await stores.database.close()


# ---------------------------------------------------------------------------
# 19. HTTP and OpenAPI helpers
# ---------------------------------------------------------------------------


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
    except RecursionError:  # msgspec's own depth guard, whatever the target type
        raise ApiError(400, "Invalid JSON body: nested too deeply") from None


def api_of(scope: Scope, elixir_prefix: str) -> str:
    """Which API a request belongs to (``"elixir"``, ``"xenon"`` or ``"admin"``): its route's,
    else (an unknown path, an error before routing) by its path."""
    handler = scope.get("route_handler")
    if handler is not None and (api := handler.opt.get("api")):
        return api
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return "elixir" if path.startswith(elixir_prefix.rstrip("/") + "/") else "xenon"


def error_body(shape: str, message: str, now: float, retry_after: float | None = None) -> Any:
    """An error in an API's shape; ``now`` is the Elixir body's timestamp (epoch seconds)."""
    wait: float | msgspec.UnsetType = msgspec.UNSET if retry_after is None else round(retry_after * 1000, 3)
    if shape == "elixir":
        return ElixirErrorBody(timestamp=int(now * 1000), message=message, retry_after=wait)
    return XenonErrorBody(error=message, retry_after=wait)


def error_handler(config: Config) -> Callable[[Request, Exception], Response]:
    """The app's one exception handler: every refusal in its API's error shape, domain refusals
    mapped by each API's table, and a fault never a 500."""

    def answer(request: Request, exc: Exception) -> Response:
        api = api_of(request.scope, config.elixir_prefix)
        if isinstance(exc, DomainError):
            exc = ApiError.of(exc, api)
        retry_after = None
        if isinstance(exc, ApiError):
            status, message, headers, retry_after = exc.status_code, exc.message, exc.headers, exc.retry_after
        elif isinstance(exc, ValidationException):
            details = "; ".join(str(e.get("message", "")) for e in (exc.extra or []) if isinstance(e, dict))
            status, message, headers = 400, f"{exc.detail}: {details}" if details else exc.detail, {}
        elif isinstance(exc, HTTPException):
            status, message, headers = exc.status_code, exc.detail, dict(exc.headers or {})
            allow = headers.get("Allow") or headers.get("allow")
            if allow and "GET" in allow.split(", "):  # HEAD is answered wherever GET is (see FrontLayer)
                headers = {"Allow": ", ".join(sorted({*allow.split(", "), "HEAD"}))}
        else:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            status, message, headers = 500, "Internal server error", {}
        shape = getattr(exc, "shape", None) or api
        return Response(
            content=error_body(shape, message, config.clock(), retry_after),
            status_code=status,
            headers=headers,
            media_type="application/json",
        )

    return answer


_ERROR_MEANINGS = {
    400: "Bad input; the message names the field or parameter",
    401: "Missing or invalid credentials",
    403: "The acting user may not do this",
    404: "Not found",
    409: "Conflicts with what exists",
    410: "Nothing is playing",
    413: "Request body too large",
    426: "Needs a WebSocket handshake",
    429: "Rate limited: retry_after (ms) in the body, Retry-After (s) in a header",
    503: "The database cannot serve now (busy, gone or failing); retry after Retry-After seconds",
}

_ERROR_EXAMPLES: dict[tuple[str, int], str | tuple[str, ...]] = {
    ("xenon", 400): "Invalid user: expected a snowflake id (15-20 digits)",
    ("elixir", 400): "Invalid guild: expected a snowflake id (15-20 digits)",
    ("xenon", 401): ("Unauthorized", "Invalid token"),
    ("elixir", 401): NOT_AUTHORIZED,
    ("xenon", 403): XENON_ERRORS["not the creator"][1],
    ("xenon", 404): "Not found",
    ("elixir", 404): ELIXIR_ERRORS["no track"][1],
    ("xenon", 409): "Conflicts with what exists",
    ("elixir", 410): NOTHING_PLAYING,
    ("xenon", 413): "Request Entity Too Large",
    ("elixir", 413): "Request Entity Too Large",
    ("xenon", 429): RATE_LIMITED,
    ("elixir", 429): RATE_LIMITED,
    ("xenon", 503): Unavailable().message,
    ("elixir", 503): Unavailable().message,
}
"""The messages of each API's example error bodies (the real texts), unless the route names its own."""

_EXAMPLE_NOW = 1_765_000_000.0
"""The ``timestamp`` of Elixir's example error bodies (epoch seconds): any fixed moment."""


def error_examples(shape: str, status: int, messages: str | tuple[str, ...] | None = None) -> list[Example]:
    """Example error bodies of ``shape`` for ``status``, one per message; a 429 says how long to wait."""
    if messages is None:
        messages = _ERROR_EXAMPLES[shape, status]
    if isinstance(messages, str):
        messages = (messages,)
    wait = 2.5 if status == 429 else None
    return [
        Example(
            summary=message,
            value=msgspec.to_builtins(error_body(shape, message, _EXAMPLE_NOW, wait)),
        )
        for message in messages
    ]


def documented_errors(shape: str, *codes: int, **messages: str | tuple[str, ...]) -> dict[int, ResponseSpec]:
    """The OpenAPI answers of a route's errors, in its API's error shape, each with example
    bodies; ``messages`` gives a route's own texts for a status (``e404="Unknown template"``)."""
    body = ElixirErrorBody if shape == "elixir" else XenonErrorBody
    return {
        code: ResponseSpec(
            data_container=body,
            description=_ERROR_MEANINGS[code],
            generate_examples=False,
            examples=error_examples(shape, code, messages.get(f"e{code}")),
        )
        for code in (*codes, 503)  # any route may meet a database that cannot serve
    }


API_TAGS = {
    "Xenon": "The Xenon partner API (`/api`), for partner bots: id translators (mappers) and "
    "templates. Authorization: the bot's raw token (a `Bot ` prefix is tolerated). Errors: "
    '`{"error": message}`, a 429 with `retry_after` (ms). The live loader stream, WebSocket '
    "`/api/loaders/ws`, is described in the README.",
    "Elixir": "The Elixir Music API (`/api/v1`): a guild's player. Writes take `Authorization: Bearer "
    "<key>` (a key per guild and user) and a JSON body naming that user (`user` or `user.id`); "
    'reads need no key. Errors: `{"timestamp": ms, "message": text}`, a 429 with `retry_after` '
    "(ms). The live player, WebSocket `/api/v1/{guild_id}/player`, is described in the README.",
    "Player": "The now-playing page of a guild, for a browser or a streaming overlay.",
    "Admin": "The host's API (`/admin`, present when an admin token is set; `Authorization: Bearer "
    "<XE_ADMIN_TOKEN>`): bots, Elixir keys, guilds, templates, backups, loaders and the catalog, "
    'and listings a page at a time. Errors: `{"error": message}`.',
    "Sandbox": "Sandbox mode only (`xenon-elixir sandbox`): faults, the clock and the record of "
    "requests, for testing a bot against this server (admin token).",
    "Service": "Whether the service is up, and its figures for Prometheus.",
}
"""The document's groups (a client generator's modules): one per API, in this order."""


def openapi_tags(routers: Iterable[Router]) -> list[OpenAPITag]:
    """The tags the documented operations of ``routers`` use, described, in :data:`API_TAGS`'s
    order: a group with no operation (the admin API without an admin token) is not listed."""
    used = {
        tag
        for router in routers
        for route in router.routes
        for handler in getattr(route, "route_handlers", ())
        if handler.resolve_include_in_schema()
        for tag in handler.resolve_tags()
    }
    return [OpenAPITag(name=name, description=text) for name, text in API_TAGS.items() if name in used] + [
        OpenAPITag(name=name) for name in sorted(used - API_TAGS.keys())
    ]


def answered(type_: Any, description: str = "The answer") -> dict[int, ResponseSpec]:
    """Document the 200 of a route that answers :class:`RawJson` bytes."""
    return {200: ResponseSpec(data_container=type_, description=description, generate_examples=False)}


_JSON_TYPE = (b"content-type", b"application/json")


class RawJson:
    """A 200 JSON answer from bytes encoded once (by msgspec, or kept encoded): an ASGI app
    the hot routes return, skipping the framework's serialization and header bookkeeping."""

    __slots__ = ("_body", "_start")

    def __init__(self, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        length = (b"content-length", b"%d" % len(body))
        self._start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 200,
            "headers": [_JSON_TYPE, length, *headers],
        }
        self._body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}

    @property
    def size(self) -> int:
        return len(self._body["body"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self._start)
        await send(self._body)


def header(scope: Scope, name: bytes) -> str | None:
    """One request header by its lower-case name, read from the ASGI scope of an HTTP request
    or a WebSocket handshake (building ``request.headers`` for a single value costs more than
    the rest of a cached answer)."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


_BODY_KEPT = "xenon_elixir.body"
"""Where a request's body is kept in its scope once read."""


async def request_body(request: Request) -> bytes:
    """``request.body()`` as Litestar reads it (a 413 past the route's limit, judged first by the
    announced length; a client that leaves mid-body is an error) without building every header
    to read one, which cost a tenth of a play."""
    kept = request.scope.get(_BODY_KEPT)
    if isinstance(kept, BaseException):  # the request is asked again (see looked_at_by_the_change)
        raise kept
    if kept is not None:
        return cast(bytes, kept)
    limit = request.route_handler.resolve_request_max_body_size() or math.inf
    announced = header(request.scope, b"content-length")
    try:
        if announced is not None and int(announced) > limit:
            raise RequestEntityTooLarge
    except ValueError:
        raise ClientException(f"Invalid content-length: {announced!r}") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await request.receive()
        if event["type"] == "http.request":
            if body := event["body"]:
                size += len(body)
                if size > limit:  # read in part: asked again, it is refused again
                    refused = request.scope[_BODY_KEPT] = RequestEntityTooLarge()  # type: ignore[literal-required]
                    raise refused
                chunks.append(body)
            if not event.get("more_body", False):
                body = request.scope[_BODY_KEPT] = b"".join(chunks)  # type: ignore[literal-required]
                return body
        elif event["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")


def mount_prefix(scope: Scope) -> str:
    """The path the app is mounted under: ``root_path`` where the host sets it, else what the
    raw request path has before ``path`` (a Litestar mount strips the prefix from ``path`` only)."""
    if root := scope.get("root_path", ""):
        return root
    raw = (scope.get("raw_path") or b"").decode("latin-1").split("?", 1)[0]
    path = scope.get("path", "").rstrip("/")
    return raw[: -len(path)].rstrip("/") if path and raw.rstrip("/").endswith(path) and raw != path else ""


@dataclasses.dataclass
class OptionalBodyOperation(Operation):
    """An operation whose request body may be left out (Litestar always writes ``required: true``)."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):  # Litestar writes one, never a reference
            self.request_body.required = False


def one_of_names(*names: str) -> Schema:
    """A body must hold one of ``names`` (a field or its dotted alias, ``user`` or ``user.id``)."""
    return Schema(any_of=[Schema(required=[name]) for name in names])


def documented_body(type_: Any, *requires: Schema) -> dict[str, Provide]:
    """Document a request body without having the framework parse it: Litestar describes a
    dependency's ``data`` parameter, and calls a dependency only when a handler asks for it.
    Bodies are parsed by the handlers, after authorization, into these same types.

    ``requires`` are added to the body's own schema (``allOf``), not to the operation's: a client
    generator then names the body by its type (``ElixirJoinBody``), not by the route."""

    async def body(data: Any) -> None:  # never called
        raise AssertionError("documentation only")

    if requires:
        type_ = Annotated[type_, Body(schema_extra={"allOf": list(requires)})]
    body.__annotations__ = {"data": type_, "return": None}
    return {"_documented_body": Provide(body)}


@functools.lru_cache(maxsize=4)
def cache_headers(now: int, max_age: int) -> tuple[tuple[bytes, bytes], ...]:
    """The caching headers of an answer given in second ``now`` (made once a second)."""
    expires = email.utils.formatdate(now + max_age, usegmt=True).encode()
    return ((b"cache-control", b"max-age=%d" % max_age), (b"expires", expires), (b"expiration", expires))


_MAX_HOPS = 16
"""``X-Forwarded-For`` hops looked at, from the right: more proxies than this in a row is a forgery."""


def _forwarded_for(scope: Any) -> str | None:
    values = [value for name, value in scope.get("headers", ()) if name == b"x-forwarded-for"]
    return b",".join(values).decode("latin-1") if values else None


def _rewritten(host: str, port: int, forwarded: str) -> bool:
    """Whether the server put a hop of ``X-Forwarded-For`` in place of the socket peer: uvicorn
    gives such a hop the port it was written with, else 0, which no TCP peer has."""
    return host in forwarded and (port == 0 or f"{host}:{port}" in forwarded or f"]:{port}" in forwarded)


@functools.cache
def _warn_rewritten() -> None:
    log.warning(
        "uvicorn replaced the client address with X-Forwarded-For: run it with --no-proxy-headers "
        "(and name your proxies in XE_TRUSTED_PROXIES); until then such requests share one address"
    )


@functools.lru_cache(maxsize=4096)
def _address_of(hop: str) -> str:
    if hop.startswith("["):
        hop = hop[1:].partition("]")[0]
    elif hop.count(":") == 1:
        hop = hop.partition(":")[0]
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return hop[:100]


def _hop_address(hop: str) -> str:
    """A hop's address without a port (``1.2.3.4:5678``, ``[::1]:80``); a hop that is not an
    address, as it was written (at most 100 characters)."""
    return _address_of(hop[:100])


def client_address(scope: Any, proxies: TrustedProxies) -> str:
    """Who a request comes from, for ``auth_failures``, the stream bound and the access log: the
    socket peer, unless that is a trusted proxy (:attr:`Config.trusted_proxies`); then the
    rightmost ``X-Forwarded-For`` hop that is not one. Each proxy appends the peer it saw, so a
    client can write every hop left of its own but never its own: the leftmost hop is a choice.
    """
    client = scope.get("client")
    if not client:
        return "unknown"
    host = client[0]
    forwarded = _forwarded_for(scope)
    if forwarded is None:
        return host
    if _rewritten(host, client[1], forwarded):
        # uvicorn run with its default --proxy-headers replaced the socket peer (one it trusts,
        # by default loopback) with a hop of the header. The peer is lost, and the hop may be a
        # forgery: every such request is counted as one address, that of the unknown proxy.
        _warn_rewritten()
        return "proxy"
    if host not in proxies:
        return host
    address = host
    hops = [hop for hop in (part.strip() for part in forwarded.split(",")) if hop]
    for hop in reversed(hops[-_MAX_HOPS:]):  # a long forged list costs no more than this
        address = _hop_address(hop)
        if address not in proxies:
            break
    return address  # or, proxies all the way, the farthest one looked at


async def refuse_handshake(scope: Scope, send: Send, error: ApiError, now: float) -> None:
    """Say why a handshake is refused.

    A rate limit is accepted and then closed at once with 4029 and the JSON error as the reason,
    as the original did: reconnect loops (``async for ws in websockets.connect(...)``) give up
    for good on a 4xx handshake answer, and a bot's shards routinely connect within a second.
    Anything else is an HTTP answer where the server can send one (the ASGI denial-response
    extension), else accepted and closed with 4000 + the status's last two digits.
    """
    body = msgspec.json.encode(error_body(error.shape or "xenon", error.message, now, error.retry_after))
    if error.status_code != 429 and "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        await send({"type": "websocket.http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        return
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    if error.status_code == 429:
        await send({"type": "websocket.close", "code": 4029, "reason": body.decode()})
    elif error.status_code == 503:  # try again later
        await send({"type": "websocket.close", "code": 1013, "reason": error.message})
    else:  # 401 -> 4001, 400 -> 4000
        await send(
            {"type": "websocket.close", "code": 4000 + error.status_code % 100, "reason": error.message}
        )


async def _close(send: Send, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(send({"type": "websocket.close", "code": code, "reason": reason}), 5.0)


_FRAMES_BETWEEN_YIELDS = 64
"""A long replay hands the loop back this often: a socket with room takes a send without waiting."""


async def _pump(stream: Stream, send: Send) -> None:
    sent = 0
    try:
        async for frame in stream:
            await send({"type": "websocket.send", "text": frame, "bytes": None})
            sent += 1
            if sent % _FRAMES_BETWEEN_YIELDS == 0:
                await asyncio.sleep(0)
    except asyncio.CancelledError:
        if not (stream.overflowed or stream.revoked):
            raise
    except OSError:  # the client vanished mid-send
        return
    except DomainError as fault:  # the store cannot say whether the credential holds: come back later
        await _close(send, 1013, ApiError.of(fault, "xenon").message)
        return
    if stream.overflowed:
        # 1013 (try again later) tells the client to reconnect.
        await _close(send, 1013, "backlog overflow")
    elif stream.revoked:  # as a refused handshake: retrying with this credential cannot help
        await _close(send, 4001, "Invalid token")


async def _drain(receive: Receive) -> None:
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def follow(
    stream: Stream, send: Send, receive: Receive, revocations: Revocations | None = None
) -> None:
    """Accept a WebSocket and send it the stream's frames until the client leaves, or falls so
    far behind that it is closed with 1013 (loss is never silent: it reconnects, with ``?since=``
    where the stream has a log), or the credential that opened it is revoked (4001). Client
    messages are ignored."""
    try:
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        pump = asyncio.create_task(_pump(stream, send))
        stream.subscription.on_dropped = pump.cancel
        if revocations is not None:
            revocations.watch(stream)
        listen = asyncio.create_task(_drain(receive))
        await asyncio.wait((pump, listen), return_when=asyncio.FIRST_COMPLETED)
        for task in (pump, listen):
            task.cancel()
        await asyncio.gather(pump, listen, return_exceptions=True)
    finally:
        # The pump task keeps its CancelledError, whose traceback keeps the pump's frame and so
        # the subscription: closed (and unhooked), a departed connection is freed at once, not at
        # the next full collection (a round of 1,000 departures held ~70 MB until then).
        stream.close()
        if revocations is not None:
            revocations.unwatch(stream)


# ---------------------------------------------------------------------------
# 20. Guards: who may call (tokens, keys, admin)
# ---------------------------------------------------------------------------


def services_of(request: ASGIConnection[Any, Any, Any, Any]) -> Services:
    return request.app.state.xe


async def counted_refusal(services: Services, scope: Scope, refusal: ApiError) -> ApiError:
    """What to answer a failed authorization: the refusal itself, or a 429 in the same API's
    shape once the client address has failed too often (``auth_failures``)."""
    address = client_address(scope, services.config.proxies)
    return await over_limit(services, "auth_failures", address, type(refusal)) or refusal


async def xenon_bot(services: Services, scope: Scope) -> tuple[Bot, str]:
    """The bot whose token is in ``Authorization`` (raw, or with a ``Bot `` prefix), and the token."""
    authorization = header(scope, b"authorization")
    if not authorization:
        raise await counted_refusal(services, scope, XenonError(401, "Unauthorized"))
    scheme, _, rest = authorization.partition(" ")
    token = rest.strip() if scheme.lower() == "bot" and rest else authorization.strip()
    bot = await services.stores.partners.bot_by_token(token)
    if bot is None:
        raise await counted_refusal(services, scope, XenonError(401, "Invalid token"))
    return bot, token


async def xenon_caller(request: Request, group: str) -> Bot:
    """Authorize a Xenon request, then count it against the bot's budget for ``group``. Auth
    comes first, so an invalid token never spends a real bot's budget."""
    services = services_of(request)
    bot, _ = await xenon_bot(services, request.scope)
    await limited(services, group, bot.id)
    return bot


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
    services = services_of(request)
    key = elixir_key(header(request.scope, b"authorization"))
    owner = await services.stores.keys.owner(key) if key else None
    if owner is None or owner[0] != guild_id:
        raise await counted_refusal(services, request.scope, ElixirError(401, NOT_AUTHORIZED))
    body = decode_body(await request_body(request), ElixirBody)
    if body.user is None:
        raise ElixirError(400, 'Missing "user" (or "user.id") in body.')
    if body.user != owner[1]:
        raise await counted_refusal(services, request.scope, ElixirError(401, NOT_AUTHORIZED))
    return guild_id, body.user, body


def looked_at_by_the_change(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """An Elixir write, whose only success is a committed player change: on a store that
    defers looks (PostgreSQL), a remembered key is used without a look at the ``credentials``
    counter of its own, and the change's transaction, which reads the counter anyway, refuses
    the change if a credential changed since that key was checked (:class:`CredentialsMoved`).
    Whatever else it would answer is answered only after a look, as without the deferral: the
    request is asked again, undeferred, when the look (or the change) found a credential
    changed. A revoke is refused from the next request on (SPEC §0), at one round trip less."""

    @functools.wraps(handler)
    async def deferred(request: Request, guild_id: str) -> T:
        database = services_of(request).stores.database
        task = asyncio.current_task()
        if not database.defers_looks or task is None:
            return await handler(request, guild_id)
        look = DeferredLook(weakref.ref(task))
        token = _DEFERRED_LOOK.set(look)
        try:
            return await handler(request, guild_id)
        except Exception as exc:
            # Its answer stands: nothing remembered was used; a 401 (never a stale yes); or the
            # change was handed over and not refused for the credentials (the change's own look
            # passed, or it may have committed: it is never made twice).
            unverified = look.submitted and not isinstance(exc, CredentialsMoved)
            if not look.looked_at or unverified or (isinstance(exc, ApiError) and exc.status_code == 401):
                raise
            failed = exc
        finally:
            _DEFERRED_LOOK.reset(token)
        counter = await database.credentials()
        if any(seen != counter for seen in look.looked_at):  # a change found them moved, or a look did
            return await handler(request, guild_id)
        raise failed

    return deferred


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    services: Services = connection.app.state.xe
    token = services.config.admin_token or ""
    given = header(connection.scope, b"authorization") or ""
    scheme, _sep, value = given.partition(" ")
    if not (
        token and scheme.lower() == "bearer" and hmac.compare_digest(digest(value.strip()), digest(token))
    ):
        raise await counted_refusal(services, connection.scope, XenonError(401, "Unauthorized"))


# ---------------------------------------------------------------------------
# 21. Xenon routes
# ---------------------------------------------------------------------------


def query_id(value: str | None, field: str, parse: Callable[[str, str], str] = path_id) -> str:
    if value is None or value == "":
        raise XenonError(400, f"Missing query parameter: {field}")
    return parse(value, field)


def _backup_param(value: str, _: str) -> str:
    try:
        return valid_backup_id(value)
    except ValueError as exc:
        raise XenonError(400, str(exc)) from None


_XENON_SECURITY: list[dict[str, list[str]]] = [{"BotToken": []}]
_XENON: dict[str, Any] = {"tags": ["Xenon"]}


@get(
    "/mappers",
    responses={
        **answered(Mapper, "The mapper: each old id of the source (or backup) and its new id in the target"),
        **documented_errors(
            "xenon",
            400,
            401,
            404,
            429,
            e400="Missing query parameter: target",
            e404=(XENON_ERRORS["mapper"][1], XENON_ERRORS["backup"][1]),
        ),
    },
    security=_XENON_SECURITY,
    operation_id="get_mappers",
    summary="Translate ids from a source guild to a target guild",
    description="The ids a load copied from the `source` guild (or from `backup`) to the `target` guild, "
    "old to new, and the users who loaded it (`loaders`). One of `source` or `backup` is needed; a "
    "known backup wins, an unknown one falls back to `source`. Rate limited per bot (group "
    "`mappers`); a 200 may be cached for `Cache-Control: max-age` seconds.",
    **_XENON,
)
async def xenon_mappers(
    request: Request,
    target: Annotated[
        str | None,
        QueryParameter(
            required=True,
            description=f"The guild the ids were copied to. {SNOWFLAKE_SAYS}",
            schema_extra={"type": "string", "oneOf": None, "pattern": SNOWFLAKE_PATTERN},
        ),
    ] = None,
    source: Annotated[
        str | None,
        QueryParameter(
            description=f"The guild the ids were copied from (or give `backup`). {SNOWFLAKE_SAYS}",
            schema_extra={"type": "string", "oneOf": None, "pattern": SNOWFLAKE_PATTERN},
        ),
    ] = None,
    backup: Annotated[
        str | None,
        QueryParameter(
            description="The backup the ids were loaded from (or give `source`): 1-32 letters and digits, "
            "any case",
            schema_extra={"type": "string", "oneOf": None, "pattern": _BACKUP_ID_PATTERN},
        ),
    ] = None,
) -> RawJson:
    """Translate ids of the source guild (or a backup's) to those of the target guild."""
    services = services_of(request)
    await xenon_caller(request, "mappers")
    target_id = query_id(target, "target")
    from_backup = query_id(backup, "backup", _backup_param) if backup else None
    mapper = await services.partners.mapper_json(
        target_id, query_id(source, "source") if source else None, from_backup
    )
    # Only a found mapper is cacheable (the original also cached its errors).
    return RawJson(mapper, cache_headers(int(services.config.clock()), services.config.cache_seconds))


def _template_bots_route(attach: bool) -> Any:
    """Attach and detach differ only in the one word: same auth, body, checks and idempotence."""

    async def change(request: Request, template_id: TemplateIdPath) -> Empty:
        bot = await xenon_caller(request, "templates")
        raw = await request.body()
        body = decode_body(raw, AttachBody) if raw.strip() else AttachBody()
        await services_of(request).partners.set_template_bot(template_id, bot, body.user, attached=attach)  # type: ignore[arg-type]
        return Empty()

    route = post if attach else delete
    verb = "attach" if attach else "detach"
    change.__name__ = f"xenon_{verb}_bot"
    change.__doc__ = f"{verb.capitalize()} the calling bot; the body is optional."
    return route(
        "/templates/{template_id:str}/bots",
        status_code=200,
        name=change.__name__,
        responses=documented_errors("xenon", 400, 401, 403, 404, 413, 429, e404=XENON_ERRORS["template"][1]),
        dependencies=documented_body(AttachBody),
        operation_class=OptionalBodyOperation,
        security=_XENON_SECURITY,
        operation_id=f"{verb}_bot",
        summary=f"{verb.capitalize()} the calling bot {'to' if attach else 'from'} a template",
        description=f"{verb.capitalize()}es the bot whose token is given {'to' if attach else 'from'} "
        "the template, so that the template's page lists it (or no longer does). Idempotent. The body "
        'is optional: `{"user": "<id>"}` also checks that this user created the template (403 if '
        "not). Rate limited per bot (group `templates`).",
        **_XENON,
    )(change)


@get(
    "/templates/{template_id:str}/bots",
    responses=documented_errors("xenon", 400, 404, e404=XENON_ERRORS["template"][1]),
    operation_id="get_template_bots",
    summary="The bots attached to a template",
    description="The ids of the bots attached to the template. No authorization.",
    **_XENON,
)
async def xenon_template_bots(request: Request, template_id: TemplateIdPath) -> TemplateBots:
    template = await services_of(request).partners.template(template_id)
    return TemplateBots([bot.id for bot in template.bots])


@get(
    "/templates/{template_id:str}",
    responses=documented_errors("xenon", 400, 404, e404=XENON_ERRORS["template"][1]),
    operation_id="get_template",
    summary="A template's details",
    description="The template's name, source guild and creator, and the bots attached to it (id and "
    "name), as its page shows them. No authorization.",
    **_XENON,
)
async def xenon_template(request: Request, template_id: TemplateIdPath) -> Template:
    return await services_of(request).partners.template(template_id)


def _since(scope: Any) -> int | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("since")
    if not values:
        return None
    if not values[0].isascii() or not values[0].isdigit() or len(values[0]) > 18:
        raise XenonError(400, "Invalid since: expected an event number (0 or more)")
    return int(values[0])


@asgi("/loaders/ws", opt={"api": "xenon"}, copy_scope=False, include_in_schema=False)
async def xenon_loaders_ws(scope: Scope, receive: Receive, send: Send) -> None:
    """Live loader events. The token is read from the handshake; client messages are ignored."""
    if scope["type"] != ScopeType.WEBSOCKET:
        raise XenonError(426, "Expected a WebSocket handshake", headers={"Upgrade": "websocket"})
    if (await receive())["type"] != "websocket.connect":
        return
    services: Services = scope["app"].state.xe
    try:
        bot, token = await xenon_bot(services, scope)
        await limited(services, "loaders_ws", bot.id)
        since = _since(scope)
    except DomainError as fault:  # the database or the limiter cannot answer
        await refuse_handshake(scope, send, ApiError.of(fault, "xenon"), services.config.clock())
        return
    except ApiError as refusal:
        await refuse_handshake(scope, send, refusal, services.config.clock())
        return

    async def admit() -> bool:  # the token still holds: a revoke closes the stream (4001)
        return await services.stores.partners.bot_by_token(token) is not None

    stream = services.hub.stream(LOADER_TOPIC, since, services.stores.loaders.events_since, admit=admit)
    await follow(stream, send, receive, services.revocations)


XENON_ROUTES = [
    xenon_mappers,
    _template_bots_route(attach=True),
    _template_bots_route(attach=False),
    xenon_template_bots,
    xenon_template,
    xenon_loaders_ws,
]


# ---------------------------------------------------------------------------
# 22. Elixir routes
# ---------------------------------------------------------------------------

_ELIXIR_WRITE_ERRORS = (400, 401, 413, 429)


_ELIXIR_WRITE_SAYS = (
    " Needs the key of this guild and of the body's user (`user`, or `user.id`); rate limited per key."
)
_ELIXIR: dict[str, Any] = {"tags": ["Elixir"]}


def _elixir_post(
    path: str,
    *more_errors: int,
    responses_200: Any = None,
    body: Any = ElixirUserBody,
    description: str,
    **options: Any,
) -> Any:
    """An Elixir write route: 200 on success, its body documented, its errors in Elixir's shape,
    its key's look deferred to its player change (:func:`looked_at_by_the_change`: every Elixir
    write succeeds only through one). ``responses_200`` documents the answer of a route that
    returns :class:`RawJson` bytes."""
    requires = [one_of_names("user", "user.id")]
    if body is ElixirJoinBody:
        requires.append(one_of_names("channel", "channel.id"))
    route = post(
        path,
        status_code=200,
        responses={
            **(answered(responses_200) if responses_200 is not None else {}),
            **documented_errors("elixir", *_ELIXIR_WRITE_ERRORS, *more_errors),
        },
        dependencies=documented_body(body, *requires),
        security=[{"ElixirKey": []}],
        description=description + _ELIXIR_WRITE_SAYS,
        **_ELIXIR,
        **options,
    )
    return lambda handler: route(looked_at_by_the_change(handler))


@_elixir_post(
    "/{guild_id:str}/join",
    body=ElixirJoinBody,
    operation_id="join",
    summary="Join a voice channel",
    description="Connects the guild's player to the voice channel `channel` (or `channel.id`), "
    "which must be one of the guild's (400 otherwise); joining while connected moves the player and "
    "keeps its queue.",
)
async def elixir_join(request: Request, guild_id: SnowflakePath) -> Joined:
    guild_id, user_id, body = await elixir_caller(request, guild_id)
    try:
        channel_id = body.channel_id()
    except ValueError as exc:
        raise ElixirError(400, str(exc)) from None
    if channel_id is None:
        raise ElixirError(400, 'Missing "channel" (or "channel.id") in body.')
    await services_of(request).music.join(guild_id, channel_id)
    return Joined(guild_id, channel_id, user_id, "Successfully joined the voice channel.")


@_elixir_post(
    "/{guild_id:str}/volume",
    body=ElixirVolumeBody,
    operation_id="set_volume",
    summary="Set the volume",
    description="Sets the player's volume, a whole number 0-100 (a JSON integer or a digit string); "
    "the player must be connected (400 otherwise).",
)
async def elixir_volume(request: Request, guild_id: SnowflakePath) -> Controlled:
    guild_id, user_id, body = await elixir_caller(request, guild_id)
    volume = volume_of(body.volume)
    await services_of(request).music.set_volume(guild_id, volume)
    return Controlled(guild_id, user_id, f"Successfully changed the volume to {volume}.")


@_elixir_post(
    "/{guild_id:str}/play",
    404,
    responses_200=ElixirTrack | list[ElixirTrack],
    body=ElixirPlayBody,
    operation_id="play",
    summary="Play a track or a playlist",
    description="Looks `query` up (a search, a link, or a playlist's link) and queues what it finds: "
    "one track, or a playlist's tracks (answered as a list); playback starts if nothing was playing. "
    "404 when nothing is found; the player must be connected and its queue not full (400).",
)
async def elixir_play(request: Request, guild_id: SnowflakePath) -> RawJson:
    guild_id, user_id, body = await elixir_caller(request, guild_id)
    found = await services_of(request).music.play(guild_id, body.query or "", user_id)
    if isinstance(found, list):
        return RawJson(msgspec.json.encode([elixir_track(t, user_id) for t in found]))
    return RawJson(msgspec.json.encode(elixir_track(found, user_id)))


_CONTROLS_SAY = {
    "stop": "Stops playback, empties the queue and leaves the voice channel. Idempotent.",
    "pause": "Pauses the current track where it is.",
    "resume": "Resumes a paused track from where it was paused.",
}


def _control_route(action: str, verb: str) -> Any:
    """stop, pause and resume differ only in the player call and the message's verb."""

    async def control(request: Request, guild_id: SnowflakePath) -> Controlled:
        guild_id, user_id, _ = await elixir_caller(request, guild_id)
        await getattr(services_of(request).music, action)(guild_id)
        return Controlled(guild_id, user_id, f"Successfully {verb} the player.")

    control.__name__ = f"elixir_{action}"
    control.__doc__ = f"{action.capitalize()} the player."
    return _elixir_post(
        f"/{{guild_id:str}}/{action}",
        name=f"elixir_{action}",
        operation_id=action,
        summary=f"{action.capitalize()} the player",
        description=_CONTROLS_SAY[action],
    )(control)


@_elixir_post(
    "/{guild_id:str}/skip",
    410,
    operation_id="skip",
    summary="Skip to the next track",
    description="Ends the current track and plays the next one in the queue, answering it (with its "
    "position), or a message when the queue is now empty. 410 when nothing is playing.",
)
async def elixir_skip(request: Request, guild_id: SnowflakePath) -> ElixirTrack | Message:
    guild_id, user_id, _ = await elixir_caller(request, guild_id)
    music = services_of(request).music
    player = await music.skip(guild_id)
    if (entry := player.current) is None:
        return Message("Skipped the track. The queue is now empty.")
    return elixir_track(entry.track, entry.requested_by, player.position_at(music.now()))


@get(
    "/{guild_id:str}/nowplaying",
    responses={
        **answered(ElixirTrack, "The current track, with its position (ms) now"),
        **documented_errors("elixir", 400, 410),
    },
    operation_id="now_playing",
    summary="The track playing now",
    description="The track the guild's player is playing, with its position. No key. 410 when nothing "
    "is playing (an unknown guild included).",
    **_ELIXIR,
)
async def elixir_nowplaying(request: Request, guild_id: SnowflakePath) -> RawJson:
    music = services_of(request).music
    player = await music.player(path_id(guild_id, "guild"))
    if player is None or (entry := player.current) is None:
        raise ElixirError(410, NOTHING_PLAYING)
    return RawJson(
        msgspec.json.encode(elixir_track(entry.track, entry.requested_by, player.position_at(music.now())))
    )


@get(
    "/{guild_id:str}/queue",
    responses=documented_errors("elixir", 400),
    operation_id="get_queue",
    summary="The queue",
    description="The track playing now (with its position) and the tracks after it, in order; `null` "
    "and `[]` when nothing is queued. No key.",
    **_ELIXIR,
)
async def elixir_queue(request: Request, guild_id: SnowflakePath) -> QueueView:
    music = services_of(request).music
    player = await music.player(path_id(guild_id, "guild"), whole=True)
    if player is None or not player.queue:
        return QueueView(None, [])
    head, *rest = player.queue
    return QueueView(
        elixir_track(head.track, head.requested_by, player.position_at(music.now())),
        [elixir_track(e.track, e.requested_by) for e in rest],
    )


@websocket("/{guild_id:str}/player", opt={"api": "elixir"})
async def elixir_player_ws(
    socket: WebSocket[Any, Any, Any], guild_id: Annotated[str, PathParameter()]
) -> None:
    """The guild's player, live: its state on connect, then every change. No key, like
    ``nowplaying``, so bounded per client address instead; client messages are ignored."""
    scope, receive, send = socket.scope, socket.receive, socket.send
    if (await receive())["type"] != "websocket.connect":
        return
    services = services_of(socket)
    address = client_address(scope, services.config.proxies)
    if not services.streams.take(address):
        # Accepted, then closed with 4029, as a rate limit: a reconnect loop retries a close.
        error = ElixirError(429, TOO_MANY_STREAMS.format(services.streams.limit))
        await refuse_handshake(scope, send, error, services.config.clock())
        return
    try:
        try:
            stream = await services.music.follow(path_id(guild_id, "guild"))
        except (DomainError, ApiError) as refusal:  # a bad guild id, or the database cannot answer
            answer = ApiError.of(refusal, "elixir") if isinstance(refusal, DomainError) else refusal
            error = ElixirError(answer.status_code, answer.message, headers=answer.headers)
            await refuse_handshake(scope, send, error, services.config.clock())
            return
        await follow(stream, send, receive)
    finally:  # however it ends: closed, refused, or the client vanished
        services.streams.give_back(address)


@get("/{guild_id:str}/player", include_in_schema=False)
async def elixir_player_http(guild_id: Annotated[str, PathParameter()]) -> None:
    """Plain HTTP to the player stream: say what it takes (Litestar's routing cannot give a raw
    ASGI route with a path parameter an HTTP answer)."""
    raise ElixirError(426, "Expected a WebSocket handshake", headers={"Upgrade": "websocket"})


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
    elixir_player_ws,
    elixir_player_http,
]


# ---------------------------------------------------------------------------
# 23. Admin routes
# ---------------------------------------------------------------------------


def _admin(
    route: Any, path: str, *errors: int, body: Any = None, status_code: int = 200, **options: Any
) -> Any:
    """An admin route (``post``, ``put``, ``get`` or ``delete``): its body documented when it takes
    one, its errors in the Xenon shape (``e404="..."``: a status's own example message), grouped
    under "Admin" unless ``tags`` says otherwise."""
    codes = (400, 401, *errors, *((413,) if body is not None else ()), 429)
    messages = {name: options.pop(name) for name in list(options) if name[:1] == "e" and name[1:].isdigit()}
    responses = {
        **options.pop("responses", {}),
        **documented_errors("xenon", *codes, e401="Unauthorized", **messages),
    }
    if body is not None:
        options["dependencies"] = documented_body(body)
    options.setdefault("tags", ["Admin"])
    return route(path, status_code=status_code, responses=responses, **options)


@contextlib.contextmanager
def bad_input() -> Iterator[None]:
    """A service's input check refusing (a plain ``ValueError`` naming the field) is a 400, as
    the body's own checks are; a domain refusal keeps its own answer."""
    try:
        yield
    except DomainError:
        raise
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@_admin(
    post,
    "/keys",
    409,
    body=KeyIn,
    status_code=201,
    operation_id="create_key",
    summary="Create an Elixir key",
    description="A new key for the guild and user (64 hex characters), shown only in this answer. 409 if the pair "
    "has one already, unless `rotate` is true: then the old key is revoked and a new one made.",
    e409="A key already exists for this guild and user; rotate it to get a new one",
)
async def admin_create_key(request: Request) -> KeyOut:
    ask = decode_body(await request.body(), KeyIn)
    key = await services_of(request).keys.create(ask)
    return KeyOut(str(ask.guild), str(ask.user), key)


@_admin(
    delete,
    "/keys/{guild_id:str}/{user_id:str}",
    operation_id="revoke_key",
    summary="Revoke an Elixir key",
    description="Revokes the guild and user's key, if any. Idempotent.",
)
async def admin_revoke_key(request: Request, guild_id: SnowflakePath, user_id: SnowflakePath) -> Empty:
    with bad_input():
        await services_of(request).keys.revoke(guild_id, user_id)
    return Empty()


@_admin(
    put,
    "/guilds/{guild_id:str}",
    body=GuildIn,
    operation_id="put_guild",
    summary="Register a guild and its voice channels",
    description="Creates or replaces the guild in the registry Elixir's join checks against: its name and voice "
    "channel ids.",
)
async def admin_put_guild(request: Request, guild_id: SnowflakePath) -> Guild:
    ask = decode_body(await request.body(), GuildIn)
    with bad_input():
        return await services_of(request).registry.put(guild_id, ask.name, ask.voice_channels)


@_admin(
    delete,
    "/guilds/{guild_id:str}",
    operation_id="delete_guild",
    summary="Remove a guild from the registry",
    description="Removes the guild (its keys stay valid: the bot may rejoin). Idempotent.",
)
async def admin_delete_guild(request: Request, guild_id: SnowflakePath) -> Empty:
    with bad_input():
        await services_of(request).registry.delete(guild_id)
    return Empty()


_LINES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")
_LONGEST_LINE = 64 * 1024


async def capped_body(request: Request, limit: int) -> bytes:
    """The request's body, or a 413 once it passes ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "Request Entity Too Large")
        chunks.append(chunk)
    return b"".join(chunks)


async def import_lines(chunks: AsyncIterator[bytes], catalog: CatalogStore) -> int:
    """Tracks streamed as JSON lines, written a chunk of :data:`_IMPORT_CHUNK` at a time as they
    arrive: an import of any size, in memory of one chunk. A bad line stops it there (a 400
    naming the line; the chunks before it are written: upserts, so send it again once fixed).
    A body without a track (empty: ``curl --data-binary @missing-file`` sends one) is a 400."""
    decode = msgspec.json.Decoder(Track).decode
    pending, imported, number, tracks = b"", 0, 0, 0
    batch: list[Track] = []

    async def write() -> None:
        nonlocal batch, imported
        if batch:
            imported += (await catalog.import_catalog(batch, []))[0]
            batch = []

    async for chunk in chunks:
        *lines, pending = (pending + chunk).split(b"\n")
        if len(pending) > _LONGEST_LINE:
            raise ApiError(400, f"Line {number + len(lines) + 1} is longer than {_LONGEST_LINE} bytes")
        for line in lines if chunk else [*lines, pending]:
            number += 1
            if not line.strip():
                continue
            tracks += 1
            try:
                batch.append(decode(line))
            except (msgspec.DecodeError, ValueError, RecursionError) as exc:
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise ApiError(
                    400, f"Invalid track on line {number}: {reason} ({imported} imported before it)"
                ) from None
            if len(batch) >= _IMPORT_CHUNK:
                await write()
    if not tracks:
        raise ApiError(400, NO_BODY)
    await write()
    return imported


async def _ending(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``stream``, then an empty chunk: the end, for :func:`import_lines` to take its last line."""
    async for chunk in stream:
        if chunk:
            yield chunk
    yield b""


@_admin(
    post,
    "/tracks",
    body=list[Track],
    request_max_body_size=1 << 40,
    operation_id="import_tracks",
    summary="Import tracks into the catalog",
    description="Adds or replaces tracks (by source and identifier): a JSON array (at most the admin body limit), "
    "or with `Content-Type: application/x-ndjson` one track per line, a stream of any size written as "
    "it arrives. Answers how many were imported.",
)
async def admin_import_tracks(request: Request) -> Count:
    """A JSON array of tracks (at most ``admin_max_body_size``, checked whole before anything is
    written), or, with ``Content-Type: application/x-ndjson``, one track per line of a stream of
    any size (a million tracks: written as they arrive, a chunk at a time)."""
    services = services_of(request)
    kind = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
    if kind in _LINES:
        return Count(await import_lines(_ending(request.stream()), services.stores.catalog))
    tracks = decode_body(await capped_body(request, services.config.admin_max_body_size), list[Track])
    count, _ = await services.stores.catalog.import_catalog(tracks, [])
    return Count(count)


@_admin(
    post,
    "/playlists",
    body=Playlist,
    operation_id="put_playlist",
    summary="Put a playlist into the catalog",
    description="Creates or replaces a playlist: its tracks by identifier, each already in the catalog (400 "
    "naming the first unknown one).",
)
async def admin_put_playlist(request: Request) -> Playlist:
    playlist = decode_body(await request.body(), Playlist)
    await services_of(request).stores.catalog.import_catalog([], [playlist])
    return playlist


_ROTATED = ResponseSpec(BotOut, description="The bot existed: its token is rotated", generate_examples=False)


@_admin(
    post,
    "/bots",
    body=BotIn,
    status_code=201,
    responses={200: _ROTATED},
    operation_id="grant_bot",
    summary="Grant a bot a token",
    description="Registers a Xenon partner bot and answers its token (201); for a bot that exists, rotates its "
    "token (200: the old one stops working).",
)
async def admin_grant_bot(request: Request) -> Response[BotOut]:
    bot = decode_body(await request.body(), BotIn)
    token, existed = await services_of(request).partners.grant_bot(bot)
    return Response(BotOut(str(bot.id), bot.name, token), status_code=200 if existed else 201)


@_admin(
    delete,
    "/bots/{bot_id:str}",
    operation_id="revoke_bot",
    summary="Revoke a bot's token",
    description="The bot's token stops working at once, and its open loader streams close (4001). Idempotent.",
)
async def admin_revoke_bot(request: Request, bot_id: SnowflakePath) -> Empty:
    with bad_input():
        await services_of(request).partners.revoke_bot(bot_id)
    return Empty()


@_admin(
    post,
    "/templates",
    409,
    body=TemplateIn,
    status_code=201,
    operation_id="create_template",
    summary="Create a template",
    description="A template of a source guild by its creator; its id is generated (12 letters and digits) unless "
    "given. 409 if the id is taken.",
    e409="Template hHGhNE6wyxgF already exists",
)
async def admin_create_template(request: Request) -> Template:
    return await services_of(request).partners.create_template(decode_body(await request.body(), TemplateIn))


@_admin(
    post,
    "/backups",
    409,
    body=BackupIn,
    status_code=201,
    operation_id="create_backup",
    summary="Create a backup",
    description="A backup of a source guild by its creator; its id is generated (10 characters) unless given "
    "(1-32 letters and digits, stored lowercase). 409 if the id is taken.",
    e409="Backup 3zydfwqp0h already exists",
)
async def admin_create_backup(request: Request) -> Backup:
    return await services_of(request).partners.create_backup(decode_body(await request.body(), BackupIn))


@_admin(
    post,
    "/loaders",
    409,
    body=Loader,
    status_code=201,
    operation_id="start_loader",
    summary="Start a loader",
    description="Starts loading a backup or a template into the target guild, and publishes `start` on the loader "
    "stream. At most one loader runs per target guild (409).",
    e409="A loader is already running on guild 496683369665658880",
)
async def admin_start_loader(request: Request) -> LoaderEvent:
    return await services_of(request).loaders.start(decode_body(await request.body(), Loader))


@_admin(
    post,
    "/loaders/{target_id:str}/status",
    404,
    body=StatusIn,
    operation_id="set_loader_status",
    summary="Report a loader's progress",
    description="Publishes a `status` event (free text such as `loading roles`) of the loader running on the "
    "target guild, at most one per window per loader (later ones coalesce). 404 if none runs.",
    e404="No loader is running on guild 496683369665658880",
)
async def admin_loader_status(request: Request, target_id: SnowflakePath) -> Empty:
    status = decode_body(await request.body(), StatusIn)
    with bad_input():
        await services_of(request).loaders.status(target_id, status)
    return Empty()


@_admin(
    post,
    "/loaders/{target_id:str}/ids",
    404,
    body=IdsIn,
    operation_id="add_loader_ids",
    summary="Add ids a loader copied",
    description="Stages old-to-new ids of the running loader; they reach the mapper only when the loader is done "
    "with `ok` true. Answers how many were staged. 404 if none runs.",
    e404="No loader is running on guild 496683369665658880",
)
async def admin_loader_ids(request: Request, target_id: SnowflakePath) -> Count:
    ids = decode_body(await request.body(), IdsIn)
    with bad_input():
        return Count(await services_of(request).loaders.ids(target_id, ids))


@_admin(
    post,
    "/loaders/{target_id:str}/done",
    404,
    body=DoneIn,
    operation_class=OptionalBodyOperation,
    operation_id="finish_loader",
    summary="Finish a loader",
    description="Ends the running loader and publishes `done`. With `ok` true (the default) its staged ids are "
    "merged into the mapper and its user added to `loaders`; with `ok` false they are discarded. The "
    "body is optional. 404 if none runs.",
    e404="No loader is running on guild 496683369665658880",
)
async def admin_loader_done(request: Request, target_id: SnowflakePath) -> LoaderEvent:
    raw = await request.body()
    done = decode_body(raw, DoneIn) if raw.strip() else DoneIn()
    with bad_input():
        return await services_of(request).loaders.done(target_id, done.ok)


PageLimit = Annotated[
    str | None,
    QueryParameter(
        description=f"How many to answer, 1-{LIST_LIMIT} (100 when not given)",
        schema_extra={"type": "integer", "minimum": 1, "maximum": LIST_LIMIT, "oneOf": None},
    ),
]
PageAfter = Annotated[
    str | None,
    QueryParameter(
        description="Where the page starts: the `next` of the page before (none: the first page)",
        schema_extra={"type": "string", "maxLength": 100, "oneOf": None},
    ),
]


def page_limit(value: str | None) -> int:
    """``?limit=`` as a number, 100 when not given (:meth:`Listings.page` checks its range): one
    that is not a number is 0, which it refuses; past five digits, only how big it is counts."""
    if value is None:
        return 100
    if not value.isascii() or not value.isdigit():
        return 0
    return int(value.lstrip("0")[:5] or "0")


def _listing_route(kind: str) -> Any:
    """GET /admin/<kind>: one page, in id order; no secret is ever listed."""

    async def listing(request: Request, limit: PageLimit = None, after: PageAfter = None) -> Any:
        with bad_input():
            return await services_of(request).listings.page(kind, page_limit(limit), after)

    listing.__name__ = f"admin_list_{kind}"
    listing.__doc__ = (
        f"List {kind}, a page at a time (`?limit=` 1-1000, `?after=` the previous page's `next`)."
    )
    listing.__annotations__["return"] = Page[LISTED_AS[kind]]  # type: ignore[valid-type]  # made at run time
    return _admin(
        get,
        f"/{kind}",
        name=listing.__name__,
        operation_id=f"list_{kind}",
        summary=f"List {kind}",
        description=f"The {kind}, a page at a time in id order; `next` (when there are more) is the "
        "`after` of the next page. No secret (token or key) is ever listed.",
        e400=f"Invalid limit: expected 1-{LIST_LIMIT}",
    )(listing)


ADMIN_ROUTES = [
    *(_listing_route(kind) for kind in LISTINGS),
    admin_grant_bot,
    admin_revoke_bot,
    admin_create_template,
    admin_create_backup,
    admin_start_loader,
    admin_loader_status,
    admin_loader_ids,
    admin_loader_done,
    admin_create_key,
    admin_revoke_key,
    admin_put_guild,
    admin_delete_guild,
    admin_import_tracks,
    admin_put_playlist,
]


# ---------------------------------------------------------------------------
# 24. Host API: the Python door for an embedding bot
# ---------------------------------------------------------------------------


_ELIXIR_METHODS = {"join", "play", "enqueue", "set_volume", "skip", "pause", "resume", "stop"}


def _refusing_as_api(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """A host method refuses as the other doors do: with an :class:`ApiError` (status and message)."""

    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> T:
        try:
            return await method(*args, **kwargs)
        except DomainError as refusal:
            raise ApiError.of(refusal, "elixir" if method.__name__ in _ELIXIR_METHODS else "xenon") from None

    return call


class ElixirHost:
    """The host API's Elixir half: keys, the guild registry, the catalog and the players."""

    _services: Services

    @_refusing_as_api
    async def create_key(self, guild_id: str | int, user_id: str | int, *, rotate: bool = False) -> str:
        """A new Elixir key for (guild, user), shown only now. ``rotate`` replaces an existing one."""
        return await self._services.keys.create(KeyIn(guild=guild_id, user=user_id, rotate=rotate))

    @_refusing_as_api
    async def revoke_key(self, guild_id: str | int, user_id: str | int) -> bool:
        return await self._services.keys.revoke(guild_id, user_id)

    async def key_owner(self, key: str) -> tuple[str, str] | None:
        """The (guild, user) an Elixir key is bound to, or ``None``."""
        return await self._services.keys.owner(key)

    @_refusing_as_api
    async def put_guild(
        self, guild_id: str | int, name: str, voice_channels: Iterable[str | int] = ()
    ) -> Guild:
        return await self._services.registry.put(guild_id, name, voice_channels)

    @_refusing_as_api
    async def delete_guild(self, guild_id: str | int) -> bool:
        return await self._services.registry.delete(guild_id)

    async def get_guild(self, guild_id: str | int) -> Guild | None:
        return await self._services.registry.get(guild_id)

    @_refusing_as_api
    async def import_catalog(
        self,
        tracks: Iterable[Track | dict[str, Any]] = (),
        playlists: Iterable[Playlist | dict[str, Any]] = (),
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[int, int]:
        """Upsert tracks and playlists (dicts in the admin API's format are accepted)."""
        return await self._services.stores.catalog.import_catalog(
            [t if isinstance(t, Track) else msgspec.convert(t, Track) for t in tracks],
            [p if isinstance(p, Playlist) else msgspec.convert(p, Playlist) for p in playlists],
            progress,
        )

    async def get_track(self, source: str, identifier: str) -> Track | None:
        return await self._services.stores.catalog.track(source, identifier)

    async def get_playlist_tracks(self, source: str, identifier: str) -> list[Track]:
        return await self._services.stores.catalog.playlist_tracks(source, identifier)

    @_refusing_as_api
    async def resolve(self, query: str) -> Track | list[Track] | None:
        """What a play of ``query`` would find (the configured resolver)."""
        return await self._services.music.resolve(query)

    async def player(self, guild_id: str | int) -> Player | None:
        """The guild's player settled to now, with its whole queue, or ``None`` when not connected."""
        return await self._services.music.player(snowflake(guild_id, "guild"), whole=True)

    async def player_state(self, guild_id: str | int) -> PlayerState:
        """What a follower of the guild's player sees now (the frames of :meth:`follow_player`)."""
        return await self._services.music.state(snowflake(guild_id, "guild"))

    @_refusing_as_api
    async def follow_player(self, guild_id: str | int, backlog: int = PLAYER_BACKLOG) -> Stream:
        """The guild's player as ``WS {elixir}/{guild}/player`` sends it: the state now, then every
        change of every process of the fleet (its follower lease is taken before the state is
        read). ``async for frame in await host.follow_player(guild)``; ``close()`` it when done."""
        return await self._services.music.follow(snowflake(guild_id, "guild"), backlog)

    @_refusing_as_api
    async def join(self, guild_id: str | int, channel_id: str | int) -> Player:
        """Connect to a voice channel of a registered guild, or move there keeping the queue."""
        return await self._services.music.join(snowflake(guild_id, "guild"), snowflake(channel_id, "channel"))

    @_refusing_as_api
    async def play(self, guild_id: str | int, query: str, requested_by: str | int) -> Track | list[Track]:
        """Resolve ``query`` and enqueue what it finds, as the play route does."""
        return await self._services.music.play(
            snowflake(guild_id, "guild"), query, snowflake(requested_by, "user")
        )

    @_refusing_as_api
    async def enqueue(self, guild_id: str | int, tracks: Sequence[Track], requested_by: str | int) -> Player:
        return await self._services.music.enqueue(
            snowflake(guild_id, "guild"), tracks, snowflake(requested_by, "user")
        )

    @_refusing_as_api
    async def set_volume(self, guild_id: str | int, volume: int) -> Player:
        return await self._services.music.set_volume(snowflake(guild_id, "guild"), volume_of(volume))

    @_refusing_as_api
    async def skip(self, guild_id: str | int) -> Player:
        return await self._services.music.skip(snowflake(guild_id, "guild"))

    @_refusing_as_api
    async def pause(self, guild_id: str | int) -> Player:
        return await self._services.music.pause(snowflake(guild_id, "guild"))

    @_refusing_as_api
    async def resume(self, guild_id: str | int) -> Player:
        return await self._services.music.resume(snowflake(guild_id, "guild"))

    @_refusing_as_api
    async def stop(self, guild_id: str | int) -> None:
        await self._services.music.stop(snowflake(guild_id, "guild"))

    # A Lavalink node (XE_LAVALINK_URL) plays the players: the bot connects it, and forwards the
    # voice events of its own user (Discord's VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE).

    def lavalink_connect(self, bot_user_id: str | int) -> None:
        """Open the node's websocket as the bot (its Discord user id); needed once, unless
        ``XE_LAVALINK_USER_ID`` is set."""
        self._lavalink().node.connect(snowflake(bot_user_id, "bot user id"))

    def voice_state(self, guild_id: str | int, session_id: str, channel_id: str | int | None) -> None:
        """The bot's own voice state in the guild changed (``channel_id`` ``None``: it left)."""
        channel = None if channel_id is None else snowflake(channel_id, "channel")
        self._lavalink().voice(snowflake(guild_id, "guild"), sessionId=session_id, channelId=channel)

    def voice_server(self, guild_id: str | int, token: str, endpoint: str | None) -> None:
        """The guild's voice server for the bot (``endpoint`` ``None``: none is available yet)."""
        self._lavalink().voice(snowflake(guild_id, "guild"), token=token, endpoint=endpoint)

    def on_voice_lost(self, callback: VoiceLostCallback) -> None:
        """Call ``callback(guild_id, code, reason)`` (sync or async) once each time the node loses a
        guild's voice connection: a Discord close code (4006, 4014, ...; ``None`` when the node
        restarted or reported it not connected past ``XE_LAVALINK_VOICE_GRACE``). The track is
        held where audio stopped; joining the channel again (fresh voice) plays it on."""
        self._lavalink().voice_of.callbacks.append(callback)

    def _lavalink(self) -> LavalinkPlayers:
        if self._services.lavalink is None:
            raise ValueError("No Lavalink node is configured (XE_LAVALINK_URL)")
        return self._services.lavalink


class XenonHost:
    """The host API's Xenon half: events, bots, templates, backups, loaders and mappers."""

    _services: Services

    def subscribe(self, topic: str = LOADER_TOPIC, backlog: int | None = None) -> Subscription:
        """Follow a hub topic: ``"loaders"`` (the WebSocket's frames) or ``player_topic(guild_id)``.
        ``async for seq, frame in host.subscribe(...)``; ``close()`` it when done. A player topic
        gets this process's changes, and another process's only while the guild is followed
        somewhere: :meth:`follow_player` follows a guild's player across a fleet."""
        return self._services.hub.subscribe(topic, backlog)

    def stream(self, since: int | None = None, backlog: int | None = None) -> Stream:
        """The loader events as ``WS /api/loaders/ws?since=`` sends them: the logged ones after
        ``since``, then live ones, no gap and no duplicate. ``async for frame in ...``."""
        return self._services.hub.stream(
            LOADER_TOPIC, since, self._services.stores.loaders.events_since, backlog
        )

    def subscribers(self, topic: str = LOADER_TOPIC) -> int:
        return self._services.hub.subscribers(topic)

    @_refusing_as_api
    async def grant_bot(self, bot_id: str | int, name: str) -> str:
        """A Xenon token for the bot, shown only now; granting again rotates it."""
        token, _ = await self._services.partners.grant_bot(BotIn(id=bot_id, name=name))
        return token

    @_refusing_as_api
    async def revoke_bot(self, bot_id: str | int) -> bool:
        return await self._services.partners.revoke_bot(bot_id)

    async def bot_by_token(self, token: str) -> Bot | None:
        return await self._services.stores.partners.bot_by_token(token)

    @_refusing_as_api
    async def create_template(
        self, name: str, source_id: str | int, creator_id: str | int, *, template_id: str | None = None
    ) -> Template:
        made = TemplateIn(id=template_id, name=name, source_id=source_id, creator_id=creator_id)
        return await self._services.partners.create_template(made)

    async def get_template(self, template_id: str) -> Template | None:
        return await self._services.stores.partners.template(template_id)

    @_refusing_as_api
    async def create_backup(
        self, source_id: str | int, creator_id: str | int, *, backup_id: str | None = None
    ) -> Backup:
        made = BackupIn(id=backup_id, source_id=source_id, creator_id=creator_id)
        return await self._services.partners.create_backup(made)

    async def get_backup(self, backup_id: str) -> Backup | None:
        return await self._services.stores.partners.backup(backup_id)

    async def get_mapper(self, source_id: str | int, target_id: str | int) -> Mapper | None:
        return await self._services.stores.mappers.mapper(
            snowflake(source_id, "source"), snowflake(target_id, "target")
        )

    @_refusing_as_api
    async def merge_ids(
        self, source_id: str | int, target_id: str | int, ids: dict[str | int, str | int]
    ) -> None:
        """Merge old->new ids into a mapper at once, outside any load (seeding, a migration)."""
        await self._services.partners.merge_ids(source_id, target_id, IdsIn(ids))  # type: ignore[arg-type]

    @_refusing_as_api
    async def start_loader(
        self,
        target_id: str | int,
        type: str,
        source_id: str | int,
        *,
        backup_id: str | None = None,
        template_id: str | None = None,
        user_id: str | int | None = None,
    ) -> LoaderEvent:
        """Start loading a backup or template into a guild (publishes ``start``)."""
        load: dict[str, Any] = {"target_id": target_id, "type": type, "source_id": source_id}
        loader = Loader(**load, backup_id=backup_id, template_id=template_id, user_id=user_id)
        return await self._services.loaders.start(loader)

    async def loader_running(self, target_id: str | int) -> bool:
        return await self._services.stores.loaders.running(snowflake(target_id, "target_id")) is not None

    @_refusing_as_api
    async def loader_status(self, target_id: str | int, status: str) -> None:
        await self._services.loaders.status(target_id, StatusIn(status))

    @_refusing_as_api
    async def loader_ids(self, target_id: str | int, ids: dict[str | int, str | int]) -> int:
        """Stage old->new ids with the running loader; its successful done merges them."""
        return await self._services.loaders.ids(target_id, IdsIn(ids))  # type: ignore[arg-type]

    @_refusing_as_api
    async def loader_done(self, target_id: str | int, ok: bool = True) -> LoaderEvent:
        """End the loader (publishes ``done``, even for a failed load); a successful one merges its ids."""
        return await self._services.loaders.done(target_id, ok)


class Host(ElixirHost, XenonHost):
    """The Python door to the host-side operations (the admin API and the CLI are the others),
    and to the players, for a bot that embeds the app and plays the audio.

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
            opened.stores.database.pause_between_chunks = 0.1  # a server may share the file
            yield cls(opened)

    async def list(self, kind: str, *, limit: int = 100, after: str | None = None) -> Page[Any]:
        """A page of ``"bots"``, ``"guilds"``, ``"keys"``, ``"templates"``, ``"backups"`` or
        ``"loaders"``, in id order; pass ``page.next`` as ``after`` for the next. Never a secret."""
        return await self._services.listings.page(kind, limit, after)

    async def backup_database(self, path: str) -> None:
        """An online, consistent copy of the database in ``path`` (SQLite's backup API), taken
        while the server runs; restore by stopping the server and putting the copy in place."""
        await self._services.stores.database.backup_to(path)

    async def healthy(self) -> bool:
        """Whether the database answers (the health check)."""
        return await self._services.stores.database.ping()


def host_of(app: Litestar) -> Host:
    """The host API of a started app (its lifespan has run)."""
    host = getattr(app.state, "host", None)
    if host is None:
        raise RuntimeError("the app has not started: run its lifespan first")
    return host


# ---------------------------------------------------------------------------
# 25. Demo
# ---------------------------------------------------------------------------

# The demo's own ids, none of them the README's: the demo never touches data it did not create.
DEMO_GUILD = "1187426354298122240"
DEMO_VOICE = ("1187426354298122245", "1187426354298122246")
DEMO_USER = "1187426354298122250"
DEMO_BOT = "1187426354298122255"
DEMO_SOURCE = "1187426354298122260"
DEMO_TARGET = "1187426354298122265"
DEMO_CREATOR = "1187426354298122270"
DEMO_TEMPLATE = "DemoTmpl2026"
DEMO_BACKUP = "d3m0b4ckup"
DEMO_STATUSES = (
    "starting",
    "deleting roles",
    "loading roles",
    "deleting channels",
    "loading channels",
    "loading bans",
    "loading settings",
)
"""The status steps of a backup load, in the original's order."""

# (source, identifier, title, author, seconds); the first five are the Elixir seed's samples.
_DEMO_CATALOG = [
    ("youtube", "_n1o4D6G_XE", "Andrés Cepeda - Magia ft. Sebastián Yatra", "Andrés Cepeda", 203),
    ("youtube", "1_zgKRBrT0Y", "Pedro Capó, Farruko - Calma (Remix - Official Video)", "Pedro Capó", 238),
    ("youtube", "-zgDXIi1uYw", "Bacilos - Caraluna (Official Music Video)", "Warner Música", 269),
    ("spotify", "7kDUspsoYfLkWnZR7qwHZl", "my ex's best friend (with blackbear)", "mgk", 139),
    ("spotify", "6g2BiiVQqY5v1S4HIrM54F", "Tuyo (Narcos Theme)", "Rodrigo Amarante", 151),
    ("youtube", "kJQP7kiw5Fk", "Luis Fonsi - Despacito ft. Daddy Yankee", "Luis Fonsi", 282),
    ("youtube", "JGwWNGJdvx8", "Ed Sheeran - Shape of You", "Ed Sheeran", 263),
    ("youtube", "fJ9rUzIMcZQ", "Queen - Bohemian Rhapsody", "Queen Official", 359),
    ("youtube", "hTWKbfoikeg", "Nirvana - Smells Like Teen Spirit", "Nirvana", 301),
    ("youtube", "dQw4w9WgXcQ", "Rick Astley - Never Gonna Give You Up", "Rick Astley", 212),
    ("youtube", "9bZkp7q19f0", "PSY - Gangnam Style", "officialpsy", 252),
    ("youtube", "OPf0YbXqDm0", "Mark Ronson - Uptown Funk ft. Bruno Mars", "Mark Ronson", 270),
    ("youtube", "CevxZvSJLk8", "Katy Perry - Roar", "Katy Perry", 269),
    ("youtube", "YQHsXMglC9A", "Adele - Hello", "Adele", 366),
    ("youtube", "60ItHLz5WEA", "Alan Walker - Faded", "Alan Walker", 212),
    ("spotify", "0VjIjW4GlUZAMYd2vXMi3b", "Blinding Lights", "The Weeknd", 200),
    ("spotify", "7qiZfU4dY1lWllzX7mPBI3", "Shape of You", "Ed Sheeran", 233),
    ("spotify", "3n3Ppam7vgaVa1iaRUc9Lp", "Mr. Brightside", "The Killers", 222),
    ("spotify", "4uLU6hMCjMI75M1A2tKUQC", "Never Gonna Give You Up", "Rick Astley", 213),
    ("spotify", "1301WleyT98MSxVHPZCA6M", "Piano Man", "Billy Joel", 338),
    ("spotify", "5ghIJDpPoe3CfHMGu71E6T", "Smells Like Teen Spirit", "Nirvana", 301),
    ("spotify", "2takcwOaAZWiXQijPHIx7B", "Time", "Pink Floyd", 413),
    ("spotify", "40riOy7x9W7GXjyGp4pjAv", "Hotel California", "Eagles", 391),
    ("soundcloud", "lofi-girl/snowman", "Snowman", "Lofi Girl", 142),
    ("soundcloud", "lofi-girl/coffee-break", "Coffee Break", "Lofi Girl", 128),
    ("soundcloud", "lofi-girl/rainy-window", "Rainy Window", "Lofi Girl", 156),
    ("soundcloud", "chillhop/sunday-morning", "Sunday Morning", "Chillhop Music", 174),
    ("soundcloud", "chillhop/late-night-drive", "Late Night Drive", "Chillhop Music", 201),
    ("youtube", "qLong10Hour", "Ten Hours of Gentle Rain", "Nature Sounds", 36000),
    ("youtube", "jfKfPfyJRdk", "lofi hip hop radio - beats to relax/study to", "Lofi Girl", 0),
]
_DEMO_PLAYLISTS = [
    Playlist(
        source="youtube",
        identifier="PLlatinoHits",
        name="Latino Hits",
        tracks=["_n1o4D6G_XE", "1_zgKRBrT0Y", "-zgDXIi1uYw", "kJQP7kiw5Fk"],
    ),
    Playlist(
        source="spotify",
        identifier="37i9dQZF1DXcBWIGoYBM5M",
        name="Classic Rock",
        tracks=[
            "3n3Ppam7vgaVa1iaRUc9Lp",
            "1301WleyT98MSxVHPZCA6M",
            "2takcwOaAZWiXQijPHIx7B",
            "40riOy7x9W7GXjyGp4pjAv",
        ],
    ),
    Playlist(
        source="soundcloud",
        identifier="lofi-girl/sets/study-session",
        name="Study Session",
        tracks=["lofi-girl/snowman", "lofi-girl/coffee-break", "lofi-girl/rainy-window"],
    ),
]
_DEMO_URIS = {
    "youtube": "https://www.youtube.com/watch?v={}",
    "spotify": "https://open.spotify.com/track/{}",
    "soundcloud": "https://soundcloud.com/{}",
}


def demo_tracks() -> list[Track]:
    return [
        Track(
            source=source,
            identifier=identifier,
            title=title,
            author=author,
            length=seconds * 1000,
            uri=_DEMO_URIS[source].format(identifier),
            thumbnail=f"https://i.ytimg.com/vi/{identifier}/default.jpg" if source == "youtube" else None,
            is_stream=seconds == 0,
        )
        for source, identifier, title, author, seconds in _DEMO_CATALOG
    ]


def _demo_ids(load: int) -> dict[str, str]:
    """Old role and channel ids of the demo source guild, and new ones for this load."""
    base = int(DEMO_SOURCE)
    fresh = (1_700_000_000_000 - 1_420_070_400_000) << 22  # a snowflake of November 2023
    return {str(base + 1000 + i): str(fresh + 1000 * load + i) for i in range(12)}


async def seed_demo(host: Host, base_url: str, admin_token: str | None) -> str:
    """Create (or refresh) the demo data and return the banner that shows how to use it.

    Seeding is idempotent and touches only what the demo made: its own ids, and catalog tracks
    and playlists only where the catalog has none by that source and identifier. The demo bot's
    token and the demo key are rotated on every start, since only their hashes are kept and the
    banner must show working ones.
    """
    await host.put_guild(DEMO_GUILD, "Xenon Elixir Demo", DEMO_VOICE)
    tracks = [t for t in demo_tracks() if await host.get_track(t.source, t.identifier) is None]
    playlists = [p for p in _DEMO_PLAYLISTS if not await host.get_playlist_tracks(p.source, p.identifier)]
    await host.import_catalog(tracks, playlists)
    if await host.get_template(DEMO_TEMPLATE) is None:
        await host.create_template("Demo Community", DEMO_SOURCE, DEMO_CREATOR, template_id=DEMO_TEMPLATE)
    if await host.get_backup(DEMO_BACKUP) is None:
        await host.create_backup(DEMO_SOURCE, DEMO_CREATOR, backup_id=DEMO_BACKUP)
    await host.merge_ids(DEMO_SOURCE, DEMO_TARGET, _demo_ids(0))
    token = await host.grant_bot(DEMO_BOT, "Demo Bot")
    key = await host.create_key(DEMO_GUILD, DEMO_USER, rotate=True)

    e, x = f"{base_url}/api/v1/{DEMO_GUILD}", f"{base_url}/api"
    auth = f'-H "Authorization: Bearer {key}"'
    curl = "curl -sS --fail-with-body"
    user = f'"user": "{DEMO_USER}"'
    lines = [
        "xenon_elixir demo",
        f"  Elixir key ({DEMO_GUILD} / user {DEMO_USER}): {key}",
        f"  Xenon bot token ({DEMO_BOT}): {token}",
        *([f"  Admin token: {admin_token}"] if admin_token else []),
        f"  WebSocket: {x.replace('http', 'ws', 1)}/loaders/ws (a backup load is simulated every minute)",
        f"  Health: {base_url}/health   API docs: {base_url}/schema   Metrics: {base_url}/metrics",
        f"  Now playing (open it, then join and play below): {base_url}/player/{DEMO_GUILD}",
        f"  The player, live: {e.replace('http', 'ws', 1)}/player",
        "",
        "# Elixir Music API",
        f"""{curl} -X POST {e}/join {auth} -d '{{{user}, "channel": "{DEMO_VOICE[0]}"}}'""",
        f"""{curl} -X POST {e}/play {auth} -d '{{{user}, "query": "https://www.youtube.com/playlist?list=PLlatinoHits"}}'""",
        f"""{curl} -X POST {e}/play {auth} -d '{{{user}, "query": "tuyo narcos"}}'""",
        f"{curl} {e}/nowplaying",
        f"{curl} {e}/queue",
        f"""{curl} -X POST {e}/volume {auth} -d '{{{user}, "volume": 45}}'""",
        f"""{curl} -X POST {e}/pause {auth} -d '{{{user}}}'""",
        f"""{curl} -X POST {e}/resume {auth} -d '{{{user}}}'""",
        f"""{curl} -X POST {e}/skip {auth} -d '{{{user}}}'""",
        "",
        "# Xenon partner API",
        f'{curl} "{x}/mappers?target={DEMO_TARGET}&source={DEMO_SOURCE}" -H "Authorization: {token}"',
        f'{curl} "{x}/mappers?target={DEMO_TARGET}&backup={DEMO_BACKUP}" -H "Authorization: {token}"',
        f"""{curl} -X POST {x}/templates/{DEMO_TEMPLATE}/bots -H "Authorization: {token}" """
        f"""-d '{{"user": "{DEMO_CREATOR}"}}'""",
        f"{curl} {x}/templates/{DEMO_TEMPLATE}",
    ]
    if admin_token:
        lines += [
            "",
            "# Admin API",
            f"""{curl} -X PUT {base_url}/admin/guilds/{DEMO_GUILD} -H "Authorization: Bearer {admin_token}" """
            f"""-d '{{"name": "Xenon Elixir Demo", "voice_channels": ["{DEMO_VOICE[0]}", "{DEMO_VOICE[1]}"]}}'""",
        ]
    return "\n".join(lines) + "\n"


async def _simulate_load(host: Host, load: int, interval: float) -> None:
    await host.start_loader(DEMO_TARGET, "backup", DEMO_SOURCE, backup_id=DEMO_BACKUP, user_id=DEMO_CREATOR)
    for status in DEMO_STATUSES:
        await host.loader_status(DEMO_TARGET, status)
        await asyncio.sleep(min(1.5, interval / 20))
    await host.loader_ids(DEMO_TARGET, _demo_ids(load))
    await host.loader_done(DEMO_TARGET, ok=True)


async def simulate_loads(host: Host, interval: float, first_after: float = 3.0) -> None:
    """A backup load into the demo target every ``interval`` seconds, through the real loader
    path: start, the status steps, ids, done. A load already running on the target is left be."""
    await asyncio.sleep(first_after)
    load = 0
    while True:
        load += 1
        if not await host.loader_running(DEMO_TARGET):
            try:
                await _simulate_load(host, load, interval)
            except ApiError as exc:  # an operator finished or replaced the demo's loader mid-load
                log.warning(
                    "demo load %d ended early (%s); the next starts in %g s", load, exc.message, interval
                )
            except Exception:
                log.exception("demo load %d failed; the next starts in %g s", load, interval)
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------
# 26. Sandbox: the stand-in a bot developer tests against (XE_SANDBOX=1)
# ---------------------------------------------------------------------------

# Fixed, documented credentials: a bot's test configuration holds them across restarts. Only
# their hashes are stored, as for any secret; they are published, so never use them elsewhere.
SANDBOX_ADMIN_TOKEN = "xe-sandbox-admin-token"
SANDBOX_BOT_TOKEN = "xe-sandbox-bot-token"
SANDBOX_KEY = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
SANDBOX_HELPER = b"x-xenon-elixir-sandbox-helper"
"""The header of the requests the Python helpers make to set a scene (``xe.play``,
``xe.end_track``): the sandbox keeps them out of the record, and no fault meets them."""

_SANDBOX_TABLES = (  # children first: no foreign key is ever left dangling
    "queue",
    "players",
    "voice_channels",
    "guilds",
    "elixir_keys",
    "template_bots",
    "templates",
    "bots",
    "backups",
    "loader_ids",
    "loaders",
    "mapper_ids",
    "mapper_loaders",
)
_SANDBOX_WIPED = tuple(f"DELETE FROM {table}" for table in _SANDBOX_TABLES)
"""What a fresh sandbox empties. The catalog is kept (the demo's tracks are restored), and so are
the loader event log and its numbers: a ``seq`` never goes back, as on a real server."""

_SANDBOX_REFUSES = (
    f"SELECT NOT EXISTS (SELECT 1 FROM kept WHERE name = '{SANDBOX_MARK}') AND ("
    + " OR ".join(
        f"EXISTS (SELECT 1 FROM {table})"
        for table in (*_SANDBOX_TABLES, "tracks", "playlists", "events", "player_seqs", "kept")
    )
    + ")"
)
"""Whether a database holds data that no sandbox made: a sandbox empties only a database that
is empty or marked (:data:`SANDBOX_MARK`). A user who pointed ``XE_DB`` at their real server's
database and ran their bot's tests lost it before this guard."""

_RECORDED = 1000
"""Requests the record keeps (the oldest go first)."""

_RECORDED_BODY = 64 * 1024
"""Bytes of a request body the record keeps."""

_ARMED = 1000
"""Faults that may be armed at once (spent ones count until removed)."""

_EMPTY_STATUSES = (204, 304)
"""Answers that have no body (HTTP says so): a fault with one of them sends none."""

_SENDABLE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))
"""The close codes below 3000 a close frame may carry (RFC 6455 §7.4 and the IANA registry)."""


class _SandboxTimer:
    __slots__ = ("callback", "due", "done", "handle")

    def __init__(self, due: float, callback: Callable[[], object]) -> None:
        self.due = due
        self.callback = callback
        self.done = False
        self.handle: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        self.done = True
        if self.handle is not None:
            self.handle.cancel()

    def fire(self) -> None:
        if not self.done:
            self.cancel()
            self.callback()


class SandboxClock:
    """The sandbox's clocks and timers (``Config.clock``, ``monotonic``, ``timers``): real time
    plus what tests added with :meth:`advance`. A timer fires when real time reaches it or when
    an advance passes it, whichever comes first, so a sandbox left alone behaves like a server."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._due: list[tuple[float, int, _SandboxTimer]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable:
        timer = _SandboxTimer(self.monotonic() + max(delay, 0.0), callback)
        timer.handle = asyncio.get_running_loop().call_later(max(delay, 0.0), timer.fire)
        heapq.heappush(self._due, (timer.due, next(self._order), timer))
        if len(self._due) > 4096:  # timers real time fired or that were cancelled: let them go
            self._due = [entry for entry in self._due if not entry[2].done]
            heapq.heapify(self._due)
        return timer

    async def advance(self, seconds: float) -> None:
        """Move time ``seconds`` on. Timers fire in order, each at its own time, and the work a
        timer starts (a track's end advancing the queue) finishes before the next fires: an
        advance past the ends of three tracks plays the fourth."""
        target = self.monotonic() + seconds
        while self._due and self._due[0][0] <= target:
            due, _, timer = heapq.heappop(self._due)
            if timer.done:
                continue
            self.offset += max(0.0, due - self.monotonic())
            before = asyncio.all_tasks()
            timer.fire()
            started = asyncio.all_tasks() - before
            if started:
                await asyncio.wait(started, timeout=10.0)
        self.offset += max(0.0, target - self.monotonic())

    def restart(self) -> None:
        """Back to real time, every timer cancelled: a reset, between the services it closed
        (which set those timers, and read the moved time) and the fresh ones it opens."""
        for _, _, timer in self._due:
            timer.cancel()
        self._due.clear()
        self.offset = 0.0


def sandbox_config(config: Config) -> Config:
    """``config`` with the sandbox's fixed settings wherever it holds the default: a setting
    given explicitly (``XE_ADMIN_TOKEN``, ``XE_DB``, ``XE_RATE_LIMITS``, a clock...) wins. The
    default database is a throwaway file, removed when the sandbox stops."""
    defaults, fixed = Config(), SandboxClock()
    chosen: dict[str, Any] = {}
    if config.db == defaults.db:
        name = f"xenon_elixir_sandbox_{os.getpid()}_{secrets.token_hex(4)}.db"
        chosen["db"] = os.path.join(tempfile.gettempdir(), name)
    if config.admin_token is None:
        chosen["admin_token"] = SANDBOX_ADMIN_TOKEN
    if config.clock is defaults.clock and config.monotonic is defaults.monotonic and config.timers is None:
        chosen.update(clock=fixed.clock, monotonic=fixed.monotonic, timers=fixed)
    return dataclasses.replace(config, **chosen)


async def refuse_unmade(config: Config) -> None:
    """Refuse, in one line (:class:`ConfigError`), a database that holds data no sandbox made:
    the sandbox empties its database on start and on every reset (:data:`_SANDBOX_REFUSES`).
    Asked before the services open, so a refused database is not touched at all."""
    database = (await open_stores(config)).database
    try:
        refused = await database.value(_SANDBOX_REFUSES)
    finally:
        await database.close()
    if refused:
        raise ConfigError(
            f"the sandbox empties its database, and {masked_url(config.db)} holds data no sandbox "
            "made: it was left as it is. Give the sandbox a database of its own: leave --db and XE_DB "
            "unset (a throwaway file), or name a new file or an empty database (the sandbox marks it "
            "as its own)"
        )


_MATCH_SAYS = (
    '"METHOD /path/{name}" as this document spells the route ("GET /api/mappers", '
    '"POST /api/v1/{guild_id}/play"); a stream\'s handshake, which the document leaves out, is its '
    'GET: "GET /api/loaders/ws", "GET /api/v1/{guild_id}/player". Or a rate-limit group (mappers, '
    'templates, loaders_ws, auth_failures: every API route), or "*" (every route of both APIs).'
)
_CLOSE_SAYS = (
    "The close code, one a close frame may carry (1000-1003, 1007-1014, 3000-4999); null, with "
    "stall_ms given alone: not closed. With stall_ms too: the frames are held, then the stream closed."
)


class RequestFaultIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A fault on requests: an answer, a delay, or a dropped connection."""

    match: Annotated[str, msgspec.Meta(min_length=1, max_length=300, description=_MATCH_SAYS)]
    credential: str | None = None
    """Only requests made with this bot token or Elixir key (answered as ``"***"``)."""
    times: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    status: Annotated[int, msgspec.Meta(ge=200, le=599)] | None = 429
    """The answer's status; ``null`` (``delay_ms`` given alone): the real answer, delayed."""
    retry_after_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)] = 5000
    body: Any = None
    """The answer's JSON body; ``null``: the API's own error body for the status (a 2xx needs a
    body, a 204 or a 304 has none)."""
    delay_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 0
    drop: bool = False
    """Close the connection without an answer (after ``delay_ms``)."""


class StreamFaultIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A fault on the next matching stream(s): closed with a code, its frames stalled, or both
    (stalled, then closed)."""

    stream: Literal["loaders", "player"]
    close: Annotated[int, msgspec.Meta(ge=1000, le=4999, description=_CLOSE_SAYS)] | None = 1013
    after: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    """Frames sent before the fault acts."""
    times: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    stall_ms: Annotated[int, msgspec.Meta(ge=1, le=600_000)] | None = None
    """Hold the stream's frames this long (then close, when ``close`` is given too)."""


class RequestFault(RequestFaultIn, kw_only=True):
    """An armed request fault: its fields, with the ``id`` the server gave and the times it
    ``fired`` so far."""

    id: str = ""
    fired: int = 0


class StreamFault(StreamFaultIn, kw_only=True):
    """An armed stream fault: its fields, with its ``id`` and the times it ``fired``."""

    id: str = ""
    fired: int = 0


class FaultList(msgspec.Struct):
    faults: Annotated[
        list[Any],
        Parameter(
            schema_extra={
                "items": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/RequestFault"},
                        {"$ref": "#/components/schemas/StreamFault"},
                    ]
                }
            }
        ),
    ]
    """Each a :class:`RequestFault` or a :class:`StreamFault`, in arming order (``Any`` here: a
    Struct holding an untagged union of two Structs is more than msgspec inspects; arm_fault's
    answer, the same union, puts both in the document's components)."""


class ClockIn(msgspec.Struct, forbid_unknown_fields=True):
    advance_ms: Annotated[int, msgspec.Meta(ge=0, le=10 * 31_536_000_000)]


class ClockOut(msgspec.Struct):
    now_ms: int


class RecordedRequest(msgspec.Struct):
    method: str
    path: str
    query: str
    status: int | None
    """``null``: the connection was dropped (a fault) or the client left before an answer."""
    body: Any = None


class RecordedRequests(msgspec.Struct):
    requests: list[RecordedRequest]


def parse_fault(raw: bytes) -> RequestFault | StreamFault:
    """A fault as ``POST /admin/faults`` takes it; a bad one is a 400 naming the field."""
    given = decode_body(raw, dict[str, Any])
    for field in ("id", "fired"):
        if field in given:
            raise ApiError(400, f"{field} is the server's to give, not a field of a new fault")
    kind: type[RequestFault | StreamFault] = StreamFault if "stream" in given else RequestFault
    try:
        fault = msgspec.convert(given, kind)
    except msgspec.ValidationError as exc:
        raise ApiError(400, str(exc)) from None
    if isinstance(fault, StreamFault):
        if "stall_ms" in given and "close" not in given:
            fault.close = None
        if fault.close is None and fault.stall_ms is None:
            raise ApiError(400, "a stream fault needs close or stall_ms - at `$.close`")
        if fault.close is not None and fault.close < 3000 and fault.close not in _SENDABLE_CODES:
            raise ApiError(  # 1005, 1006 and 1015 are only ever reported; the others are reserved
                400,
                f"{fault.close} cannot be sent in a close frame: use 1000-1003, 1007-1014 or 3000-4999 "
                "- at `$.close`",
            )
    elif "delay_ms" in given and not given.keys() & {"status", "body", "drop", "retry_after_ms"}:
        fault.status = None
    elif fault.drop or fault.status is None:
        pass
    elif fault.status in _EMPTY_STATUSES and fault.body is not None:
        raise ApiError(400, f"a {fault.status} answer has no body - at `$.body`")
    elif fault.status < 300 and fault.status not in _EMPTY_STATUSES and fault.body is None:
        raise ApiError(  # an error body would stand in for what a success answers
            400, f"a {fault.status} fault answers its body: give one ({{}} at least) - at `$.body`"
        )
    return fault


def _template_pattern(template: str) -> re.Pattern[str]:
    """The paths a route template (``/api/v1/{guild_id}/play``) answers, a final ``/`` allowed."""
    return re.compile(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)) + "/?")


class Faults:
    """The armed faults, in arming order; each fires ``times`` times, then stays listed, spent."""

    def __init__(self, templates: Mapping[str, str]) -> None:
        self.templates = templates
        """``"METHOD /template"`` -> its rate-limit group (or ``""``), for every API route."""
        self.streams: Mapping[str, str] = {}
        """The streams' handshakes, ``"GET /template"`` -> ``"loaders"`` or ``"player"``."""
        self.armed: dict[str, RequestFault | StreamFault] = {}
        self._credentials: dict[str, str] = {}  # fault id -> the credential's digest
        self._ids = itertools.count(1)

    def arm(self, fault: RequestFault | StreamFault) -> RequestFault | StreamFault:
        if len(self.armed) >= _ARMED:
            raise ApiError(409, f"{_ARMED} faults are armed already: remove some (DELETE /admin/faults)")
        secret = None
        if isinstance(fault, RequestFault):
            known = fault.match == "*" or fault.match in RATE_LIMITS or fault.match in self.templates
            if not known:
                raise ApiError(400, self._unknown(fault.match))
            secret, fault.credential = fault.credential, None if fault.credential is None else "***"
        fault.id = f"f{next(self._ids)}"
        if secret is not None:  # kept as its digest only, like every secret
            self._credentials[fault.id] = digest(secret)
        self.armed[fault.id] = fault
        return fault

    def _unknown(self, match: str) -> str:
        """The 400 of a ``match`` that names nothing: how a route is spelt, the streams' spellings
        (which the document leaves out), and what it likely meant: the routes its path fits (ids
        in place of ``{names}``, the method left out or in lower case), else the nearest names."""
        word, _, rest = match.strip().partition(" ")
        method, path = (word.upper(), rest.strip()) if rest else ("", word)
        fits = [
            route
            for route in self.templates
            if (not method or route.startswith(method + " "))
            and _template_pattern(route.partition(" ")[2]).fullmatch(path.split("?")[0])
        ]
        meant = fits or difflib.get_close_matches(match, [*self.templates, *RATE_LIMITS], n=2, cutoff=0.7)
        streams = " and ".join(f'"{route}"' for route in self.streams)
        return (
            f"match: {match[:80]!r} is neither an API route, a rate-limit group ({', '.join(RATE_LIMITS)}) "
            f'nor "*": a route is spelt "METHOD /path/{{name}}" as /schema spells it, a stream\'s '
            f"handshake as its GET ({streams})"
            + (f"; did you mean {' or '.join(repr(name) for name in meant)}?" if meant else "")
        )

    def request(self, route: str, credential: str) -> RequestFault | None:
        """The first armed request fault this request (``"METHOD /template"``) meets, taken."""
        group = self.templates.get(route, "")
        for fault in self.armed.values():
            if not isinstance(fault, RequestFault) or fault.fired >= fault.times:
                continue
            if fault.match not in ("*", "auth_failures", route, group):  # auth_failures: every route
                continue
            wanted = self._credentials.get(fault.id)
            if wanted is not None and not hmac.compare_digest(wanted, digest(credential)):
                continue
            fault.fired += 1
            return fault
        return None

    def stream(self, kind: str) -> StreamFault | None:
        """The first armed fault of this stream, claimed by the stream now opening."""
        for fault in self.armed.values():
            if isinstance(fault, StreamFault) and fault.stream == kind and fault.fired < fault.times:
                fault.fired += 1
                return fault
        return None

    def remove(self, fault_id: str) -> bool:
        self._credentials.pop(fault_id, None)
        return self.armed.pop(fault_id, None) is not None

    def clear(self) -> None:
        self.armed.clear()
        self._credentials.clear()


def _bearer(scope: Scope) -> str:
    """The credential a request carries: its ``Authorization`` value without a scheme word."""
    word, _, rest = (header(scope, b"authorization") or "").strip().partition(" ")
    return rest.strip() if rest and word.lower() in ("bearer", "bot") else word


class SandboxRoutes:
    """The API routes a fault can name and the record keeps, learnt from the built app."""

    def __init__(self, app: Litestar, config: Config) -> None:
        x = config.xenon_prefix.rstrip("/")
        groups = {
            f"GET {x}/mappers": "mappers",
            f"POST {x}/templates/{{template_id}}/bots": "templates",
            f"DELETE {x}/templates/{{template_id}}/bots": "templates",
            f"GET {x}/loaders/ws": "loaders_ws",
        }
        prefixes = (config.elixir_prefix.rstrip("/") + "/", x + "/")
        self.templates: dict[str, str] = {}
        """``"METHOD /template"`` -> its rate-limit group, or ``""``."""
        self._paths: list[tuple[re.Pattern[str], str, str]] = []  # pattern, template, its API
        for route in app.routes:
            template = route.path_format
            if not template.startswith(prefixes):
                continue
            methods = getattr(route, "methods", set()) - {"HEAD", "OPTIONS"} or {"GET"}  # a stream: GET
            for method in sorted(methods):
                self.templates[f"{method} {template}"] = groups.get(f"{method} {template}", "")
            api = "elixir" if template.startswith(prefixes[0]) else "xenon"
            pattern = _template_pattern(template)
            if all(template != known for _, known, _ in self._paths):
                self._paths.append((pattern, template, api))
        self._paths.sort(key=lambda entry: -len(entry[1]))  # /api/v1/... before /api/...
        self.streams = {f"GET {x}/loaders/ws": "loaders"}
        self.streams |= {
            f"GET {template}": "player"
            for _, template, api in self._paths
            if api == "elixir" and template.endswith("/player")
        }

    def of(self, path: str) -> tuple[str, str] | None:
        """The route template of a request's path and its API, or ``None`` (not an API route)."""
        for pattern, template, api in self._paths:
            if pattern.fullmatch(path):
                return template, api
        return None


async def fresh_sandbox(services: Services) -> None:
    """Empty the sandbox's data (:data:`_SANDBOX_WIPED`) and seed the demo under the fixed
    credentials."""
    services.music.track_ends.poll = None  # one process: every change arms its own timer
    stores = services.stores

    async def wipe(tx: Transaction) -> None:
        for statement in _SANDBOX_WIPED:
            await tx.run(statement)
        await tx.run(stores.kept.upsert, SANDBOX_MARK, '"a sandbox empties this database"')

    await stores.database.write(wipe, forgets=[("keys",), ("bots",)])
    await seed_demo(Host(services), "", None)
    now = services.config.clock()

    async def fixed(tx: Transaction) -> None:
        await tx.run(stores.partners.bot_grant, DEMO_BOT, "Demo Bot", digest(SANDBOX_BOT_TOKEN), now)
        await tx.run(stores.keys.delete, DEMO_GUILD, DEMO_USER)
        await tx.run(stores.keys.insert, digest(SANDBOX_KEY), DEMO_GUILD, DEMO_USER, now)

    await stores.database.write(fixed, forgets=[("keys",), ("bots",)])


class SandboxState:
    """One sandbox app's faults, record and clock, and the services it restarts on a reset."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.clock = config.timers if isinstance(config.timers, SandboxClock) else None
        """The clock tests move (``None`` when the embedding program gave its own)."""
        self.faults = Faults({})
        self.requests: deque[RecordedRequest] = deque(maxlen=_RECORDED)
        self.routes: SandboxRoutes | None = None
        self.streams: set[SandboxStream] = set()
        """The open streams, closed with 1012 by a reset."""
        self._restart = self._ready = None  # type: asyncio.Event | None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def learn(self, app: Litestar) -> None:
        self.routes = SandboxRoutes(app, self.config)
        self.faults.templates, self.faults.streams = self.routes.templates, self.routes.streams

    @contextlib.asynccontextmanager
    async def running(
        self,
        app: Litestar,
        serving: Callable[[Litestar, Config], contextlib.AbstractAsyncContextManager[None]],
    ) -> AsyncIterator[None]:
        """The app's lifespan in sandbox mode: its services (``serving``), opened fresh by one
        task that a :meth:`reset` asks to close and open them again (one task enters and leaves
        them, as a lifespan does)."""
        await refuse_unmade(self.config)
        self._restart, self._ready, self._stopping = asyncio.Event(), asyncio.Event(), False
        self._supervisor = asyncio.create_task(self._supervise(app, serving))
        await self._until_ready()
        try:
            yield
        finally:
            self._stopping = True
            self._restart.set()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            if not is_postgres(self.config.db) and os.path.basename(self.config.db).startswith(
                "xenon_elixir_sandbox_"
            ):  # the throwaway file sandbox_config chose
                for suffix in ("", "-wal", "-shm", ".server"):
                    with contextlib.suppress(OSError):
                        os.remove(self.config.db + suffix)

    async def _supervise(
        self,
        app: Litestar,
        serving: Callable[[Litestar, Config], contextlib.AbstractAsyncContextManager[None]],
    ) -> None:
        assert self._restart is not None and self._ready is not None
        while not self._stopping:
            async with serving(app, self.config):
                await fresh_sandbox(app.state.xe)
                self._ready.set()
                await self._restart.wait()
            self._restart.clear()
            if self.clock is not None:
                self.clock.restart()

    async def _until_ready(self) -> None:
        assert self._ready is not None and self._supervisor is not None
        ready = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait({ready, self._supervisor}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            self._supervisor.result()  # the error that stopped it
            raise Unavailable("the sandbox stopped")

    async def settled(self) -> None:
        """Return once no reset is under way: a request that comes during one waits for the new
        services instead of meeting the closed ones."""
        if self._ready is not None and not self._ready.is_set():
            await self._ready.wait()

    async def reset(self) -> None:
        """Fresh state: no fault, an empty record, the clock at real time, the demo data alone
        under the fixed credentials, new services (limits, streams, timers, remembered answers)."""
        assert self._restart is not None and self._ready is not None
        self.faults.clear()
        for stream in list(self.streams):  # their services are going: the clients reconnect
            await stream.close(1012)
        self.requests.clear()
        self._ready.clear()
        self._restart.set()
        await self._until_ready()


def sandbox_banner(base_url: str, config: Config) -> str:
    """What ``xenon-elixir sandbox`` prints: where it is and its credentials."""
    admin = "(XE_ADMIN_TOKEN)" if config.admin_token != SANDBOX_ADMIN_TOKEN else SANDBOX_ADMIN_TOKEN
    return "\n".join(
        [
            f"xenon_elixir sandbox on {base_url} (database {masked_url(config.db)}; emptied on start and "
            "reset)",
            f"  Xenon bot {DEMO_BOT} token: {SANDBOX_BOT_TOKEN}",
            f"  Elixir key of guild {DEMO_GUILD} / user {DEMO_USER}: {SANDBOX_KEY}",
            f"  Admin token: {admin}",
            f"  Voice channels {', '.join(DEMO_VOICE)}; template {DEMO_TEMPLATE}; backup {DEMO_BACKUP} "
            f"of source {DEMO_SOURCE} loaded into target {DEMO_TARGET}",
            f"  Faults, clock, record, reset: {config.admin_prefix}/faults, /clock, /requests, /reset "
            f"(see {base_url}/schema, tag Sandbox)",
        ]
    )


_FAULT_MESSAGES = {
    429: RATE_LIMITED,
    503: "Service unavailable: try again shortly.",
}


def _fault_message(status: int, api: str) -> str:
    """The message of a fault's answer without a body: the API's own where it has one, else the
    status's reason phrase (any status from 200 to 599 may be asked for)."""
    if status == 401:
        return NOT_AUTHORIZED if api == "elixir" else "Unauthorized"
    if status in _FAULT_MESSAGES:
        return _FAULT_MESSAGES[status]
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _dropped(send: Send) -> None:
    """Close the connection without an answer: uvicorn's ``send`` belongs to the connection,
    whose transport is aborted (a reset, as a crashed server or a proxy gives)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:  # another server: an exception is the nearest thing
        raise ConnectionAbortedError("dropped by a sandbox fault")
    transport.abort()
    for _ in range(3):  # the server hears of the loss and sends nothing for us
        await asyncio.sleep(0)


def _denial(send: Send) -> Send:
    """``send`` for an HTTP answer to a WebSocket handshake (the ASGI denial-response extension)."""

    async def denied(message: ASGIMessage) -> None:
        await send(
            cast(ASGIMessage, {**message, "type": message["type"].replace("http.", "websocket.http.", 1)})
        )

    return denied


class SandboxStream:
    """One stream through the sandbox: its ``receive`` and ``send`` under its ``fault`` (after
    ``after`` frames, its frames held ``stall_ms``, then, with ``close``, the stream closed with
    that code), and :meth:`close` for a reset (1012: the service restarts). Once closed, the app
    hears a disconnect and what it still sends goes nowhere."""

    def __init__(
        self, receive: Receive, send: Send, fault: StreamFault | None, entry: RecordedRequest
    ) -> None:
        self._receive = receive
        self._send = send
        self.fault = fault
        self.entry = entry
        self.sent = 0
        self.stalled = False
        self.code = 1000
        self.closed = asyncio.Event()

    async def close(self, code: int) -> None:
        if self.closed.is_set():
            return
        self.code = code
        self.closed.set()
        if self.entry.status == 101:  # accepted: a close frame; a handshake under way just ends
            with contextlib.suppress(Exception):  # the client left already
                await self._send({"type": "websocket.close", "code": code, "reason": ""})

    async def send(self, message: ASGIMessage) -> None:
        if self.closed.is_set():
            return
        kind, fault = message["type"], self.fault
        if kind == "websocket.accept":
            self.entry.status = 101
        elif kind == "websocket.http.response.start":
            self.entry.status = cast(Any, message)["status"]
        if fault is not None and kind == "websocket.send" and fault.stall_ms and not self.stalled:
            if self.sent >= fault.after:
                self.stalled = True
                await asyncio.sleep(fault.stall_ms / 1000)
                if fault.close is not None:
                    await self.close(fault.close)
                    return
        await self._send(message)
        self.sent += kind == "websocket.send"
        if fault is None or fault.close is None or fault.stall_ms or self.sent < fault.after:
            return
        if kind == "websocket.send" or (kind == "websocket.accept" and fault.after == 0):
            await self.close(fault.close)

    async def receive(self) -> ReceiveMessage:
        if not self.closed.is_set():
            heard = asyncio.ensure_future(self._receive())
            ended = asyncio.ensure_future(self.closed.wait())
            await asyncio.wait({heard, ended}, return_when=asyncio.FIRST_COMPLETED)
            if heard.done():
                ended.cancel()
                return heard.result()
            heard.cancel()
        return {"type": "websocket.disconnect", "code": self.code}


class RecordMask:
    """What the record keeps of a request: its query (``query`` masks secret-looking values) and
    its body with secret-looking keys (``secret``) and the request's own credential as ``***``."""

    def __init__(self, query: Callable[[str], str], secret: re.Pattern[str]) -> None:
        self.query = query
        self.secret = secret

    def body(self, raw: bytes, credential: str) -> Any:
        if not raw.strip():
            return None
        try:
            return self._masked(msgspec.json.decode(raw), credential)
        except (msgspec.DecodeError, RecursionError):
            text = raw.decode("utf-8", "replace")
            return text.replace(credential, "***") if credential else text

    def _masked(self, value: Any, credential: str) -> Any:
        if isinstance(value, dict):
            return {
                k: "***" if self.secret.search(k) else self._masked(v, credential) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._masked(v, credential) for v in value]
        return "***" if credential and value == credential else value


class SandboxLayer:
    """In front of the app in sandbox mode only: request and stream faults, and the record of
    what the APIs received (with secrets masked: ``mask``).
    An answer a fault gives in the app's place is logged and counted by the app's ``front``
    layer as the app's own are; a request of the sandbox's own helpers (:data:`SANDBOX_HELPER`)
    passes through untouched, neither recorded nor met by a fault."""

    def __init__(self, front: FrontLayer, state: SandboxState, mask: RecordMask) -> None:
        self.app = front
        self.sandbox = state
        self.mask = mask

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        routes = self.sandbox.routes
        if scope["type"] not in ("http", "websocket") or routes is None:
            await self.app(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")
        found = routes.of(path[len(root) :] if root and path.startswith(root) else path)
        if found is None or any(name == SANDBOX_HELPER for name, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        template, api = found
        began = time.perf_counter()
        await self.sandbox.settled()
        method = "GET" if scope["type"] == ScopeType.WEBSOCKET else scope["method"]
        route = f"{'GET' if method == 'HEAD' else method} {template}"
        credential = _bearer(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        entry = RecordedRequest(method, path, self.mask.query(query), None)
        self.sandbox.requests.append(entry)
        fault = self.sandbox.faults.request(route, credential)
        if scope["type"] == ScopeType.WEBSOCKET:
            if fault is not None and (fault.status is not None or fault.drop):
                status, size = await self._refused(scope, receive, send, fault, api, entry)
                self._logged(scope, "WEBSOCKET", status, size, began, template)
                return
            await self._stream(scope, receive, send, route, fault, entry)
            return
        chunks: list[bytes] = []

        async def listen() -> ReceiveMessage:
            message = await receive()
            if message["type"] == "http.request" and sum(map(len, chunks)) < _RECORDED_BODY:
                chunks.append(message.get("body", b""))
            return message

        async def answer(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        try:
            if fault is not None and fault.delay_ms:
                await asyncio.sleep(fault.delay_ms / 1000)
            if fault is None or (fault.status is None and not fault.drop):
                await self.app(scope, listen, answer)
                return
            while (message := await listen())["type"] == "http.request" and message.get("more_body"):
                pass  # the whole request, for the record, before the fault answers
            size = 0
            if fault.drop:
                await _dropped(send)
            else:
                assert fault.status is not None
                entry.status = fault.status
                size = await self._answer(send, fault, fault.status, api, head=method == "HEAD")
            self._logged(scope, method, entry.status or 499, size, began, template)
        finally:
            entry.body = self.mask.body(b"".join(chunks)[:_RECORDED_BODY], credential)

    def _logged(self, scope: Scope, method: str, status: int, size: int, began: float, template: str) -> None:
        """An answer a fault gave, in the access log and the request figures like any other (a
        drop as 499, as the app logs a client that left before its answer)."""
        self.app.meter.measure(cast(Scope, {**scope, "path_template": template}), status, began)
        if self.app.access.enabled():
            self.app.access.write(scope, method, status, size, began)

    async def _answer(
        self, send: Send, fault: RequestFault, status: int, api: str, head: bool = False
    ) -> int:
        """Answer as ``fault`` says; the bytes of body sent."""
        retry = fault.retry_after_ms / 1000
        body = fault.body
        if body is None:
            message = _fault_message(status, api)
            body = error_body(api, message, self.sandbox.config.clock(), retry if status == 429 else None)
        encoded = b"" if status in _EMPTY_STATUSES else msgspec.json.encode(body)
        headers = (
            []
            if status in _EMPTY_STATUSES
            else [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(encoded))]
        )
        if status in (429, 503):
            headers.append((b"retry-after", str(max(1, math.ceil(round(retry, 3)))).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else encoded, "more_body": False})
        return 0 if head else len(encoded)

    async def _stream(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: str,
        fault: RequestFault | None,
        entry: RecordedRequest,
    ) -> None:
        if fault is not None and fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        kind = self.sandbox.routes.streams.get(route) if self.sandbox.routes else None
        stream = SandboxStream(
            receive, send, None if kind is None else self.sandbox.faults.stream(kind), entry
        )
        self.sandbox.streams.add(stream)
        try:
            await self.app(scope, stream.receive, stream.send)
        finally:
            self.sandbox.streams.discard(stream)

    async def _refused(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        fault: RequestFault,
        api: str,
        entry: RecordedRequest,
    ) -> tuple[int, int]:
        """A handshake a request fault answers: a 429 as the real limiter does (accepted, then
        closed with 4029 and the reason), another status as an HTTP denial where the server can
        send one (else accepted and closed with 4000 + the status's hundreds). The status and
        size the access log gives it: 101 for a stream accepted and closed, 499 for a drop."""
        await receive()  # websocket.connect
        if fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.drop:
            await _dropped(send)
            return 499, 0
        assert fault.status is not None
        entry.status = fault.status
        retry = fault.retry_after_ms / 1000
        message = _fault_message(fault.status, api)
        reason = fault.body or error_body(api, message, self.sandbox.config.clock(), retry)
        if fault.status != 429 and "websocket.http.response" in (scope.get("extensions") or {}):
            return fault.status, await self._answer(_denial(send), fault, fault.status, api)
        await send(cast(ASGIMessage, {"type": "websocket.accept"}))
        code = 4029 if fault.status == 429 else 4000 + fault.status // 100
        await send({"type": "websocket.close", "code": code, "reason": msgspec.json.encode(reason).decode()})
        return 101, 0


def sandbox_of(request: ASGIConnection[Any, Any, Any, Any]) -> SandboxState:
    return cast(SandboxState, request.app.state.sandbox)


def _sandbox_route(
    route: Any, path: str, operation_id: str, summary: str, *errors: int, **options: Any
) -> Any:
    """A sandbox route: an admin route, tagged Sandbox, there only in sandbox mode; its
    docstring is its description."""

    def documented(handler: Callable[..., Any]) -> Any:
        described = " ".join((handler.__doc__ or "").split())
        return _admin(
            route,
            path,
            *errors,
            tags=["Sandbox"],
            operation_id=operation_id,
            summary=summary,
            description=described,
            **options,
        )(handler)

    return documented


@_sandbox_route(
    post, "/faults", "arm_fault", "Arm a fault", 409, body=RequestFaultIn | StreamFaultIn, status_code=201
)
async def arm_fault(request: Request) -> RequestFault | StreamFault:
    """A request fault (`match`: "METHOD /path/template" as this document spells it, a rate-limit
    group or "*"; optional `credential`; `times`, `status` (429), `retry_after_ms` (5000), `body`
    (default: the API's own error body), `delay_ms` (alone: the real answer, delayed), `drop`),
    or a stream fault (`stream`: "loaders" or "player"; `close` (1013) after `after` frames, or
    `stall_ms`; `times`). Answers the fault with its `id` and every field's value."""
    return sandbox_of(request).faults.arm(parse_fault(await request.body()))


@_sandbox_route(get, "/faults", "list_faults", "List the faults")
async def list_faults(request: Request) -> FaultList:
    """Every armed fault in arming order, with `fired`: the times it fired so far."""
    return FaultList(list(sandbox_of(request).faults.armed.values()))


@_sandbox_route(delete, "/faults", "clear_faults", "Remove every fault")
async def clear_faults(request: Request) -> Empty:
    """Remove every fault, spent or not."""
    sandbox_of(request).faults.clear()
    return Empty()


@_sandbox_route(delete, "/faults/{fault_id:str}", "remove_fault", "Remove a fault", 404)
async def remove_fault(request: Request, fault_id: Annotated[str, PathParameter()]) -> Empty:
    """Remove one fault by its `id`; an unknown id is a 404."""
    if not sandbox_of(request).faults.remove(fault_id):
        raise ApiError(404, "Unknown fault")
    return Empty()


def _moved_clock(request: Request) -> SandboxClock:
    clock = sandbox_of(request).clock
    if clock is None:
        raise ApiError(409, "The clock is the embedding program's (Config.clock): the sandbox cannot move it")
    return clock


@_sandbox_route(post, "/clock", "advance_clock", "Move the clock on", 409, body=ClockIn)
async def advance_clock(request: Request) -> ClockOut:
    """Move the sandbox's time `advance_ms` on: track ends, positions, status windows and
    rate-limit windows follow; the timers passed fire in order. Answers the new time."""
    clock = _moved_clock(request)
    await clock.advance(decode_body(await request.body(), ClockIn).advance_ms / 1000)
    return ClockOut(int(clock.clock() * 1000))


@_sandbox_route(get, "/clock", "read_clock", "Read the clock", 409)
async def read_clock(request: Request) -> ClockOut:
    """The sandbox's time, epoch milliseconds: real time plus every advance."""
    return ClockOut(int(_moved_clock(request).clock() * 1000))


@_sandbox_route(get, "/requests", "list_requests", "List the requests the APIs received")
async def list_requests(request: Request) -> RecordedRequests:
    """What the Xenon and Elixir routes received, newest last (the last 1,000): method, path,
    query and body with secrets masked (no header is kept), and the status answered."""
    return RecordedRequests(list(sandbox_of(request).requests))


@_sandbox_route(delete, "/requests", "clear_requests", "Empty the record")
async def clear_requests(request: Request) -> Empty:
    """Forget every recorded request."""
    sandbox_of(request).requests.clear()
    return Empty()


@_sandbox_route(post, "/reset", "reset_sandbox", "Start afresh")
async def reset_sandbox(request: Request) -> Empty:
    """Fresh state, in milliseconds: no fault, an empty record, the clock back at real time, the
    demo data alone under the fixed credentials, and new services (rate limits, open streams,
    timers). The loader event log and its numbers carry on: a `seq` never goes back."""
    await sandbox_of(request).reset()
    return Empty()


SANDBOX_ROUTES = [
    arm_fault,
    list_faults,
    clear_faults,
    remove_fault,
    advance_clock,
    read_clock,
    list_requests,
    clear_requests,
    reset_sandbox,
]


# ---------------------------------------------------------------------------
# 27. The now-playing page: GET /player/{guild}
# ---------------------------------------------------------------------------

PLAYER_PAGE_PATH = "/player"

PLAYER_PAGE = r"""<!doctype html>
<html lang="en" data-theme="dark" data-status="connecting" data-paused="false">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Now playing</title>
<style>
:root { --bg: #111318; --card: #1c1f26; --text: #f2f3f5; --muted: #9aa0ab; --accent: #5865f2; --track: #2e323c; }
:root[data-theme="light"] {
  --bg: #f4f5f7;
  --card: #ffffff;
  --text: #16181d;
  --muted: #5d6470;
  --accent: #4752c4;
  --track: #e2e4e9;
}
:root[data-theme="transparent"] {
  --bg: transparent;
  --card: rgba(17, 19, 24, .55);
  --text: #fff;
  --muted: #e3e5e8;
  --track: rgba(255, 255, 255, .25);
}
* { box-sizing: border-box; }
html, body { margin: 0; }
body {
  background: var(--bg);
  color: var(--text);
  font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  padding: 16px;
}
:root[data-theme="transparent"] body { text-shadow: 0 1px 2px rgba(0, 0, 0, .8); }
main { max-width: 720px; margin: 0 auto; }
.card { background: var(--card); border-radius: 14px; padding: 16px; display: flex; gap: 16px; align-items: center; }
#art-box {
  flex: 0 0 96px;
  height: 96px;
  border-radius: 10px;
  overflow: hidden;
  background: var(--track);
  display: grid;
  place-items: center;
}
#art-box img { width: 100%; height: 100%; object-fit: cover; }
#art-box .note { font-size: 40px; color: var(--muted); }
.meta { flex: 1; min-width: 0; }
#title { font-size: 18px; font-weight: 650; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#author, #status, #time, #queue-more { color: var(--muted); }
#author { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.bar { height: 6px; border-radius: 3px; background: var(--track); margin: 10px 0 4px; overflow: hidden; }
#progress { height: 100%; width: 0; background: var(--accent); }
.row { display: flex; justify-content: space-between; gap: 8px; font-size: 13px; }
h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .08em; color: var(--muted); margin: 18px 4px 6px; }
#queue { margin: 0; padding: 0 0 0 28px; }
#queue li { padding: 3px 0; }
#queue .len { color: var(--muted); margin-left: 6px; font-size: 13px; }
form, #controls {
  background: var(--card);
  border-radius: 14px;
  padding: 12px 16px;
  margin-top: 16px;
  display: flex;
  flex-wrap: wrap;
  gap: 8px;
  align-items: center;
}
input[type=password], input[type=text] {
  flex: 1 1 140px;
  min-width: 0;
  padding: 7px 9px;
  border-radius: 8px;
  border: 1px solid var(--track);
  background: transparent;
  color: var(--text);
}
button {
  padding: 7px 14px;
  border-radius: 8px;
  border: 0;
  background: var(--accent);
  color: #fff;
  font: inherit;
  cursor: pointer;
}
button.quiet { background: var(--track); color: var(--text); }
#volume { flex: 1 1 120px; accent-color: var(--accent); }
#error { color: #f04747; min-height: 1.2em; margin: 8px 4px 0; font-size: 13px; }
[hidden] { display: none !important; }
@media (max-width: 420px) {
  .card { flex-direction: column; align-items: stretch; }
  #art-box { width: 100%; height: auto; aspect-ratio: 16 / 9; }
}
</style>
</head>
<body>
<main>
  <section class="card" aria-live="polite">
    <div id="art-box"><img id="artwork" alt="" hidden><span class="note" aria-hidden="true">&#9835;</span></div>
    <div class="meta">
      <div id="title">Nothing playing</div>
      <div id="author"></div>
      <div class="bar"><div id="progress" data-position-ms="0"></div></div>
      <div class="row"><span id="status">Connecting…</span><span id="time"></span></div>
    </div>
  </section>
  <h2 id="next" hidden>Up next</h2>
  <ol id="queue"></ol>
  <div id="queue-more"></div>
  <form id="key-form" autocomplete="off">
    <input id="key" type="password" placeholder="API key" aria-label="API key">
    <input id="user" type="text" inputmode="numeric" placeholder="Your user id" aria-label="User id">
    <button id="save-key" type="submit">Use key</button>
  </form>
  <div id="controls" hidden>
    <button id="pause-resume" type="button">Pause</button>
    <button id="skip" type="button">Skip</button>
    <button id="stop" type="button" class="quiet">Stop</button>
    <input id="volume" type="range" min="0" max="100" value="100" aria-label="Volume">
    <button id="forget-key" type="button" class="quiet">Forget key</button>
  </div>
  <div id="error" role="alert"></div>
</main>
<script>
"use strict";
(() => {
  const API = "{{API}}", GUILD = "{{GUILD}}";
  const root = document.documentElement, $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const theme = params.get("theme");
  if (["dark", "light", "transparent"].includes(theme)) root.dataset.theme = theme;
  const showControls = params.get("controls") !== "0";
  let state = null, received = 0, retry = 1000, dragging = false;

  const clock = (ms) => {
    const s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
    const two = (n) => String(n).padStart(2, "0");
    return (h ? h + ":" + two(m) : two(m)) + ":" + two(s % 60);
  };
  const position = () => {
    const track = state && state.track;
    if (!track) return 0;
    // held while paused, and while the audio node has lost the voice connection (channel null)
    const moved = state.paused || state.channel === null ? 0 : performance.now() - received;
    const at = track.position + moved;
    return track.isStream ? at : Math.min(at, track.duration * 1000);
  };
  const setStatus = (kind, text) => { root.dataset.status = kind; $("status").textContent = text; };

  function render() {
    const track = state.track;
    root.dataset.paused = String(state.paused);
    $("title").textContent = track ? track.title : "Nothing playing";
    $("author").textContent = track ? track.author : "";
    const art = $("artwork"), usable = track && /^https?:\/\//i.test(track.thumbnail || "");
    if (!usable) art.removeAttribute("src");
    else if (art.getAttribute("src") !== track.thumbnail) art.src = track.thumbnail;
    art.hidden = !usable;
    art.nextElementSibling.hidden = usable;
    if (state.channel === null && track) setStatus("voice-lost", "Voice connection lost");
    else if (state.channel === null) setStatus("disconnected", "Not connected");
    else if (!track) setStatus("idle", "Nothing playing");
    else if (state.paused) setStatus("paused", "Paused");
    else setStatus("playing", "Playing");
    $("pause-resume").textContent = state.paused ? "Resume" : "Pause";
    if (!dragging) $("volume").value = state.volume;
    const list = $("queue");
    list.replaceChildren(...state.queue.map((item) => {
      const li = document.createElement("li"), length = document.createElement("span");
      li.textContent = item.title + (item.author ? " — " + item.author : "");
      length.className = "len";
      length.textContent = item.isStream ? "LIVE" : clock(item.duration * 1000);
      li.append(length);
      return li;
    }));
    $("next").hidden = state.queue.length === 0;
    const more = state.queued - state.queue.length;
    $("queue-more").textContent = more > 0 ? "+ " + more + " more" : "";
    tick();
  }

  function tick() {
    const track = state && state.track, bar = $("progress"), at = Math.floor(position());
    bar.dataset.positionMs = String(at);
    const whole = track && !track.isStream && track.duration ? track.duration * 1000 : 0;
    bar.style.width = whole ? (100 * at / whole) + "%" : (track ? "100%" : "0");
    $("time").textContent = track ? clock(at) + " / " + (track.isStream ? "LIVE" : clock(track.duration * 1000)) : "";
  }
  setInterval(() => { if (state) tick(); }, 250);
  $("artwork").addEventListener("error", () => {  // unreachable artwork: the placeholder, never a broken image
    $("artwork").hidden = true;
    $("artwork").nextElementSibling.hidden = false;
  });

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + API + "/" + GUILD + "/player");
    socket.onmessage = (message) => {  // not onopen: a refused stream (4029) opens, then closes
      retry = 1000;
      state = JSON.parse(message.data);
      received = performance.now();
      render();
    };
    socket.onclose = () => {
      setStatus("connecting", "Reconnecting…");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    };
  }

  const saved = () => ({ key: sessionStorage.getItem("xe-key"), user: sessionStorage.getItem("xe-user") });
  function showKeyed() {
    const keyed = showControls && !!saved().key;
    $("controls").hidden = !keyed;
    $("key-form").hidden = !showControls || keyed;
  }
  async function act(action, extra) {
    const { key, user } = saved();
    try {
      const answer = await fetch(API + "/" + GUILD + "/" + action, {
        method: "POST",
        headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json" },
        body: JSON.stringify(Object.assign({ user: user }, extra || {})),
      });
      if (answer.ok) { $("error").textContent = ""; return; }
      let text = answer.status + " " + answer.statusText;
      try { text = (await answer.json()).message || text; } catch (ignored) { /* not JSON */ }
      $("error").textContent = text;
    } catch (failure) {
      $("error").textContent = "The server cannot be reached.";
    }
  }
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("xe-key", $("key").value.trim());
    sessionStorage.setItem("xe-user", $("user").value.trim());
    $("key").value = "";
    showKeyed();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.clear();
    $("error").textContent = "";
    showKeyed();
  });
  $("pause-resume").addEventListener("click", () => act(state && state.paused ? "resume" : "pause"));
  $("skip").addEventListener("click", () => act("skip"));
  $("stop").addEventListener("click", () => act("stop"));
  const volume = $("volume");
  volume.addEventListener("input", () => { dragging = true; });
  volume.addEventListener("change", () => { dragging = false; act("volume", { volume: Number(volume.value) }); });

  showKeyed();
  connect();
})();
</script>
</body>
</html>
"""
"""The page: no file, script or style from anywhere else (only the artwork, from where the track says).
``{{API}}`` and ``{{GUILD}}`` are filled in when it is served."""


def _in_script(value: str) -> str:
    """``value`` safe inside a JavaScript string and the HTML around it."""
    return msgspec.json.encode(value).decode()[1:-1].replace("<", "\\u003c").replace("&", "\\u0026")


_PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src http: https: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'"
)


@get(
    "/{guild_id:str}",
    media_type="text/html",
    responses={
        200: ResponseSpec(str, description="The page (HTML, self-contained)", media_type="text/html"),
        **documented_errors("elixir", 400),
    },
    tags=["Player"],
    operation_id="player_page",
    summary="The now-playing page of a guild",
    description="An HTML page that follows the guild's player live, for a browser or a streaming overlay "
    "(`?theme=dark`, `light` or `transparent`; `?controls=0` hides the controls). With a key it can "
    "pause, skip, stop and set the volume.",
)
async def player_page(request: Request, guild_id: SnowflakePath) -> Response[str]:
    """A now-playing page for the guild, for a browser or a streaming overlay (``?theme=dark``,
    ``light`` or ``transparent``; ``?controls=0`` hides the controls): it follows the player
    stream and, with a key, pauses, skips, stops and sets the volume through the API."""
    api = mount_prefix(request.scope) + services_of(request).config.elixir_prefix
    page = PLAYER_PAGE.replace("{{GUILD}}", path_id(guild_id, "guild")).replace("{{API}}", _in_script(api))
    headers = {
        "Content-Security-Policy": _PAGE_POLICY,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(page, headers=headers)


# ---------------------------------------------------------------------------
# 28. App factory: create_app, the lifespan, the layer in front of Litestar
# ---------------------------------------------------------------------------


@get(
    "/",
    name="health",
    tags=["Service"],
    operation_id="health",
    summary="Whether the service is up",
    description="200 when the database (and Redis, when used) answers, else 503 with `Retry-After`; "
    "also the version and how many loader streams are open. Not rate limited; never cached.",
)
async def health(request: Request) -> Response[Health]:
    """Liveness and readiness: 200 when the database answers, else 503."""
    services = services_of(request)
    database = await services.stores.database.ping()
    redis = None
    if services.redis is not None:
        redis = False
        with contextlib.suppress(Exception):
            redis = bool(await asyncio.wait_for(services.redis.ping(), 2.0))
    ok = database and redis is not False
    state = lambda up: "ok" if up else "unreachable"  # noqa: E731
    subscribers = services.hub.subscribers(LOADER_TOPIC)
    body = Health(
        "ok" if ok else "unavailable",
        __version__,
        state(database),
        subscribers,
        None if redis is None else state(redis),
    )
    headers = {"Cache-Control": "no-store"}
    if not ok:
        headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
    return Response(body, status_code=200 if ok else 503, headers=headers)


@get(
    "/",
    media_type="text/plain; version=0.0.4",
    responses=answered(str, "The Prometheus text format (every process's figures, with XE_REDIS_URL)"),
    cache_control=None,
    tags=["Service"],
    operation_id="metrics",
    summary="Figures for Prometheus",
    description="Requests by route and status, latency, open streams, events, rate-limit refusals and "
    "commit time, in the Prometheus text format.",
)
async def metrics(request: Request) -> Response[str]:
    """Requests by route and status, latency, followers, events, rate-limit refusals and commit
    time, for Prometheus."""
    services = services_of(request)
    samples = (
        await services.shared_metrics.gathered() if services.shared_metrics else services.metrics.snapshot()
    )
    return Response(Metrics.render(samples), headers={"Cache-Control": "no-store"})


access_log = logging.getLogger("xenon_elixir.access")
_SECRET_NAME = re.compile(r"token|key|auth|secret|password", re.IGNORECASE)
_LOGGED_HERE: contextvars.ContextVar[bool] = contextvars.ContextVar("xenon_elixir_logged_here", default=False)
"""Set while a request that the access log records is handled (the server's own line would double it)."""


def _decoded(name: str) -> str:
    """A query parameter's name as the app reads it (``k%65y`` is ``key``), and as a client that
    encoded it twice meant it: decoded until it no longer changes (a few rounds at most)."""
    for _ in range(4):
        before, name = name, unquote_plus(name)
        if name == before or "%" not in name:
            break
    return name


def masked_query(query: str) -> str:
    """A query string with the values of secret-looking parameters masked. Parameter by
    parameter: one regular expression over the whole string backtracked at every character
    and cost a sixth of a logged mapper request."""
    if "=" not in query:
        return query
    parts = query.split("&")
    for i, part in enumerate(parts):
        name, equals, _ = part.partition("=")
        if equals and _SECRET_NAME.search(_decoded(name) if "%" in name else name):
            parts[i] = name + "=***"
    return "&".join(parts)


def masked(target: str) -> str:
    """A path with its query, the values of secret-looking parameters (``token``, ``key``, ...) masked."""
    path, sep, query = target.partition("?")
    return path + sep + masked_query(query)


@functools.lru_cache(maxsize=4)
def _log_time(second: int) -> str:
    """The access log's time stamp of a second, made once a second."""
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))


_DENIED: contextvars.ContextVar[bool] = contextvars.ContextVar("xenon_elixir_denied", default=False)
"""Set in a WebSocket handshake's task once it is refused with an HTTP answer."""


class ServerLogFilter(logging.Filter):
    """On uvicorn's loggers: drop uvicorn's line for a request this app's access log records (one
    line per request, however it is run), and mask secret query values in every other line
    (uvicorn prints ``?token=...`` in clear).

    Also drops uvicorn's "returned without completing handshake" error after a handshake refused
    with an HTTP answer: its sans-I/O protocol says so for every correct ASGI denial response.
    """

    _REQUEST_LINES = ('%s - "%s %s HTTP/%s" %d', '%s - "WebSocket %s"', "connection ")

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        if record.msg.startswith("ASGI callable returned without completing handshake") and _DENIED.get():
            return False
        if not record.msg.startswith(self._REQUEST_LINES):
            return True
        if _LOGGED_HERE.get():
            return False
        args = record.args
        if isinstance(args, tuple) and len(args) >= 2:
            where = 2 if record.msg.startswith(self._REQUEST_LINES[0]) and len(args) > 2 else 1
            record.args = (*args[:where], masked(str(args[where])), *args[where + 1 :])
        return True


_SERVER_LOG_FILTER = ServerLogFilter()


class AccessLogHandler(logging.StreamHandler[TextIO]):
    """The access log's handler when this module sets it up (``serve``, a bare uvicorn): lines
    are gathered and written together once per turn of the event loop, one write for all the
    requests that finished in it, instead of a write and a flush per request (which halved the
    throughput of the hot routes). Lines are written in order and none is lost at shutdown:
    the app flushes at the end of its lifespan, and ``close`` and the interpreter's exit flush too.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.setFormatter(logging.Formatter("%(message)s"))
        self._lines: list[str] = []
        self._due: asyncio.Handle | None = None
        atexit.register(self.flush)

    def write_line(self, line: str) -> None:
        """Queue one already formatted line (the edge's fast path, no LogRecord)."""
        self._lines.append(line)
        if len(self._lines) >= 512:
            self.flush()
        elif self._due is None:
            try:
                self._due = asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: write at once
                self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self._due = None
        lines, self._lines = self._lines, []
        if not lines:
            return
        with contextlib.suppress(ValueError, OSError):  # a closed stream at exit
            self.acquire()
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            finally:
                self.release()

    def close(self) -> None:
        self.flush()
        super().close()


def _access_writer() -> AccessLogHandler | None:
    """The handler to give lines to directly, when it is the access log's only one."""
    handlers = access_log.handlers
    if len(handlers) == 1 and type(handlers[0]) is AccessLogHandler and not access_log.propagate:
        return handlers[0]
    return None


def _flush_access_log() -> None:
    for handler in access_log.handlers:
        handler.flush()


def _setup_logging() -> None:
    """At startup: uvicorn's request lines give way to the access log, and a bare server
    (``uvicorn xenon_elixir:app``, where nothing handles this module's loggers) prints the access
    log to stdout. Logging the embedding program configured is left as it is."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(_SERVER_LOG_FILTER)  # once: addFilter skips a known filter
    if not access_log.hasHandlers():
        access_log.addHandler(AccessLogHandler(sys.stdout))
        access_log.setLevel(logging.INFO)
        access_log.propagate = False


@contextlib.contextmanager
def settled_heap(whole: bool) -> Iterator[None]:
    """While a process this module serves ``whole`` (``serve``, ``uvicorn xenon_elixir:app``)
    is up: what it holds from its start (modules, the app, its services, the catalog's index)
    lives as long as it serves, so the cyclic garbage collector stops scanning it
    (``gc.freeze``), until the app's lifespan ends (then it is collectable again: a process that
    runs the app twice keeps nothing of the first run). Under writes full collections ran about
    twice a second (each play leaves objects that outlive a young collection) and scanned all of
    it each time: pauses of 30-40 ms, the p99 of a play. An embedding program's heap is its own,
    and the sandbox's (its reset replaces its services) is left as it is too."""
    if not whole:
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _Exchange:
    """What the edge notes of one request: for the access log and the answers it rewrites."""

    __slots__ = ("left", "replaced", "size", "status")

    def __init__(self) -> None:
        self.status = 0
        self.size = 0
        self.left = False  # the client went away before an answer started (logged as 499)
        self.replaced = False  # the framework's answer was swapped for a JSON one


def servers_named(send: Send, root: str) -> Send:
    """The OpenAPI document of an app mounted under ``root`` names it in ``servers``, so
    clients built from it (Swagger UI's "Try it out") keep the prefix."""
    held: list[HTTPResponseStartEvent] = []
    chunks: list[bytes] = []

    async def rewrite(message: ASGIMessage) -> None:
        if message["type"] == "http.response.start":
            held.append(message)
            return
        if message["type"] != "http.response.body":  # none comes between the start and the body
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        start, body = held[0], b"".join(chunks)
        if start["status"] == 200:
            document = msgspec.json.decode(body)
            document["servers"] = [{"url": root}]
            body = msgspec.json.encode(document)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return rewrite


async def json_error(
    send: Send, status: int, message: str, shape: str, now: float, websocket: bool = False
) -> int:
    """Answer an error in the API's shape (to a WebSocket handshake: its HTTP denial); returns the
    body's size."""
    body = msgspec.json.encode(error_body(shape, message, now))
    headers = [_JSON_TYPE, (b"content-length", b"%d" % len(body))]
    if websocket:
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
    else:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
    return len(body)


class RequestMeter:
    """Counts and times every answered request (``xe_requests_total``, ``xe_request_seconds``) by
    route template and status, while :attr:`metrics` is set."""

    def __init__(self) -> None:
        self.metrics: Metrics | None = None
        """Where requests are counted: the services' while the app's lifespan runs."""
        self._labels: dict[tuple[str, int], tuple[str, tuple[str, str]]] = {}

    def measure(self, scope: Scope, status: int, began: float) -> None:
        took = time.perf_counter() - began
        counted = self.metrics
        if counted is None:
            return
        key = (scope.get("path_template") or "unmatched", status)
        labels = self._labels.get(key)
        if labels is None:
            labels = self._labels[key] = (
                "xe_requests_total" + _labels(route=key[0], status=str(status)),
                ("xe_request_seconds", _labels(route=key[0])),
            )
        counted.request(labels[0], labels[1], took)


class AccessLog:
    """One access-log line per HTTP request or WebSocket connection (``Config.access_log``), in the
    Common Log Format plus the time taken; headers are never logged and secret-looking query
    values are masked; a client that left before its answer is 499."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.on = config.access_log

    def enabled(self) -> bool:
        return self.on and access_log.isEnabledFor(logging.INFO)

    def write(self, scope: Scope, method: str, status: int, size: int, began: float) -> None:
        query = scope.get("query_string", b"")
        target = scope.get("path", "") + ("?" + masked_query(query.decode("latin-1")) if query else "")
        took = (time.perf_counter() - began) * 1000
        line = (
            f"{client_address(scope, self.config.proxies)} - - [{_log_time(int(self.config.clock()))}] "
            f'"{method} {target} HTTP/{scope.get("http_version", "1.1")}" {status} {size or "-"} {took:.1f}ms'
        )
        writer = _access_writer()
        if writer is not None:
            writer.write_line(line)
        else:  # logging configured by the embedding program: a record like any other
            access_log.info("%s", line)


_VALID_HOST = re.compile(rb"\A[0-9A-Za-z!$&'()*+,;=\-._~:\[\]@%]*\Z", re.IGNORECASE)
"""A host header Litestar's router accepts (it refuses any other with a 400)."""


@functools.lru_cache(maxsize=1024)
def _query_values(query: bytes) -> dict[str, str]:
    """A query string's parameters, the last of repeated values, as Litestar reads them (a
    client asks the same question again: parsed once). Not to be changed by the caller."""
    return dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))


DIRECT_ROUTES = ("xenon_mappers", "elixir_nowplaying", "elixir_play")
"""The hot routes, by handler name, that :class:`DirectRoutes` calls without the framework's
per-request machinery."""


class DirectRoute(NamedTuple):
    """One hot route: its handler (as the app registered it, with its router's ``opt``) and the
    names of its parameters that come from the query string."""

    handler: Any
    query: tuple[str, ...]


class DirectRoutes:
    """The hot routes called the short way: Litestar still routes each request (its cached
    lookup, so paths, methods, 404s and 405s are its own), but a handler that only takes the
    request, string path parameters and optional string query parameters is called directly
    instead of through the request's kwargs model, signature model and response handler, which
    cost as much as the handler's own work (a sixth of a nowplaying request). Anything the
    short way does not cover (a mount's ``root_path``, a host header Litestar refuses) goes the
    long way; an error is answered by the app's exception handler, as Litestar would."""

    def __init__(self, app: Litestar, on_error: Callable[[Request, Exception], Response]) -> None:
        self.litestar = app
        self.on_error = on_error
        self.routes: dict[Any, DirectRoute] = {}
        """Route handler (as routed) -> how to call it."""
        for route in app.routes:
            if not isinstance(route, HTTPRoute):
                continue
            for handler, _ in route.route_handler_map.values():
                if handler.handler_name in DIRECT_ROUTES:
                    self.routes[handler] = DirectRoute(handler, self._query_names(handler, route))

    @staticmethod
    def _query_names(handler: Any, route: HTTPRoute) -> tuple[str, ...]:
        names = []
        for name, field in handler.parsed_fn_signature.parameters.items():
            if name == "request" or name in route.path_parameters:
                continue
            kwarg = field.kwarg_definition
            if not (
                field.default is None
                and isinstance(kwarg, ParameterKwarg)
                and kwarg.query is None
                and kwarg.header is None
                and kwarg.cookie is None
                and field.annotation == (str | None)
            ):  # a parameter the short way cannot read as Litestar would
                raise TypeError(f"{handler.handler_name}: {name} is not an optional query string")
            names.append(name)
        return tuple(names)

    def find(self, scope: HTTPScope) -> DirectRoute | None:
        """The hot route ``scope`` is routed to, with the scope updated as Litestar's router
        would; None to let Litestar answer."""
        if scope.get("root_path") or scope["method"] not in ("GET", "POST"):
            return None
        for name, value in scope["headers"]:
            if name == b"host":
                if not _VALID_HOST.match(value):
                    return None
                break
        try:
            _, handler, path, params, template = self.litestar.asgi_router.handle_routing(
                path=normalize_path(scope["path"]), method=scope["method"]
            )
        except Exception:  # no such path or method: Litestar's own answer
            return None
        direct = self.routes.get(handler)
        if direct is not None:
            scope["path"], scope["path_params"] = path, params
            scope["route_handler"], scope["path_template"] = handler, template
        return direct

    async def call(
        self, direct: DirectRoute, scope: HTTPScope, receive: Receive, send: Send
    ) -> tuple[int, int]:
        """Answer by the short way: the status (499 when the client left before an answer) and
        the body's size, for the access log."""
        left = False

        async def listen() -> ReceiveMessage:  # only a route that reads a body calls it
            nonlocal left
            message = await receive()
            left = left or message["type"] == "http.disconnect"
            return message

        request: Request = Request(scope, listen, send)
        kwargs: dict[str, Any] = {"request": request, **scope["path_params"]}
        if direct.query:
            given = _query_values(scope["query_string"])
            for name in direct.query:
                kwargs[name] = given.get(name)
        answer: ASGIApp
        try:
            answer = await direct.handler.fn(**kwargs)
            if isinstance(answer, RawJson):
                await answer(scope, receive, send)
                return 200, answer.size
            answer = await direct.handler.to_response(app=self.litestar, data=answer, request=request)
        except Exception as exc:
            answer = self.on_error(request, exc).to_asgi_response(app=None, request=request)
        status, size = 0, 0

        async def sent(message: ASGIMessage) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        await answer(scope, receive, sent)
        return 499 if left else status or 500, size


def with_allow(message: HTTPResponseStartEvent, allow: str | None) -> HTTPResponseStartEvent:
    """An answer's start with ``Allow`` naming every method of its path (when known)."""
    if allow is None:
        return message
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
    return {**message, "headers": [*headers, (b"allow", allow.encode())]}


class FrontLayer:
    """What every request meets before the framework: the HTTP rules Litestar leaves out, the
    request figures (:class:`RequestMeter`) and the access log (:class:`AccessLog`).

    * ``HEAD`` is answered as ``GET`` without the body; ``OPTIONS`` and 405 ``Allow`` list every
      method of the path (Litestar's OPTIONS lists only the first handler's).
    * RememberedAnswers that would not be JSON become JSON 404s: unknown paths under the docs (an HTML page)
      and WebSocket handshakes to unknown paths (an empty 403).
    """

    def __init__(
        self, app: ASGIApp, config: Config, allow: dict[str, str], docs_path: str, direct: DirectRoutes | None
    ) -> None:
        self.app = app
        self.direct = direct
        """The hot routes' short way (:class:`DirectRoutes`)."""
        self.meter = RequestMeter()
        self.access = AccessLog(config)
        self.config = config
        self.allow = allow
        """Path template -> every method it answers (``Allow``)."""
        self.docs_prefix = docs_path.rstrip("/") + "/"

    @property
    def metrics(self) -> Metrics | None:
        """Where requests are counted (:attr:`RequestMeter.metrics`)."""
        return self.meter.metrics

    @metrics.setter
    def metrics(self, counted: Metrics | None) -> None:
        self.meter.metrics = counted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            await self._http(scope, receive, send)
        else:  # Litestar answers the lifespan itself: only requests and handshakes come this far
            await self._websocket(scope, receive, send)

    async def _http(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        head, options = method == "HEAD", method == "OPTIONS"
        docs = scope["path"].startswith(self.docs_prefix)
        logging_on = self.access.enabled()
        direct = None if head or options or docs or self.direct is None else self.direct.find(scope)
        if direct is not None:
            token = _LOGGED_HERE.set(True) if logging_on else None
            began, status, size = time.perf_counter(), 500, 0
            try:
                status, size = await self.direct.call(direct, scope, receive, send)  # type: ignore[union-attr]
            finally:
                self._done(scope, scope, method, status, size, began, token)
            return
        if not (head or options or docs or logging_on):
            if self.meter.metrics is None:
                await self.app(scope, receive, send)
            else:
                await self._measured(scope, receive, send)
            return
        exchange = _Exchange()
        root = mount_prefix(scope) if docs else ""
        if root and scope["path"].rstrip("/").endswith("/openapi.json") and not head:
            send = servers_named(send, root)

        async def listen() -> ReceiveMessage:
            message = await receive()
            if message["type"] == "http.disconnect" and not exchange.status:
                exchange.left = True
            return message

        async def answer(message: ASGIMessage) -> None:
            if exchange.replaced:
                return
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                if options and exchange.status == 204:
                    message = with_allow(message, self.allow.get(scope.get("path_template", "")))
                elif docs and exchange.status == 404:
                    exchange.replaced = True
                    exchange.size = await json_error(
                        send, 404, "Not Found", self._shape(scope), self.config.clock()
                    )
                    return
            elif message["type"] == "http.response.body":
                exchange.size += len(message.get("body", b""))
                if head and message.get("body"):
                    message = {**message, "body": b""}
            await send(message)

        token = _LOGGED_HERE.set(True) if logging_on else None
        began = time.perf_counter()
        inner: HTTPScope = {**scope, "method": "GET"} if head else scope
        try:
            await self.app(inner, listen, answer)
        finally:
            status = 499 if exchange.left else exchange.status or 500
            self._done(inner, scope, method, status, 0 if head else exchange.size, began, token)

    async def _measured(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        """The app's answer as it is, its status and time counted (no access log)."""
        status = 0

        async def answer(message: ASGIMessage) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        began = time.perf_counter()
        try:
            await self.app(scope, receive, answer)
        finally:
            self.meter.measure(scope, status or 500, began)

    def _done(
        self, inner: Scope, scope: Scope, method: str, status: int, size: int, began: float, token: Any
    ) -> None:
        """Count an answered request (as routed: ``inner``), and log it if ``token`` says so."""
        self.meter.measure(inner, status, began)
        if token is not None:
            _LOGGED_HERE.reset(token)
            self.access.write(scope, method, status, size, began)

    async def _websocket(self, scope: WebSocketScope, receive: Receive, send: Send) -> None:
        exchange = _Exchange()
        denial = "websocket.http.response" in (scope.get("extensions") or {})

        async def answer(message: ASGIMessage) -> None:
            if message["type"] == "websocket.close" and not exchange.status:  # refused before the handshake
                if scope.get("route_handler") is None and denial:  # no such path
                    exchange.status = 404
                    _DENIED.set(True)
                    exchange.size = await json_error(
                        send, 404, "Not Found", self._shape(scope), self.config.clock(), websocket=True
                    )
                    return
                exchange.status = 403
            elif message["type"] == "websocket.http.response.start":
                exchange.status = message["status"]
                _DENIED.set(True)
            elif message["type"] == "websocket.http.response.body":
                exchange.size += len(message.get("body", b""))
            elif message["type"] == "websocket.accept":
                exchange.status = 101
            await send(message)

        logging_on = self.access.enabled()
        token = _LOGGED_HERE.set(True) if logging_on else None
        began = time.perf_counter()
        try:
            await self.app(scope, receive, answer)
        finally:
            self._done(scope, scope, "WEBSOCKET", exchange.status or 500, exchange.size, began, token)

    def _shape(self, scope: Scope) -> str:
        return "elixir" if api_of(scope, self.config.elixir_prefix) == "elixir" else "xenon"


DOCS_PATH = "/schema"
METRICS_PATH = "/metrics"
DOCS_ASSETS = "/schema/assets"


class OfflineSwagger(SwaggerRenderPlugin):
    """Swagger UI whose scripts and styles the app serves itself, from the ``openapi-ui-bundles``
    package (Swagger UI 5, which reads OpenAPI 3.1): the docs work offline, and under any mount
    prefix, where the document's ``servers`` names that prefix so "Try it out" keeps it."""

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        root = mount_prefix(request.scope)
        base = root + DOCS_ASSETS
        self.js_url = f"{base}/swagger-ui-bundle.js"
        self.css_url = f"{base}/swagger-ui.css"
        self.standalone_preset_js_url = f"{base}/swagger-ui-standalone-preset.js"
        self.favicon = f"<link rel='icon' type='image/png' href='{base}/favicon-32x32.png'>"
        return super().render(request, {**openapi_schema, "servers": [{"url": root or "/"}]})


def docs_assets_router() -> Router:
    from litestar.datastructures import CacheControlHeader
    from litestar.static_files import create_static_files_router
    from openapi_ui_bundles.swagger_ui import static_path  # a dependency; imported when an app is built

    return create_static_files_router(
        DOCS_ASSETS,
        directories=[static_path],
        include_in_schema=False,
        opt={"api": "xenon"},
        cache_control=CacheControlHeader(max_age=86_400),
    )


def allowed_methods(app: Litestar) -> dict[str, str]:
    """Every HTTP path template of ``app`` and the methods it answers, ``HEAD`` wherever ``GET`` is."""
    allow: dict[str, str] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            methods = set(route.methods) | ({"HEAD"} if "GET" in route.methods else set())
            allow[route.path] = allow[route.path_format] = ", ".join(sorted(methods))
    return allow


@contextlib.asynccontextmanager
async def _services_of(app: Litestar, config: Config) -> AsyncIterator[None]:
    async with open_services(config) as opened:
        app.state.xe = opened
        app.state.host = host = Host(opened)
        edge = app.asgi_handler
        if isinstance(edge, SandboxLayer):  # in sandbox mode, it stands in front of the FrontLayer
            edge = edge.app
        if isinstance(edge, FrontLayer) and config.request_metrics:
            edge.metrics = opened.metrics
        simulation = None
        if config.demo:
            print(await seed_demo(host, config.public_url, config.admin_token), flush=True)
            simulation = asyncio.create_task(simulate_loads(host, config.demo_interval))
        try:
            yield
        finally:
            if simulation is not None:
                simulation.cancel()
                await asyncio.gather(simulation, return_exceptions=True)
            app.state.host = None
            if isinstance(edge, FrontLayer):
                edge.metrics = None


@contextlib.asynccontextmanager
async def _serving(app: Litestar, config: Config) -> AsyncIterator[None]:
    """The app's services, open while it serves (its lifespan). On a file, only the servers of
    one Redis fleet share it (:class:`ServerLock`; PostgreSQL: :meth:`PostgresDatabase.claim`)."""
    lock = None if is_postgres(config.db) else ServerLock(config.db, fleet_mark(config))
    if lock is not None:
        lock.acquire()
    _SERVING.set(True)  # the lifespan's own context: a PostgreSQL store names its connections
    try:
        async with _services_of(app, config):
            yield
    finally:
        if lock is not None:
            lock.release()


def _build_app(config: Config, lifespan: Callable[[Litestar], Any]) -> Litestar:
    on_error = error_handler(config)
    routers = [
        docs_assets_router(),
        Router(config.health_path, route_handlers=[health], opt={"api": "xenon"}),
        Router(METRICS_PATH, route_handlers=[metrics], opt={"api": "xenon"}),
        Router(PLAYER_PAGE_PATH, route_handlers=[player_page], opt={"api": "elixir"}),
        Router(config.elixir_prefix, route_handlers=ELIXIR_ROUTES, opt={"api": "elixir"}),
        Router(config.xenon_prefix, route_handlers=XENON_ROUTES, opt={"api": "xenon"}),
    ]
    if config.admin_token:
        routers.append(
            Router(
                config.admin_prefix,
                route_handlers=[*ADMIN_ROUTES, *(SANDBOX_ROUTES if config.sandbox else ())],
                guards=[admin_guard],
                security=[{"AdminToken": []}],
                opt={"api": "admin"},
                request_max_body_size=config.admin_max_body_size,
            )
        )
    app = Litestar(
        route_handlers=routers,
        openapi_config=OpenAPIConfig(
            title="xenon_elixir",
            version=__version__,
            description="The Xenon partner API (/api) and the Elixir Music API (/api/v1), with the admin API "
            '(/admin) when an admin token is set. Error bodies: Xenon and admin {"error"}, Elixir '
            '{"timestamp", "message"}. The loader stream is WS /api/loaders/ws (see the README).',
            tags=openapi_tags(routers),
            components=Components(
                security_schemes={
                    "BotToken": SecurityScheme(
                        type="apiKey",
                        name="Authorization",
                        security_scheme_in="header",
                        description="The raw bot token (a `Bot ` prefix is tolerated)",
                    ),
                    "ElixirKey": SecurityScheme(
                        type="http", scheme="bearer", description="A per-guild Elixir key"
                    ),
                    "AdminToken": SecurityScheme(type="http", scheme="bearer", description="XE_ADMIN_TOKEN"),
                }
            ),
            render_plugins=[OfflineSwagger(path="/")],
        ),
        lifespan=[lifespan],
        exception_handlers={Exception: on_error},
        logging_config=None,  # an embedded app leaves the program's logging as it is
        request_max_body_size=config.max_body_size,
    )
    # Around the whole app, not as route middleware: unmatched paths (404/405) are logged too.
    app.asgi_handler = front = FrontLayer(
        app.asgi_handler, config, allowed_methods(app), DOCS_PATH, DirectRoutes(app, on_error)
    )
    if config.sandbox:  # only then: a normal server pays nothing for it
        app.state.sandbox = state = SandboxState(config)
        state.learn(app)
        app.asgi_handler = SandboxLayer(front, state, RecordMask(masked_query, _SECRET_NAME))
    return app


def create_app(config: Config | None = None, **overrides: Any) -> Litestar:
    """Build an app. Nothing is opened until the app's lifespan runs.

    ``overrides`` replace fields of ``config`` (by default :meth:`Config.from_env`).
    """
    config = dataclasses.replace(config or Config.from_env(), **overrides)
    if config.sandbox:
        config = sandbox_config(config)
    config.check()  # a bad setting fails here, not at the first request
    if config.demo and not config.admin_token:  # the demo shows the admin API too
        config = dataclasses.replace(config, admin_token=secrets.token_urlsafe(18))

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        _setup_logging()
        try:
            async with app.state.sandbox.running(app, _serving) if config.sandbox else _serving(app, config):
                with settled_heap(bool(app.state.get("whole_process")) and not config.sandbox):
                    yield
            _flush_access_log()
        except asyncio.CancelledError:
            _flush_access_log()
            # Cancelled while shutting down (a second Ctrl-C under a bare uvicorn): the database is
            # closed all the same (see SqliteWriter.close); end quietly instead of with a traceback.
            log.warning("shutdown interrupted; the database was closed")

    return _build_app(config, lifespan)


def refusals_in_one_line(app: Litestar) -> None:
    """A refusal at startup (the database refused or locked by another server, a fleet that
    would mix, Redis away, the sandbox's database not its own) said in one line, as ``serve``
    says it: under a bare uvicorn, the lifespan's failure message is otherwise a whole traceback.
    The app's router becomes a subclass that rewrites that one message (nothing changes for
    requests: the router's class is only looked at for the lifespan)."""

    class OneLineRefusals(type(app.asgi_router)):  # type: ignore[misc]
        __slots__ = ()

        async def lifespan(self, receive: Any, send: Any) -> None:
            async def say(message: Any) -> None:
                if message["type"] == "lifespan.startup.failed":
                    failed = sys.exc_info()[1]  # (sent while the lifespan's failure is handled)
                    while isinstance(failed, BaseExceptionGroup) and len(failed.exceptions) == 1:
                        failed = failed.exceptions[0]  # (a task group's, around the one that failed)
                    if isinstance(failed, (StoreError, ConfigError)):
                        message = {**message, "message": f"xenon_elixir: {failed}"}
                await send(message)

            await super().lifespan(receive, say)

    app.asgi_router.__class__ = OneLineRefusals


def __getattr__(name: str) -> Any:
    """``xenon_elixir.app``: the app configured from the environment, for ``uvicorn xenon_elixir:app``.
    Built on first access, so importing the module reads and opens nothing."""
    if name == "app":
        try:
            built = globals()["app"] = create_app()
            built.state.whole_process = True  # served by a bare uvicorn, nothing else
        except ConfigError as exc:  # a server must not start on a bad setting: one line, exit 1
            raise SystemExit(f"xenon_elixir: {exc}") from None
        refusals_in_one_line(built)
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------
# 29. Command line: xenon-elixir
# ---------------------------------------------------------------------------


class CliError(Exception):
    """A command failed; its message is printed as one line to stderr."""


def _cli_host(args: argparse.Namespace) -> contextlib.AbstractAsyncContextManager[Host]:
    config = Config.from_env()
    return Host.open(config if args.db is None else dataclasses.replace(config, db=args.db))


async def _cmd_add_bot(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        print(await host.grant_bot(args.id, args.name))


def _removed(found: bool, done: str, missing: str) -> None:
    """Say what a revoke or a removal did; one that found nothing to remove is an error."""
    if not found:
        raise CliError(missing)
    print(done)


async def _cmd_revoke_bot(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        _removed(await host.revoke_bot(args.id), f"revoked the token of bot {args.id}", f"no bot {args.id}")


async def _cmd_add_template(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        template = await host.create_template(args.name, args.source, args.creator, template_id=args.id)
        print(template.id)


async def _cmd_add_backup(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        backup = await host.create_backup(args.source, args.creator, backup_id=args.id)
        print(backup.id)


async def _cmd_genkey(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        print(await host.create_key(args.guild, args.user, rotate=args.rotate))


async def _cmd_revoke_key(args: argparse.Namespace) -> None:
    pair = f"guild {args.guild} and user {args.user}"
    async with _cli_host(args) as host:
        _removed(
            await host.revoke_key(args.guild, args.user), f"revoked the key of {pair}", f"no key for {pair}"
        )


async def _cmd_add_guild(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        guild = await host.put_guild(args.guild, args.name, args.voice)
        print(f"guild {guild.id} ({guild.name}) with {len(guild.voice_channels)} voice channel(s)")


async def _cmd_remove_guild(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        found = await host.delete_guild(args.guild)
        _removed(found, f"removed guild {args.guild}", f"guild {args.guild} is not in the registry")


async def _cmd_import_tracks(args: argparse.Namespace) -> None:
    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        decoded = msgspec.json.decode(raw, type=list[Track] | Catalog)
    except msgspec.DecodeError as exc:
        if b"}\n{" in raw:  # one track a line: what the admin API streams, not one document
            raise CliError(
                f"{args.file} holds one track a line: import-tracks reads one JSON document (a list of "
                'tracks, or {"tracks": [...], "playlists": [...]}); send this file to POST /admin/tracks '
                "with Content-Type: application/x-ndjson"
            ) from None
        raise CliError(f"{args.file}: {exc}") from None
    catalog = decoded if isinstance(decoded, Catalog) else Catalog(tracks=decoded)
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if total > _IMPORT_CHUNK:  # a bar for long imports; short ones just finish
            filled = 30 * done // total
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {100 * done // total:3d}% {done:,}/{total:,} tracks"
            print(f"\r{bar}", end="" if tty and done < total else "\n", file=sys.stderr, flush=True)

    async with _cli_host(args) as host:
        tracks, playlists = await host.import_catalog(catalog.tracks, catalog.playlists, progress)
    print(f"imported {tracks} track(s) and {playlists} playlist(s)")


def _cell(value: Any) -> str:
    if value is msgspec.UNSET or value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value) or "-"
    return str(value).lower() if isinstance(value, bool) else str(value)


async def _cmd_list(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        page = await host.list(args.kind, limit=args.limit, after=args.after)
    fields = LISTED_AS[args.kind].__struct_fields__
    rows = [[_cell(getattr(item, field)) for field in fields] for item in page.items]
    widths = [max([len(field), *(len(row[i]) for row in rows)]) for i, field in enumerate(fields)]
    for row in [list(fields), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if page.next is not None:
        print(f"more: --after {page.next}", file=sys.stderr)


async def _cmd_backup(args: argparse.Namespace) -> None:
    async with _cli_host(args) as host:
        await host.backup_database(args.file)
    print(f"backed up {args.db or Config.from_env().db} to {args.file}")


def _cmd_schema(args: argparse.Namespace) -> None:
    sys.stdout.write(PG_SCHEMA if args.postgres else SCHEMA)


async def _cmd_migrate(args: argparse.Namespace) -> None:
    path = args.db or Config.from_env().db
    _file_or_postgres(path)
    if is_postgres(path):
        raise CliError("migrate copies an SQLite file into PostgreSQL: --db (or XE_DB) names the file")
    if not is_postgres(args.to):
        raise CliError(f"--to must be a postgresql:// URL, not {args.to[:60]!r}")

    def progress(table: str, done: int, total: int) -> None:
        if total > _MIGRATE_CHUNK:  # a big table: a line per chunk
            print(f"{table}: {done:,} of {total:,} rows", file=sys.stderr, flush=True)

    copied = await migrate_to_postgres(path, args.to, replace=args.replace, progress=progress)
    tables = ", ".join(f"{table} {rows:,}" for table, rows in copied.items() if rows)
    print(f"copied {path} into {masked_url(args.to)}: {sum(copied.values()):,} rows ({tables or 'none'})")


def serve_log_config() -> dict[str, Any]:
    """uvicorn's logging setup, with this module's loggers added: errors to stderr like uvicorn's,
    and the access log (which replaces uvicorn's own) to stdout."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["xe_access"] = {
        "()": AccessLogHandler,
        "stream": sys.stdout,
    }
    config["loggers"]["xenon_elixir"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["loggers"]["xenon_elixir.access"] = {
        "handlers": ["xe_access"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def demo_db(db: str) -> str:
    """The demo's database: ``xenon_elixir_demo.db`` in the folder of the configured one (in
    this folder when that is a PostgreSQL database, which a demo never fills)."""
    return (
        "xenon_elixir_demo.db"
        if is_postgres(db)
        else os.path.join(os.path.dirname(db), "xenon_elixir_demo.db")
    )


async def _preflight(config: Config) -> None:
    """What would stop the server at startup, said in one line before it starts."""
    if is_postgres(config.db):
        await (await open_postgres(config, serving=True)).close()
    else:
        lock = ServerLock(config.db, fleet_mark(config))
        lock.acquire()  # first: a server refused changes nothing (nor does one while migrate copies)
        lock.release()
        await (await SqliteDatabase(config.db, write_wait=config.write_wait).open()).close()
    if config.sandbox:  # it empties its database: never one of the user's
        await refuse_unmade(config)
    if not config.redis_url:
        return
    redis = redis_client(config)
    try:
        await redis.ping()
    except Exception as exc:
        raise StoreError(f"cannot reach Redis at XE_REDIS_URL: {exc}") from None
    finally:
        await redis.aclose()


def _port_free(host: str, port: int) -> None:
    """Bind ``host:port`` the way uvicorn will (address reuse on, every address the host names)
    and let it go: a port in use is one line naming it, before any database file is created.
    Anything else (an unknown host, a privileged port) is left for uvicorn to say."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # an unknown host: uvicorn says so
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise CliError(
                        f"port {port} is in use on {host} (another server?): choose another with --port"
                    ) from None


class _Server:
    """uvicorn's server, except that a second Ctrl-C (which stops waiting for open connections)
    still closes the database, in milliseconds, instead of leaving the app's shutdown unrun."""

    def __new__(cls, config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            async def shutdown(self, sockets: Any = None) -> None:
                await super().shutdown(sockets)
                if self.force_exit:
                    await self.lifespan.shutdown()

        return Server(config)


def _run_server(app: Litestar, args: argparse.Namespace) -> None:
    """Serve ``app`` with uvicorn as ``serve`` and ``sandbox`` do, until a signal stops it."""
    import uvicorn

    app.state.whole_process = True

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=serve_log_config(),
        access_log=False,  # the app logs each request itself, the same way when embedded
        ws_per_message_deflate=False,  # its zlib state is 46 KB per socket; loader frames are small JSON
        # The app reads X-Forwarded-For itself, from the proxies it is told to trust (client_address);
        # uvicorn's own reading trusts loopback, so anything on this machine could pick its address.
        proxy_headers=False,
    )
    _Server(config).run()


def _cmd_serve(args: argparse.Namespace) -> None:
    overrides: dict[str, Any] = {} if args.db is None else {"db": args.db}
    if args.trusted_proxies is not None:
        overrides["trusted_proxies"] = args.trusted_proxies
    if args.demo:
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        overrides.update(demo=True, public_url=f"http://{shown}:{args.port}")
    if args.demo and args.db is None:  # its own file, beside the usual one, unless told otherwise
        overrides["db"] = demo_db(Config.from_env().db)
    app = create_app(**overrides)
    _port_free(args.host, args.port)
    # A database that cannot be used is one line, not a traceback from the lifespan.
    sandboxed = getattr(app.state, "sandbox", None)  # XE_SANDBOX=1: its own database
    asyncio.run(
        _preflight(sandboxed.config if sandboxed else dataclasses.replace(Config.from_env(), **overrides))
    )
    if sandboxed:  # as xenon-elixir sandbox says it: the database it empties, the credentials
        print(sandbox_banner(f"http://{args.host}:{args.port}", sandboxed.config), flush=True)
    _run_server(app, args)


class SandboxCredentials(NamedTuple):
    """The sandbox's fixed ids and secrets (the same on every start)."""

    admin_token: str
    bot_id: str = DEMO_BOT
    bot_token: str = SANDBOX_BOT_TOKEN
    key: str = SANDBOX_KEY
    guild_id: str = DEMO_GUILD
    user_id: str = DEMO_USER
    voice_channels: tuple[str, ...] = DEMO_VOICE
    template_id: str = DEMO_TEMPLATE
    backup_id: str = DEMO_BACKUP
    source_id: str = DEMO_SOURCE
    target_id: str = DEMO_TARGET
    creator_id: str = DEMO_CREATOR


class _SandboxCalls:
    """The sandbox's admin routes, called over HTTP (the same door a bot in any language has)."""

    def __init__(self, url: str, admin_token: str, admin_prefix: str) -> None:
        self._base = url + admin_prefix
        self._auth = f"Bearer {admin_token}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        import urllib.error
        import urllib.request

        data = None if body is None else msgspec.json.encode(body)
        ask = urllib.request.Request(self._base + path, data=data, method=method)
        ask.add_header("Authorization", self._auth)
        ask.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(ask, timeout=30) as answer:
                return msgspec.json.decode(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, msgspec.json.decode(exc.read()).get("error", str(exc))) from None


class SandboxFaults:
    """``xe.faults``: arm, list and remove faults (``POST/GET/DELETE /admin/faults``)."""

    def __init__(self, calls: _SandboxCalls) -> None:
        self._calls = calls

    def arm(self, **fault: Any) -> dict[str, Any]:
        """Arm a fault (the fields of ``POST /admin/faults``); returns it with its ``id``."""
        return cast(dict[str, Any], self._calls.call("POST", "/faults", fault))

    def list(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._calls.call("GET", "/faults")["faults"])

    def remove(self, fault_id: str) -> None:
        self._calls.call("DELETE", f"/faults/{fault_id}")

    def clear(self) -> None:
        self._calls.call("DELETE", "/faults")


class SandboxTime:
    """``xe.clock``: the sandbox's time (``/admin/clock``)."""

    def __init__(self, calls: _SandboxCalls) -> None:
        self._calls = calls

    def advance(self, seconds: float = 0.0, *, ms: int = 0) -> int:
        """Move time on; returns the new time in epoch milliseconds."""
        return int(self._calls.call("POST", "/clock", {"advance_ms": ms + round(seconds * 1000)})["now_ms"])

    @property
    def now_ms(self) -> int:
        """The sandbox's time, epoch milliseconds (``xe.clock.now_ms``, a property: no call)."""
        return int(self._calls.call("GET", "/clock")["now_ms"])


class SandboxRecord:
    """``xe.requests``: what the APIs received (``/admin/requests``)."""

    def __init__(self, calls: _SandboxCalls) -> None:
        self._calls = calls

    def list(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._calls.call("GET", "/requests")["requests"])

    def clear(self) -> None:
        self._calls.call("DELETE", "/requests")


class SandboxServer:
    """A sandbox app served by uvicorn on a free loopback port, in a thread (:func:`sandbox`)."""

    def __init__(self, config: Config | None, overrides: dict[str, Any]) -> None:
        overrides = {"access_log": False, **overrides, "sandbox": True}
        self.app = create_app(config, **overrides)
        self.config: Config = self.app.state.sandbox.config
        self.credentials = SandboxCredentials(self.config.admin_token or SANDBOX_ADMIN_TOKEN)
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        import uvicorn

        # Refused here, in one line (the lifespan would add a traceback), on a loop of its own:
        # a sync ``with`` may be inside a running loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, refuse_unmade(self.config)).result()

        # IPPROTO_TCP spelt out: asyncio sets TCP_NODELAY only on sockets that name it, and
        # without it every keep-alive answer waited 40 ms on the client's delayed ACK.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._server = server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", ws_per_message_deflate=False, proxy_headers=False)
        )
        self._thread = threading.Thread(
            target=asyncio.run, args=(server.serve([listener]),), name="xenon_elixir sandbox", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not start (see the log above)")
            time.sleep(0.005)
        calls = _SandboxCalls(self.url, self.credentials.admin_token, self.config.admin_prefix)
        self._calls, self.faults, self.clock = calls, SandboxFaults(calls), SandboxTime(calls)
        self.requests = SandboxRecord(calls)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(30)

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.__exit__)

    @property
    def xenon_url(self) -> str:
        return self.url + self.config.xenon_prefix

    @property
    def elixir_url(self) -> str:
        return self.url + self.config.elixir_prefix

    @property
    def loaders_ws_url(self) -> str:
        return self.xenon_url.replace("http", "ws", 1) + "/loaders/ws"

    @property
    def player_ws_url(self) -> str:
        return f"{self.elixir_url.replace('http', 'ws', 1)}/{DEMO_GUILD}/player"

    def reset(self) -> None:
        """Fresh state (``POST /admin/reset``): no fault, an empty record, the clock at real time,
        the demo data alone."""
        self._calls.call("POST", "/reset")

    def load_backup(
        self,
        ids: Mapping[str, str] | None = None,
        statuses: Sequence[str] = DEMO_STATUSES,
        *,
        ok: bool = True,
    ) -> str:
        """A backup load of the demo backup into the demo target through the admin routes:
        start, each status, the ids (old -> new; by default a fresh set), done. Returns the target."""
        target = DEMO_TARGET
        self._calls.call(
            "POST",
            "/loaders",
            {
                "target_id": target,
                "type": "backup",
                "source_id": DEMO_SOURCE,
                "backup_id": DEMO_BACKUP,
                "user_id": DEMO_CREATOR,
            },
        )
        for status in statuses:
            self._calls.call("POST", f"/loaders/{target}/status", {"status": status})
        self._calls.call("POST", f"/loaders/{target}/ids", {"ids": dict(ids or _demo_ids(1))})
        self._calls.call("POST", f"/loaders/{target}/done", {"ok": ok})
        return target

    def _elixir(self, method: str, action: str, body: Any = None) -> Any:
        import urllib.error
        import urllib.request

        data = None if body is None else msgspec.json.encode(body)
        ask = urllib.request.Request(f"{self.elixir_url}/{DEMO_GUILD}/{action}", data=data, method=method)
        ask.add_header("Authorization", f"Bearer {SANDBOX_KEY}")
        ask.add_header("Content-Type", "application/json")
        ask.add_header(SANDBOX_HELPER.decode(), "1")  # setting a scene: not recorded, met by no fault
        try:
            with urllib.request.urlopen(ask, timeout=30) as answer:
                return msgspec.json.decode(answer.read())
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, msgspec.json.decode(exc.read()).get("message", str(exc))) from None

    def play(self, query: str) -> list[dict[str, Any]]:
        """Join the demo guild's first voice channel and play ``query`` (a search, a track's or a
        playlist's URL) as the demo user; the tracks queued. Its requests are not recorded and
        meet no fault (:data:`SANDBOX_HELPER`)."""
        self._elixir("POST", "join", {"user": DEMO_USER, "channel": DEMO_VOICE[0]})
        return cast(list[dict[str, Any]], self._elixir("POST", "play", {"user": DEMO_USER, "query": query}))

    def end_track(self) -> int:
        """Move the clock to the end of the demo guild's current track (the next one starts);
        returns the new time. Nothing playing is an ``ApiError`` (410). Its request is not
        recorded and meets no fault, as :meth:`play`'s."""
        playing = self._elixir("GET", "nowplaying")
        return self.clock.advance(ms=max(0, playing["duration"] * 1000 - playing["position"]))


def sandbox(config: Config | None = None, **overrides: Any) -> SandboxServer:
    """The sandbox on a free loopback port, for ``with`` or ``async with``::

        with xenon_elixir.sandbox() as xe:
            httpx.get(f"{xe.xenon_url}/mappers", params=..., headers={"Authorization": xe.credentials.bot_token})

    ``config`` and ``overrides`` as :func:`create_app` takes them (``XE_*`` from the environment
    by default: ``XE_DB=postgresql://...`` runs it on PostgreSQL)."""
    return SandboxServer(config, overrides)


def pytest_configure(config: Any) -> None:
    """The pytest plugin (entry point ``pytest11``): the ``xenon_elixir_sandbox`` fixture, one
    server for the session, reset to fresh state before each test."""
    import types

    import pytest

    @pytest.fixture(scope="session")
    def xenon_elixir_sandbox_server() -> Iterator[SandboxServer]:
        """The session's sandbox server (``XE_*`` from the environment: ``XE_DB`` picks the store)."""
        with sandbox() as server:
            yield server

    @pytest.fixture
    def xenon_elixir_sandbox(xenon_elixir_sandbox_server: SandboxServer) -> SandboxServer:
        """The session's sandbox, reset to fresh state for this test."""
        xenon_elixir_sandbox_server.reset()
        return xenon_elixir_sandbox_server

    if not config.pluginmanager.has_plugin("xenon_elixir_sandbox"):
        plugin = types.ModuleType("xenon_elixir_sandbox")
        plugin.xenon_elixir_sandbox_server = xenon_elixir_sandbox_server  # type: ignore[attr-defined]
        plugin.xenon_elixir_sandbox = xenon_elixir_sandbox  # type: ignore[attr-defined]
        config.pluginmanager.register(plugin, "xenon_elixir_sandbox")


def _cmd_sandbox(args: argparse.Namespace) -> None:
    overrides: dict[str, Any] = {"sandbox": True}
    if args.db is not None:
        overrides["db"] = args.db
    app = create_app(**overrides)
    _port_free(args.host, args.port)
    asyncio.run(_preflight(app.state.sandbox.config))
    print(sandbox_banner(f"http://{args.host}:{args.port}", app.state.sandbox.config), flush=True)
    _run_server(app, args)


_EXAMPLES = {
    "serve": [
        "xenon-elixir serve --demo",
        "XE_ADMIN_TOKEN=secret xenon-elixir serve --host 0.0.0.0 --port 8000 --db /data/bot.db",
    ],
    "sandbox": [
        "xenon-elixir sandbox --port 8000",
        "XE_DB=postgresql://localhost/xe_test xenon-elixir sandbox",
    ],
    "add-bot": ["TOKEN=$(xenon-elixir add-bot 386861188891279362 Wick)"],
    "revoke-bot": ["xenon-elixir revoke-bot 386861188891279362"],
    "add-template": [
        "xenon-elixir add-template Gaming --source 410488579140354049 --creator 647737109494497281"
    ],
    "add-backup": [
        "xenon-elixir add-backup --source 410488579140354049 --creator 647737109494497281 --id 3zydfwqp0h"
    ],
    "genkey": [
        "KEY=$(xenon-elixir genkey 766045633697021973 460177285954142208)",
        "xenon-elixir genkey 766045633697021973 460177285954142208 --rotate",
    ],
    "revoke-key": ["xenon-elixir revoke-key 766045633697021973 460177285954142208"],
    "add-guild": [
        'xenon-elixir add-guild 766045633697021973 --name "Music Lounge" '
        "--voice 766045633697021978 --voice 766045633697021979"
    ],
    "remove-guild": ["xenon-elixir remove-guild 766045633697021973"],
    "import-tracks": ["xenon-elixir import-tracks catalog.json --db bot.db"],
    # Not "> schema.sql": in a checkout that is the tracked copy of the schema.
    "schema": [
        "xenon-elixir schema > services-schema.sql",
        "xenon-elixir schema --postgres > services-schema.postgres.sql",
    ],
    "migrate": [
        "xenon-elixir migrate --db /data/bot.db --to postgresql://services@db.internal/xenon",
        "xenon-elixir migrate --db /data/bot.db --to postgresql://services@db.internal/xenon --replace",
    ],
    "list": ["xenon-elixir list keys", "xenon-elixir list bots --limit 50 --after 386861188891279362"],
    "backup": ["xenon-elixir backup /backups/bot-2026-11-23.db --db /data/bot.db"],
}


_SERVE_ENVIRONMENT = """

environment (each also a create_app() keyword; see the README's Configuration):
  XE_DB               SQLite file, or postgresql:// URL (default ./xenon_elixir.db; --db wins)
  XE_ADMIN_TOKEN      enables /admin with this bearer token (unset: admin off)
  XE_RATE_LIMITS      off, or e.g. mappers=30/10,templates=30/10,loaders_ws=1/1,auth_failures=100/60
  XE_STATUS_INTERVAL  seconds between status events of one loader (default 5)
  XE_CACHE_SECONDS    max-age of cacheable Xenon answers (default 60)
  XE_MAX_QUEUE        tracks that may wait in a guild's queue (default 1000)
  XE_TRUSTED_PROXIES  proxies whose X-Forwarded-For is read, e.g. 127.0.0.1,10.0.0.0/8 (default none)
  XE_MAX_STREAMS_PER_ADDRESS  player streams one client address may hold open (default 64)
  XE_SANDBOX          1 serves the sandbox a bot's tests run against (see: xenon-elixir sandbox)
  XE_ACCESS_LOG       0 turns the access log off (default on)
  XE_REQUEST_METRICS  0 stops counting and timing each request for /metrics (default on)
  XE_REDIS_URL        redis://host:port/db: several server processes on one database, as one service
  XE_REDIS_PREFIX     what this app's Redis keys start with (default xe:)
  XE_LAVALINK_URL     a Lavalink v4 node that resolves and plays (XE_LAVALINK_PASSWORD, _USER_ID,
                      _SEARCH_PREFIX)"""


def _port(value: str) -> int:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value[:6]) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, not {value[:20]!r}")
    return int(value)


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr, pointing at --help, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="xenon-elixir",
        description="Serve and feed the Xenon partner API and the Elixir Music API.",
        epilog="Every command but schema takes --db (default: $XE_DB, else ./xenon_elixir.db; for the "
        "sandbox, a throwaway file).\n"
        "COMMAND --help shows its options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    db = _Parser(add_help=False)
    db.add_argument("--db", help="SQLite file or postgresql:// URL (default: $XE_DB, else ./xenon_elixir.db)")
    sqlite_db = _Parser(add_help=False)  # for what only an SQLite file can do
    sqlite_db.add_argument("--db", help="the SQLite file (default: $XE_DB, else ./xenon_elixir.db)")
    sandbox_db = _Parser(add_help=False)  # emptied on start and on every reset: never the usual file
    sandbox_db.add_argument(
        "--db",
        help="SQLite file or postgresql:// URL that the sandbox empties on start and on every reset: a "
        "new file or an empty database (or one a sandbox made); another is refused (default: $XE_DB, "
        "else a throwaway file in the temporary folder, removed when the sandbox stops)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = {"schema": [], "backup": [sqlite_db], "migrate": [sqlite_db], "sandbox": [sandbox_db]}

    def command(
        name: str, run: Callable[[argparse.Namespace], Any], summary: str, **more: Any
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            parents=parents.get(name, [db]),
            help=summary,
            description=more.pop("description", summary),
            epilog="examples:\n  " + "\n  ".join(_EXAMPLES[name]) + more.pop("epilog_more", ""),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    serve = command("serve", _cmd_serve, "run the HTTP server", epilog_more=_SERVE_ENVIRONMENT)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port to bind, 1-65535 (default 8000)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn log level (default info)",
    )
    serve.add_argument(
        "--demo", action="store_true", help="seed demo data, print ready-to-paste curl lines, simulate loads"
    )
    serve.add_argument(
        "--trusted-proxies",
        metavar="LIST",
        help="addresses and CIDR networks of the proxies in front, whose X-Forwarded-For is believed "
        "(default: $XE_TRUSTED_PROXIES, else none)",
    )

    sandboxed = command(
        "sandbox",
        _cmd_sandbox,
        "run the sandbox: demo data under fixed credentials, faults, a clock, a record (README §3)",
    )
    sandboxed.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sandboxed.add_argument("--port", type=_port, default=8000, help="port to bind, 1-65535 (default 8000)")
    sandboxed.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level",
    )

    add_bot = command("add-bot", _cmd_add_bot, "grant a Xenon bot token and print it (again: rotates it)")
    add_bot.add_argument("id", metavar="ID")
    add_bot.add_argument("name", metavar="NAME")
    command("revoke-bot", _cmd_revoke_bot, "revoke a Xenon bot's token").add_argument("id", metavar="ID")

    add_template = command("add-template", _cmd_add_template, "create a template and print its id")
    add_template.add_argument("name", metavar="NAME")
    add_template.add_argument("--source", required=True, help="the guild the template was made from")
    add_template.add_argument("--creator", required=True, help="the user who made it")
    add_template.add_argument("--id", help="its id (12 of A-Z, a-z, 0-9; default: generated)")

    add_backup = command("add-backup", _cmd_add_backup, "create a backup and print its id")
    add_backup.add_argument("--source", required=True, help="the guild the backup was made from")
    add_backup.add_argument("--creator", required=True, help="the user who made it")
    add_backup.add_argument("--id", help="its id (10 of 0-9, a-z; default: generated)")

    genkey = command("genkey", _cmd_genkey, "create an Elixir key and print it")
    genkey.add_argument("guild", metavar="GUILD")
    genkey.add_argument("user", metavar="USER")
    genkey.add_argument("--rotate", action="store_true", help="replace (and revoke) an existing key")
    revoke = command("revoke-key", _cmd_revoke_key, "revoke the Elixir key of a guild and user")
    revoke.add_argument("guild", metavar="GUILD")
    revoke.add_argument("user", metavar="USER")

    add_guild = command("add-guild", _cmd_add_guild, "add or replace a guild in the registry")
    add_guild.add_argument("guild", metavar="GUILD")
    add_guild.add_argument("--name", required=True)
    add_guild.add_argument(
        "--voice", action="append", default=[], metavar="ID", help="a voice channel id (repeat)"
    )
    command("remove-guild", _cmd_remove_guild, "remove a guild from the registry").add_argument(
        "guild", metavar="GUILD"
    )

    imports = command(
        "import-tracks",
        _cmd_import_tracks,
        "upsert catalog tracks (and playlists) from a JSON file",
        description='FILE holds a list of tracks, or {"tracks": [...], "playlists": [...]}, in the format of '
        "POST /admin/tracks and /admin/playlists. All of it is checked before anything is written (a bad "
        "track or a playlist naming an unknown track refuses the whole file); tracks are then written in "
        "chunks of 5,000, so the server keeps serving during a big import. Running it again is harmless.",
    )
    imports.add_argument("file", metavar="FILE.json")
    listing = command(
        "list", _cmd_list, "list bots, guilds, keys, templates, backups or running loaders (no secrets)"
    )
    listing.add_argument("kind", choices=list(LISTINGS), metavar="KIND", help=", ".join(LISTINGS))
    listing.add_argument(
        "--limit", type=int, default=100, help=f"at most this many (1-{LIST_LIMIT}, default 100)"
    )
    listing.add_argument("--after", help="start after this one (the 'more:' line of the previous page)")
    backup = command(
        "backup",
        _cmd_backup,
        "copy the database to FILE while the server runs (online, consistent)",
        description="Copy the database to FILE with SQLite's backup API: consistent, and safe while the "
        "server runs. To restore: stop the server, move the copy to the database's path (removing any "
        "-wal and -shm files beside it), start the server.",
    )
    backup.add_argument("file", metavar="FILE")
    schema = command("schema", _cmd_schema, "print the SQL schema (SQLite's, or PostgreSQL's)")
    schema.add_argument("--postgres", action="store_true", help="the PostgreSQL schema")
    migrate = command(
        "migrate",
        _cmd_migrate,
        "copy the SQLite database into PostgreSQL",
        description="Copy every row of the SQLite database (--db) into the PostgreSQL database of --to, in "
        "one transaction: ids, orders, event and player numbers included. Stop the server first: migrate "
        "refuses while one serves the file, and no server starts on it until the copy is done. A target "
        "that holds anything is refused unless --replace. Big tables show their progress on stderr.",
    )
    migrate.add_argument(
        "--to", required=True, metavar="URL", help="postgresql://user:password@host/database"
    )
    migrate.add_argument("--replace", action="store_true", help="empty a target that holds anything first")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        outcome = args.run(args)
        if asyncio.iscoroutine(outcome):
            asyncio.run(outcome)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn re-raises the SIGINT it handled once shutdown is done
        return 130
    except (CliError, StoreError) as exc:
        print(f"xenon-elixir: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"xenon-elixir: {exc.message}", file=sys.stderr)
        return 1
    except DomainError as exc:
        print(f"xenon-elixir: {exc.message}", file=sys.stderr)
        return 1
    except (ValueError, sqlite3.Error) as exc:  # msgspec.ValidationError is a ValueError
        print(f"xenon-elixir: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
