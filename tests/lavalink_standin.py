"""A protocol-faithful stand-in for a Lavalink v4 node, for tests: loopback only, no Java, no audio.

Built from https://lavalink.dev/api/rest.html, https://lavalink.dev/api/websocket.html and the
resuming section of https://lavalink.dev/api/ (docs/api/rest.md, websocket.md, index.md in
github.com/lavalink-devs/Lavalink), and where they are silent from the server's code (4.2.x:
PlayerRestHandler, SocketServer, SocketContext, HandshakeInterceptorImpl, RequestAuthorizationFilter;
lavaplayer's DefaultAudioPlayer for the order of events):

* REST without Authorization is 401, with a wrong one 403 (empty body); other errors are
  {timestamp, status, error, message, path} (+ trace with ?trace=true). PATCH player follows the
  server step by step: voice, paused, userData, volume, position (+playerUpdate), endTime, filters
  (+playerUpdate), then the track: noReplace, TrackEndEvent "replaced", TrackStartEvent, playerUpdate;
  a null track or DELETE ends the track with "stopped"; a track reaching its length/endTime "finished".
* Websocket: ready then stats on connect; `Session-Resumed` handshake header; a `Session-Id` naming a
  disconnected session that enabled resuming resumes it (events held meanwhile are replayed, then a
  playerUpdate per player; playerUpdates are not held); any other connection gets a new session.
* `encoded` is lavaplayer's binary track format (version 3) in base64 and, as on the server, carries
  the track's current position; decodetrack reads any such track, catalogued or not.

* Voice (PlayerRestHandler 4.2.x, SocketContext.WsEventHandler, lavaplayer): a voice state needs token,
  endpoint, sessionId and channelId (400 otherwise); complete, it counts as connected, and it can be
  closed (`close_voice`: WebSocketClosedEvent + playerUpdate connected:false) or drop silently
  (`drop_voice`). A track's position advances only while voice is connected and it is unpaused, as
  lavaplayer's position moves only while frames are pulled. A track nobody pulls audio from for
  `cleanup_threshold` s ends with "cleanup" (DefaultAudioPlayer.checkCleanup, 60 s); a track added
  with `stuck=True` sends one TrackStuckEvent `stuck_threshold` s after audio starts and never ends.
* Timers: a playerUpdate for each player with a track every `player_update_interval` s (5 s,
  ServerConfig.playerUpdateInterval) and stats every `stats_interval` s (60 s, StatsCollector).
* REST beyond players: /v4/info, /version (text), /v4/stats (frameStats null), GET decodetrack,
  POST /v4/decodetracks, /v4/routeplanner/status (204: no route planner). `empty` loads carry
  `data: null` (the protocol's LoadResult serializer).
* Failure knobs: `reject_patches` (player PATCHes answered with an error status), `forget_session`
  (REST 404 "Session not found" while the websocket stays open), `down(forget=True)` (a restart).

Left out: audio and Discord itself, the effect of filters (stored and echoed), route planner
contents, plugins.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import re
import secrets
import socket
import string
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Self
from urllib.parse import parse_qsl

import uvicorn

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol as _WebSockets
except ImportError:  # uvicorn < 0.35
    from uvicorn.protocols.websockets.websockets_impl import WebSocketProtocol as _WebSockets

VERSION = "4.2.2"
SEARCH_PREFIXES = ("ytsearch:", "ytmsearch:", "scsearch:")
ERROR_PREFIX = "error:"  # loadtracks of "error:<message>" or "ytsearch:error:<message>" fails
END_REASONS = ("finished", "loadFailed", "stopped", "replaced", "cleanup")
_INFO_KEYS = (
    "identifier",
    "isSeekable",
    "author",
    "length",
    "isStream",
    "position",
    "title",
    "uri",
    "artworkUrl",
    "isrc",
    "sourceName",
)


def _utf(text: str) -> bytes:  # java.io.DataOutput.writeUTF: modified UTF-8 after a 2-byte length
    raw, out = text.encode("utf-16-be", "surrogatepass"), bytearray()
    for unit in struct.unpack(f">{len(raw) // 2}H", raw):
        if 0 < unit < 0x80:
            out.append(unit)
        elif unit < 0x800:
            out += bytes((0xC0 | unit >> 6, 0x80 | unit & 0x3F))
        else:
            out += bytes((0xE0 | unit >> 12, 0x80 | unit >> 6 & 0x3F, 0x80 | unit & 0x3F))
    return struct.pack(">H", len(out)) + out


def encode_track(info: dict[str, Any]) -> str:
    """lavaplayer's encodeTrack, TRACK_INFO_VERSION 3, with no source-specific fields."""
    optional = [
        b"\x00" if info[key] is None else b"\x01" + _utf(info[key]) for key in ("uri", "artworkUrl", "isrc")
    ]
    body = b"".join(
        [
            b"\x03",
            _utf(info["title"]),
            _utf(info["author"]),
            struct.pack(">q", info["length"]),
            _utf(info["identifier"]),
            struct.pack(">?", info["isStream"]),
            *optional,
            _utf(info["sourceName"]),
            struct.pack(">q", info["position"]),
        ]
    )
    return base64.b64encode(struct.pack(">I", len(body) | 1 << 30) + body).decode()


def decode_track(encoded: str) -> dict[str, Any]:
    """The Track Info in an encoded track (format versions 1 to 3); ValueError if there is none."""
    data, at = base64.b64decode(encoded, validate=True), 0

    def take(n: int) -> bytes:
        nonlocal at
        if at + n > len(data):
            raise ValueError("truncated track")
        at += n
        return data[at - n : at]

    def utf() -> str:
        raw = take(struct.unpack(">H", take(2))[0]).replace(b"\xc0\x80", b"\x00")
        return raw.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass").decode("utf-16")

    version = take(1)[0] if struct.unpack(">I", take(4))[0] >> 30 & 1 else 1
    info: dict[str, Any] = {
        "title": utf(),
        "author": utf(),
        "length": struct.unpack(">q", take(8))[0],
        "identifier": utf(),
        "isStream": take(1) != b"\x00",
    }
    for key, since in (("uri", 2), ("artworkUrl", 3), ("isrc", 3)):
        info[key] = utf() if version >= since and take(1) != b"\x00" else None
    info.update(sourceName=utf(), position=struct.unpack(">q", data[-8:])[0], isSeekable=not info["isStream"])
    return {key: info[key] for key in _INFO_KEYS}


def track_json(info: dict[str, Any], position: int = 0, user_data: dict | None = None) -> dict[str, Any]:
    info = {**info, "position": position}
    return {"encoded": encode_track(info), "info": info, "pluginInfo": {}, "userData": user_data or {}}


class _Text(str):
    """A REST answer sent as text/plain."""


_NO_CONTENT = object()


class _WebSocketProtocol(_WebSockets):
    """uvicorn's, marking a refused handshake (websocket.http.response) complete: uvicorn 0.54 does not,
    then logs a spurious "ASGI callable returned without completing handshake" error."""

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(eq=False)
class Session:
    id: str
    user_id: str
    client_name: str | None
    resuming: bool = False
    timeout: int = 60  # seconds
    queue: asyncio.Queue | None = None  # the open connection's outbox; None while disconnected
    backlog: list = field(default_factory=list)  # events held for a resume
    players: dict[str, Player] = field(default_factory=dict)
    expiry: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class Player:
    session: Session
    guild: str
    info: dict[str, Any] | None = None  # the playing track's Track Info, or None
    user_data: dict = field(default_factory=dict)
    volume: int = 100
    paused: bool = False
    voice: dict[str, Any] | None = None
    connected: bool = False
    filters: dict = field(default_factory=dict)
    end_time: int | None = None
    offset: int = 0  # the position (ms) at `anchor` (time.monotonic())
    anchor: float = 0.0
    timer: asyncio.TimerHandle | None = None
    cleanup: asyncio.TimerHandle | None = None
    stuck: bool = False  # the playing track gets stuck as soon as audio starts
    stuck_timer: asyncio.TimerHandle | None = None

    @property
    def pulling(self) -> bool:
        """Whether audio frames are pulled: voice connected, a track, not paused, not stuck."""
        return bool(self.info and not self.paused and self.connected and not self.stuck)

    def set_connected(self, connected: bool) -> None:
        self.seek(self.position())
        self.connected = connected

    def position(self) -> int:
        if not self.pulling:
            return self.offset
        moved = self.offset + int((time.monotonic() - self.anchor) * 1000)
        return moved if self.info["isStream"] else min(moved, self.info["length"])

    def seek(self, position: int) -> None:
        self.offset, self.anchor = max(0, int(position)), time.monotonic()


def _on_loop(method: Callable) -> Callable:
    """Run a control method on the node's loop thread (from any thread) and return its result."""

    @functools.wraps(method)
    def call(self: LavalinkStandin, *args: Any, **kwargs: Any) -> Any:
        if self._loop is None or not self._loop.is_running() or threading.current_thread() is self._thread:
            return method(self, *args, **kwargs)

        async def run() -> Any:
            return method(self, *args, **kwargs)

        return self._await(run())

    return call


class LavalinkStandin:
    """A Lavalink v4 node on 127.0.0.1:<free port>, served by uvicorn on a thread with its own loop."""

    def __init__(
        self,
        password: str = "youshallnotpass",
        *,
        player_update_interval: float | None = 5.0,
        stats_interval: float | None = 60.0,
        cleanup_threshold: float = 60.0,
        stuck_threshold: float = 10.0,
        require_channel_id: bool = True,
    ) -> None:
        self.password = password
        self.player_update_interval = player_update_interval  # the server's default is 5 s
        self.stats_interval = stats_interval  # StatsCollector: every minute
        self.cleanup_threshold = cleanup_threshold  # lavaplayer's DEFAULT_CLEANUP_THRESHOLD, 1 min
        self.stuck_threshold = stuck_threshold  # Lavalink's trackStuckThresholdMs, 10 s
        self.require_channel_id = require_channel_id  # as Lavalink >= 4.2 does (voice.channelId)
        self.rejecting: list[tuple[int, str]] = []  # answers the next player PATCHes get instead
        self.stalling = 0.0  # seconds the next rejected player PATCH waits before its answer
        self.rejecting_sessions: list[tuple[int, str]] = []  # ... and the next session PATCHes
        self.rest_delay = 0.0  # seconds every REST answer waits
        self.port = 0
        self._catalog: dict[str, dict[str, Any]] = {}  # identifier or uri -> load result
        self._tracks: list[dict[str, Any]] = []  # searchable Track Infos
        self._stuck: set[str] = set()  # identifiers of tracks that get stuck
        self._sessions: dict[str, Session] = {}
        self._calls: list[dict[str, Any]] = []
        self._frames: list[tuple[str, dict]] = []
        self._down = self._refusing = False
        self._started = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v4/websocket"

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lavalink-standin", daemon=True)
        self._thread.start()
        try:
            self._await(self._listen())
        except BaseException:
            self.stop()
            raise
        if self.player_update_interval:
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._tick()))
        if self.stats_interval:
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._stats_tick()))
        return self

    def stop(self) -> None:
        """Cut every connection, forget every session, free the port and end the thread."""

        async def final() -> None:
            await self._close(forget=True)
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread is not None and self._thread.is_alive():
            self._await(final())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _await(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(15)

    async def _listen(self) -> None:
        # IPPROTO_TCP spelled out, or asyncio does not set TCP_NODELAY (and each answer waits 40 ms)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self,
            lifespan="off",
            ws=_WebSocketProtocol,
            log_config=None,
            log_level=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )  # leaves logging alone
        self._server = uvicorn.Server(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
            await asyncio.sleep(0.01)

    async def _close(self, *, forget: bool, stop: bool = True) -> None:
        self._abort_connections()
        if stop and self._server is not None:
            self._server.should_exit = True
            await self._serving
            self._server = None
        for _ in range(200):  # until every websocket handler has seen its disconnect
            if all(s.queue is None for s in self._sessions.values()):
                break
            await asyncio.sleep(0.01)
        for session in list(self._sessions.values()) if forget else ():
            self._shutdown(session)

    def _abort_connections(self) -> None:
        for connection in list(self._server.server_state.connections if self._server else ()):
            connection.transport.abort()  # no close frame: the client sees 1006, as from a dead node

    # ---------------------------------------------------------------- control: the catalog
    @_on_loop
    def add_track(
        self,
        identifier: str,
        title: str,
        author: str = "Stand-in Artist",
        length: int = 180_000,
        *,
        uri: str | None = None,
        artwork_url: str | None = None,
        isrc: str | None = None,
        source: str = "youtube",
        stream: bool = False,
        stuck: bool = False,
    ) -> dict[str, Any]:
        """`identifier` and `uri` load this track; searches find it by words of its title and author.
        A `stuck` track never gives audio: `stuck_threshold` s after it starts with voice, one
        TrackStuckEvent, and no end."""
        if stuck:
            self._stuck.add(identifier)
        uri = uri or f"https://www.youtube.com/watch?v={identifier}"
        info = {
            "identifier": identifier,
            "isSeekable": not stream,
            "author": author,
            "length": length,
            "isStream": stream,
            "position": 0,
            "title": title,
            "uri": uri,
            "artworkUrl": artwork_url,
            "isrc": isrc,
            "sourceName": source,
        }
        self._tracks.append(info)
        self._catalog[identifier] = self._catalog[uri] = {"loadType": "track", "data": track_json(info)}
        return self._catalog[uri]["data"]

    @_on_loop
    def add_playlist(
        self, identifier: str, name: str, identifiers: list[str], selected: int = -1, uri: str | None = None
    ) -> dict[str, Any]:
        data = {
            "info": {"name": name, "selectedTrack": selected},
            "pluginInfo": {},
            "tracks": [self._catalog[i]["data"] for i in identifiers],
        }
        self._catalog[identifier] = self._catalog[uri or identifier] = {"loadType": "playlist", "data": data}
        return data

    @_on_loop
    def fail_identifier(
        self, identifier: str, message: str = "Something went wrong", severity: str = "common"
    ) -> None:
        self._catalog[identifier] = {"loadType": "error", "data": self._exception(message, severity)}

    @staticmethod
    def _exception(message: str, severity: str) -> dict[str, Any]:
        cause = f"com.sedmelluq.discord.lavaplayer.tools.FriendlyException: {message}"
        return {
            "message": message,
            "severity": severity,
            "cause": cause,
            "causeStackTrace": f"{cause}\n\tat lavalink_standin",
        }

    def _load(self, identifier: str) -> dict[str, Any]:
        if identifier in self._catalog:
            return self._catalog[identifier]
        prefix = next((p for p in SEARCH_PREFIXES if identifier.startswith(p)), "")
        query = identifier[len(prefix) :]
        if query.startswith(ERROR_PREFIX):
            message = query[len(ERROR_PREFIX) :] or "Failed"
            return {"loadType": "error", "data": self._exception(message, "fault")}
        words = query.lower().split()
        found = [t for t in self._tracks if all(w in f"{t['title']} {t['author']}".lower() for w in words)]
        if prefix and words and found:
            return {"loadType": "search", "data": [track_json(info) for info in found]}
        return {"loadType": "empty", "data": None}

    # ---------------------------------------------------------------- control: observing
    @_on_loop
    def calls(self, method: str | None = None, path: str = "") -> list[dict[str, Any]]:
        """Requests received, in order: {method, path, query, json, headers (lower-case names), status};
        websocket handshakes are there too (GET /v4/websocket, status 101 when accepted)."""
        return [dict(c) for c in self._calls if method in (None, c["method"]) and c["path"].startswith(path)]

    @_on_loop
    def frames(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Every frame the node sent or held for a resume, in order."""
        return [frame for sid, frame in self._frames if session_id in (None, sid)]

    @_on_loop
    def clear_calls(self) -> None:
        self._calls.clear()
        self._frames.clear()

    @_on_loop
    def sessions(self) -> list[dict[str, Any]]:
        return [
            {
                "sessionId": s.id,
                "userId": s.user_id,
                "clientName": s.client_name,
                "resuming": s.resuming,
                "timeout": s.timeout,
                "connected": s.queue is not None,
                "guilds": list(s.players),
            }
            for s in self._sessions.values()
        ]

    def connected_session(self) -> str | None:
        """The id of the newest connected session, or None."""
        return next((s["sessionId"] for s in reversed(self.sessions()) if s["connected"]), None)

    @_on_loop
    def player(self, guild: str, session_id: str | None = None) -> dict[str, Any] | None:
        """The Player object GET would answer for the guild, or None."""
        found = self._find(guild, session_id, need_track=False, missing_ok=True)
        return found and self._player_json(found)

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll `predicate` until it is truthy and return its value (sync tests)."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise TimeoutError("lavalink stand-in: condition not met")
            time.sleep(0.01)
        return value

    async def wait_until_async(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """The same without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise TimeoutError("lavalink stand-in: condition not met")
            await asyncio.sleep(0.01)
        return value

    # ---------------------------------------------------------------- control: events
    @_on_loop
    def finish_track(self, guild: str, reason: str = "finished", session_id: str | None = None) -> dict:
        """TrackEndEvent(reason) for the playing track, which the player then no longer has."""
        if reason not in END_REASONS:
            raise ValueError(reason)
        return self._end(self._find(guild, session_id), reason)

    @_on_loop
    def fail_track(
        self,
        guild: str,
        message: str = "Something broke",
        severity: str = "fault",
        end_reason: str | None = "loadFailed",
        session_id: str | None = None,
    ) -> None:
        """TrackExceptionEvent, then (unless end_reason is None) TrackEndEvent(end_reason)."""
        player = self._find(guild, session_id)
        self._event(player, "TrackExceptionEvent", exception=self._exception(message, severity))
        if end_reason:
            self._end(player, end_reason)

    @_on_loop
    def emit_event(self, guild: str, kind: str, session_id: str | None = None, **fields: Any) -> None:
        """TrackStartEvent, TrackStuckEvent (thresholdMs=...), then a playerUpdate, or WebSocketClosedEvent
        (code=4006, reason=..., byRemote=True), then a playerUpdate with connected false."""
        player = self._find(guild, session_id, need_track=kind != "WebSocketClosedEvent")
        if kind == "WebSocketClosedEvent":
            player.set_connected(False)
            self._schedule_end(player)
            fields = {"code": 4006, "reason": "Your session is no longer valid.", "byRemote": True, **fields}
            self._send(player.session, {"op": "event", "type": kind, "guildId": guild, **fields})
        else:
            defaults = {"thresholdMs": 10_000} if kind == "TrackStuckEvent" else {}
            self._event(player, kind, **{**defaults, **fields})
        if kind != "TrackStartEvent":
            self._player_update(player)

    @_on_loop
    def emit_player_update(
        self, guild: str, position: int | None = None, session_id: str | None = None
    ) -> None:
        """A playerUpdate now, after moving the playing track to `position` if given."""
        player = self._find(guild, session_id, need_track=position is not None)
        if position is not None:
            player.seek(position)
            self._schedule_end(player)
        self._player_update(player)

    @_on_loop
    def emit(self, frame: dict[str, Any], session_id: str | None = None) -> None:
        """Send any frame as it is, to one session or to all."""
        for session in list(self._sessions.values()):
            if session_id in (None, session.id):
                self._send(session, frame)

    @_on_loop
    def close_voice(self, guild: str, code: int = 4006, reason: str = "Session is no longer valid.") -> None:
        """Discord closed the guild's voice websocket: WebSocketClosedEvent, then a playerUpdate with
        connected false (SocketContext.WsEventHandler.gatewayClosed). Audio stops."""
        self.emit_event(guild, "WebSocketClosedEvent", code=code, reason=reason, byRemote=True)

    @_on_loop
    def drop_voice(self, guild: str) -> None:
        """The voice connection stops without a close event: the next playerUpdates say connected false."""
        player = self._find(guild, None, need_track=False)
        player.set_connected(False)
        self._schedule_end(player)
        self._player_update(player)

    # ---------------------------------------------------------------- control: failures
    @_on_loop
    def reject_patches(
        self,
        status: int = 500,
        message: str = "Failed to connect to voice server",
        times: int = 1,
        *,
        session: bool = False,
        stall: float = 0.0,
    ) -> None:
        """The next `times` player PATCHes (or session PATCHes) are answered `status` with
        `message`, changing nothing; each after `stall` seconds (as a voice connect that blocks the
        request, then fails: a client's timeout sees no answer)."""
        (self.rejecting_sessions if session else self.rejecting).extend([(status, message)] * times)
        self.stalling = stall

    @_on_loop
    def forget_session(self, session_id: str) -> None:
        """The node no longer has the session (REST answers 404 "Session not found"), while its
        websocket is still open: the window before a client notices a restarted node."""
        session = self._sessions.pop(session_id)
        for guild in list(session.players):
            self._destroy(session, guild)

    @_on_loop
    def drop_connections(self, code: int | None = 1001) -> None:
        """Close every websocket with `code` (None: cut every TCP connection, the client sees 1006).
        Sessions that enabled resuming wait for a resume; the others end with their players."""
        if code is None:
            return self._abort_connections()
        for session in self._sessions.values():
            if session.queue is not None:
                session.queue.put_nowait(code)

    def down(self, *, refuse: bool = False, forget: bool = False) -> None:
        """Lose the node: every connection is cut (1006). Until up(), REST and handshakes are answered
        503, or with refuse=True the port refuses connections. forget=True: the node has lost every
        session and player, like a restarted process (resumes then fail)."""

        async def go_down() -> None:
            self._down, self._refusing = True, refuse
            await self._close(forget=forget, stop=refuse)

        self._await(go_down())

    def up(self) -> None:
        async def go_up() -> None:
            if self._refusing:
                await self._listen()
            self._down = self._refusing = False

        self._await(go_up())

    # ---------------------------------------------------------------- sessions, players, frames
    def _send(self, session: Session, frame: dict[str, Any]) -> None:
        if session.queue is not None:
            session.queue.put_nowait(frame)
        elif session.id in self._sessions:
            session.backlog.append(frame)
        else:
            return  # the session has ended: the frame is lost
        self._frames.append((session.id, frame))

    def _find(
        self, guild: str, session_id: str | None, need_track: bool = True, missing_ok: bool = False
    ) -> Player | None:
        for session in reversed(list(self._sessions.values())):
            player = session.players.get(guild)
            if session_id in (None, session.id) and player and (player.info or not need_track):
                return player
        if missing_ok:
            return None
        raise KeyError(f"no player{' with a track' if need_track else ''} for guild {guild}")

    def _state(self, player: Player) -> dict[str, Any]:
        connected = player.voice is not None and player.connected
        return {
            "time": int(time.time() * 1000),
            "position": player.position() if player.info else 0,
            "connected": connected,
            "ping": 12 if connected else -1,
        }

    def _track(self, player: Player) -> dict[str, Any]:
        return track_json(player.info, player.position(), player.user_data)

    def _player_json(self, player: Player) -> dict[str, Any]:
        return {
            "guildId": player.guild,
            "track": self._track(player) if player.info else None,
            "volume": player.volume,
            "paused": player.paused,
            "state": self._state(player),
            "voice": {
                "token": "",
                "endpoint": "",
                "sessionId": "",
                "channelId": None,
                **(player.voice or {}),
            },
            "filters": player.filters,
        }

    def _player_update(self, player: Player) -> None:
        if player.session.queue is not None:  # the server drops, not holds, these while a session is away
            frame = {"op": "playerUpdate", "guildId": player.guild, "state": self._state(player)}
            self._send(player.session, frame)

    def _event(self, player: Player, kind: str, **fields: Any) -> None:
        self._send(
            player.session,
            {"op": "event", "type": kind, "guildId": player.guild, "track": self._track(player), **fields},
        )

    def _end(self, player: Player, reason: str) -> dict[str, Any]:
        track = self._track(player)
        player.info, player.user_data, player.end_time, player.stuck = None, {}, None, False
        player.seek(0)
        self._schedule_end(player)
        self._send(
            player.session,
            {
                "op": "event",
                "type": "TrackEndEvent",
                "guildId": player.guild,
                "track": track,
                "reason": reason,
            },
        )
        return track

    def _play(self, player: Player, info: dict, position: int, user_data: dict) -> None:
        if player.info is not None:
            self._end(player, "replaced")
        player.info, player.user_data = info, user_data
        player.stuck = info["identifier"] in self._stuck
        player.seek(position)
        self._event(player, "TrackStartEvent")
        self._player_update(player)

    def _schedule_end(self, player: Player) -> None:
        """The timers of the player's track: its end, its cleanup without audio, getting stuck."""
        for timer in (player.timer, player.cleanup, player.stuck_timer):
            if timer:
                timer.cancel()
        player.timer = player.cleanup = player.stuck_timer = None
        if player.pulling and not player.info["isStream"]:
            end = min(player.end_time or player.info["length"], player.info["length"])
            delay = max(0, end - player.position()) / 1000
            player.timer = self._loop.call_later(delay, self._end, player, "finished")
        if player.info and not player.connected:  # nobody pulls frames (paused or not)
            player.cleanup = self._loop.call_later(self.cleanup_threshold, self._end, player, "cleanup")
        if player.info and player.stuck and player.connected and not player.paused:
            player.stuck_timer = self._loop.call_later(self.stuck_threshold, self._get_stuck, player)

    def _get_stuck(self, player: Player) -> None:
        player.stuck_timer = None
        self._event(player, "TrackStuckEvent", thresholdMs=int(self.stuck_threshold * 1000))
        self._player_update(player)

    def _disconnected(self, session: Session) -> None:
        session.queue = None
        if session.resuming:
            session.expiry = self._loop.call_later(session.timeout, self._shutdown, session)
        else:
            self._shutdown(session)

    def _shutdown(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        if session.expiry:
            session.expiry.cancel()
        for guild in list(session.players):
            self._destroy(session, guild)

    def _destroy(self, session: Session, guild: str) -> None:
        player = session.players.pop(guild, None)
        if player and player.info:
            self._end(player, "stopped")
        for timer in (player.timer, player.cleanup, player.stuck_timer) if player else ():
            if timer:
                timer.cancel()

    def _stats(self) -> dict[str, Any]:
        players = [p for s in self._sessions.values() for p in s.players.values()]
        memory = 64 << 20
        return {
            "players": len(players),
            "playingPlayers": sum(bool(p.info and not p.paused) for p in players),
            "uptime": int((time.time() - self._started) * 1000),
            "memory": {"free": memory, "used": memory, "allocated": 2 * memory, "reservable": 8 * memory},
            "cpu": {"cores": 4, "systemLoad": 0.1, "lavalinkLoad": 0.01},
        }

    async def _stats_tick(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval)
            for session in [s for s in self._sessions.values() if s.queue is not None]:
                self._send(session, {"op": "stats", **self._stats(), "frameStats": None})

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.player_update_interval)
            for player in [p for s in self._sessions.values() for p in s.players.values() if p.info]:
                self._player_update(player)

    # ---------------------------------------------------------------- ASGI
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        call = {
            "method": scope.get("method", "GET"),
            "path": scope["path"],
            "headers": headers,
            "query": dict(parse_qsl(scope["query_string"].decode())),
            "json": None,
            "status": None,
        }
        self._calls.append(call)
        if scope["type"] == "websocket":
            await self._websocket(call, receive, send)
        else:
            await self._http(call, receive, send)

    async def _websocket(self, call: dict, receive: Callable, send: Callable) -> None:
        await receive()  # websocket.connect
        headers, user_id = call["headers"], call["headers"].get("user-id", "")
        call["status"] = (
            503
            if self._down
            else 401
            if headers.get("authorization") != self.password
            else 400
            if not user_id.isdigit() or int(user_id) == 0
            else 101
        )
        if call["status"] != 101:
            await send({"type": "websocket.http.response.start", "status": call["status"], "headers": []})
            return await send({"type": "websocket.http.response.body", "body": b""})
        session = self._sessions.get(headers.get("session-id", ""))
        resumed = session is not None and session.queue is None
        if session is None or not resumed:
            session_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(16))
            session = self._sessions[session_id] = Session(session_id, user_id, headers.get("client-name"))
        elif session.expiry:
            session.expiry.cancel()
        resumed_header = (b"session-resumed", b"true" if resumed else b"false")
        await send({"type": "websocket.accept", "headers": [resumed_header, (b"lavalink-api-version", b"4")]})
        queue = session.queue = asyncio.Queue()
        self._send(session, {"op": "ready", "resumed": resumed, "sessionId": session.id})
        if resumed:
            for frame in session.backlog:
                queue.put_nowait(frame)
            session.backlog.clear()
            for player in session.players.values():
                self._player_update(player)
        else:
            self._send(session, {"op": "stats", **self._stats(), "frameStats": None})
        writer = asyncio.create_task(self._write(queue, send))
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass  # a v4 node ignores what clients send
        finally:
            writer.cancel()
            if session.queue is queue:
                self._disconnected(session)

    @staticmethod
    async def _write(queue: asyncio.Queue, send: Callable) -> None:
        try:
            while not isinstance(frame := await queue.get(), int):
                await send({"type": "websocket.send", "text": json.dumps(frame)})
            await send({"type": "websocket.close", "code": frame})
        except (OSError, RuntimeError):  # the client is gone
            pass

    async def _http(self, call: dict, receive: Callable, send: Callable) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        try:
            call["json"] = json.loads(body) if body else None
        except ValueError:
            call["json"] = body.decode(errors="replace")
        await asyncio.sleep(self.rest_delay)
        if self.stalling and self.rejecting and call["method"] == "PATCH" and "/players/" in call["path"]:
            await asyncio.sleep(self.stalling)
        result = None
        try:
            if self._down:
                raise HttpError(503, "The node is down")
            authorization = call["headers"].get("authorization")
            call["status"] = 401 if authorization is None else 403 if authorization != self.password else 200
            if call["status"] == 200:
                call["status"], result = self._route(
                    call["method"], call["path"], call["query"], call["json"]
                )
        except HttpError as error:
            call["status"] = error.status
            result = {
                "timestamp": int(time.time() * 1000),
                "status": error.status,
                "error": HTTPStatus(error.status).phrase,
                "message": str(error),
                "path": call["path"],
            }
            if call["query"].get("trace") == "true":
                result["trace"] = f"org.springframework.web.server.ResponseStatusException: {error}"
        text = isinstance(result, _Text)  # Spring answers a String as text/plain
        await send(
            {
                "type": "http.response.start",
                "status": call["status"],
                "headers": [
                    (b"content-type", b"text/plain;charset=UTF-8" if text else b"application/json"),
                    (b"lavalink-api-version", b"4"),
                ],
            }
        )
        body = b"" if result is None else result.encode() if text else json.dumps(result).encode()
        await send({"type": "http.response.body", "body": body})

    def _route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        players = r"/v4/sessions/(\w+)/players"
        routes: list[tuple[str, str, Callable]] = [
            ("GET", r"/v4/info", self._info),
            ("GET", r"/version", lambda: _Text(VERSION)),  # InfoRestHandler.version
            ("GET", r"/v4/stats", lambda: {**self._stats(), "frameStats": None}),  # StatsCollector.getStats
            ("POST", r"/v4/decodetracks", lambda: self._decode_all(body)),
            ("GET", r"/v4/routeplanner/status", lambda: _NO_CONTENT),  # no route planner configured
            ("GET", r"/v4/loadtracks", lambda: self._load(self._param(query, "identifier"))),
            (
                "GET",
                r"/v4/decodetrack",
                lambda: self._decode(query.get("encodedTrack") or self._param(query, "track")),
            ),
            ("GET", players, lambda s: [self._player_json(p) for p in self._session(s).players.values()]),
            ("GET", players + r"/(\d+)", self._get_player),
            ("PATCH", players + r"/(\d+)", lambda s, g: self._patch_player(self._session(s), g, body, query)),
            ("DELETE", players + r"/(\d+)", lambda s, g: self._destroy(self._session(s), g)),
            ("PATCH", r"/v4/sessions/(\w+)", lambda s: self._patch_session(self._session(s), body)),
        ]
        matched = [
            (m, fn, match.groups()) for m, pattern, fn in routes if (match := re.fullmatch(pattern, path))
        ]
        for route_method, fn, groups in matched:
            if route_method == method:
                result = fn(*groups)
                return (204, None) if method == "DELETE" or result is _NO_CONTENT else (200, result)
        raise HttpError(405, "Request method not supported") if matched else HttpError(404, "Not Found")

    @staticmethod
    def _param(query: dict, name: str) -> str:
        if name not in query:
            raise HttpError(
                400, f"Required request parameter '{name}' for method parameter type String is not present"
            )
        return query[name]

    def _decode_all(self, body: Any) -> list[dict[str, Any]]:
        """AudioLoaderRestHandler.decodeTracks: a JSON list of encoded tracks."""
        if not isinstance(body, list) or not all(isinstance(t, str) for t in body):
            raise HttpError(400, "Failed to read request")
        if not body:
            raise HttpError(400, "No tracks to decode provided")
        return [self._decode(encoded) for encoded in body]

    @staticmethod
    def _decode(encoded: str) -> dict[str, Any]:
        try:
            return {"encoded": encoded, "info": decode_track(encoded), "pluginInfo": {}, "userData": {}}
        except (ValueError, struct.error, UnicodeDecodeError) as error:
            raise HttpError(500, f"Failed to decode track: {error}") from None

    def _info(self) -> dict[str, Any]:
        major, minor, patch = (int(part) for part in VERSION.split("."))
        built = int(self._started * 1000)
        return {
            "version": {
                "semver": VERSION,
                "major": major,
                "minor": minor,
                "patch": patch,
                "preRelease": None,
                "build": None,
            },
            "buildTime": built,
            "git": {"branch": "main", "commit": "standin", "commitTime": built},
            "jvm": "21.0.0",
            "lavaplayer": "2.2.4",
            "sourceManagers": ["youtube", "soundcloud", "http"],
            "filters": [
                "volume",
                "equalizer",
                "karaoke",
                "timescale",
                "tremolo",
                "vibrato",
                "distortion",
                "rotation",
                "channelMix",
                "lowPass",
            ],
            "plugins": [],
        }

    def _session(self, session_id: str) -> Session:
        if session_id not in self._sessions:
            raise HttpError(404, "Session not found")
        return self._sessions[session_id]

    def _get_player(self, session_id: str, guild: str) -> dict[str, Any]:
        player = self._session(session_id).players.get(guild)
        if player is None:
            raise HttpError(404, "Player not found")
        return self._player_json(player)

    def _patch_session(self, session: Session, body: Any) -> dict[str, Any]:
        if self.rejecting_sessions:
            status, message = self.rejecting_sessions.pop(0)
            raise HttpError(status, message)
        body = body if isinstance(body, dict) else {}
        if isinstance(body.get("resuming"), bool):
            session.resuming = body["resuming"]
        if isinstance(body.get("timeout"), int):
            session.timeout = body["timeout"]
        return {"resuming": session.resuming, "timeout": session.timeout}

    def _patch_player(self, session: Session, guild: str, body: Any, query: dict) -> dict[str, Any]:
        """PlayerRestHandler.patchPlayer, in its order."""
        if not isinstance(body, dict):
            raise HttpError(400, "Failed to read request")
        legacy = {
            "encoded" if k == "encodedTrack" else k: body[k]
            for k in ("encodedTrack", "identifier")
            if k in body
        }  # the deprecated spelling
        if "track" in body and legacy:
            raise HttpError(400, "Cannot specify both track and encodedTrack/identifier")
        track = legacy or (body["track"] if isinstance(body.get("track"), dict) else {})
        new_track = "encoded" in track or "identifier" in track
        if "encoded" in track and "identifier" in track:
            raise HttpError(400, "Cannot specify both encodedTrack and identifier")
        voice = body.get("voice")
        needed = ("token", "endpoint", "sessionId") + (("channelId",) if self.require_channel_id else ())
        if self.rejecting:
            status, message = self.rejecting.pop(0)
            raise HttpError(status, message)
        if voice is not None and not all(isinstance(voice.get(k), str) and voice[k].strip() for k in needed):
            raise HttpError(400, "token, endpoint, sessionId and channelId must be provided in voice state")
        if isinstance(body.get("endTime"), int) and body["endTime"] <= 0:
            raise HttpError(400, "End time must be greater than 0")
        player = session.players.setdefault(guild, Player(session, guild))
        if voice is not None:  # SocketContext: the voice connection, then playerUpdate on gatewayReady
            player.voice = dict(voice)
            player.set_connected(True)
            self._player_update(player)
        if "paused" in body and not new_track and player.paused != bool(body["paused"]):
            player.seek(player.position())
            player.paused = bool(body["paused"])
        if "userData" in track and not new_track and player.info:
            player.user_data = track["userData"]
        if "volume" in body:
            player.volume = max(0, min(1000, int(body["volume"])))
        if "position" in body and not new_track and player.info:
            player.seek(body["position"])
            self._player_update(player)
        if "endTime" in body and not new_track:
            player.end_time = body["endTime"]
        if "filters" in body:
            player.filters = body["filters"]
            self._player_update(player)
        if new_track and not (query.get("noReplace") == "true" and player.info):
            player.paused = bool(body.get("paused", False))
            info = (
                self._playable(track["identifier"])
                if "identifier" in track
                else (track["encoded"] and self._decode(track["encoded"])["info"])
            )
            if info:
                player.end_time = body.get("endTime")
                self._play(player, info, int(body.get("position", 0)), track.get("userData") or {})
            elif player.info:
                self._end(player, "stopped")
        self._schedule_end(player)
        return self._player_json(player)

    def _playable(self, identifier: str) -> dict[str, Any]:
        loaded = self._load(identifier)
        if loaded["loadType"] == "error":
            raise HttpError(400, loaded["data"]["message"])
        if loaded["loadType"] != "track":
            raise HttpError(
                400,
                "No matches found for identifier"
                if loaded["loadType"] == "empty"
                else "Cannot play a playlist or search result",
            )
        return loaded["data"]["info"]


@contextmanager
def lavalink_standin(**options: Any) -> Iterator[LavalinkStandin]:
    """`with lavalink_standin() as node:` gives a started node and stops it at the end."""
    node = LavalinkStandin(**options).start()
    try:
        yield node
    finally:
        node.stop()
