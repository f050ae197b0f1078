"""An example bot against the Xenon partner API and the Elixir Music API, with plain httpx and
websockets: what a real integration must survive, tested in ``tests/`` against the sandbox
(``xenon_elixir_sandbox`` fixture) without waiting on real time.

* :class:`XenonPartner` reads mappers (backing off on a 429 by its ``retry_after``, retrying a
  503 after its ``Retry-After`` and a dropped connection) and follows the loader stream, resuming
  with ``?since=`` after a close (1013: it fell behind; 4029: connecting too often) or a drop,
  and resynchronising when the stream says ``reset``.
* :class:`ElixirClient` joins, plays, and waits for the next track on the player stream.

Every wait goes through ``sleep`` (``time.sleep`` / ``asyncio.sleep`` by default), so a test can
pass one that moves the sandbox's clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

RETRYABLE = (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError, httpx.WriteError)
"""A connection that broke before an answer: safe to retry for a read."""


class XenonPartner:
    """A Xenon partner bot: its token, the API's base URL (``http://host:port/api``)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        attempts: int = 5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.sleep = sleep
        self.async_sleep = async_sleep
        self.attempts = attempts
        self.http = httpx.Client(base_url=self.base_url, headers={"Authorization": token}, timeout=10)
        self.seq: int | None = None
        """The newest loader event seen: where a resumed stream starts (``?since=``)."""
        self.events: list[dict[str, Any]] = []
        self.resyncs = 0
        """Times the stream said ``reset`` (events were lost: re-read what matters)."""

    def mapper(
        self, target: str, *, source: str | None = None, backup: str | None = None
    ) -> dict[str, Any] | None:
        """The ids of ``source`` (or ``backup``) in ``target``; ``None`` when there is no mapper."""
        params = {
            "target": target,
            **({"source": source} if source else {}),
            **({"backup": backup} if backup else {}),
        }
        for _ in range(self.attempts):
            try:
                answer = self.http.get("/mappers", params=params)
            except RETRYABLE:
                self.sleep(1.0)
                continue
            if answer.status_code == 429:  # exact: come back when the window has room
                self.sleep(answer.json()["retry_after"] / 1000)
                continue
            if answer.status_code == 503:
                self.sleep(float(answer.headers.get("Retry-After", "1")))
                continue
            if answer.status_code == 404:
                return None
            answer.raise_for_status()
            return answer.json()
        raise RuntimeError(f"GET /mappers failed {self.attempts} times")

    async def follow_loaders(self, until: Callable[[list[dict[str, Any]]], bool]) -> None:
        """Follow the loader stream until ``until(events)``, resuming after every close or drop
        where it left off. A 4001 (the token was revoked) ends it: retrying cannot help."""
        ws_url = self.base_url.replace("http", "ws", 1) + "/loaders/ws"
        while not until(self.events):
            url = ws_url if self.seq is None else f"{ws_url}?since={self.seq}"
            try:
                async with connect(url, additional_headers={"Authorization": self.token}) as socket:
                    async for raw in socket:
                        self._heard(json.loads(raw))
                        if until(self.events):
                            return
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                if code == 4001:
                    raise
                if code == 4029:  # connecting too often: the reason says for how long
                    await self.async_sleep(json.loads(closed.rcvd.reason)["retry_after"] / 1000)
                elif code != 1013:  # 1013 (fell behind): resume at once; a drop: a short pause
                    await self.async_sleep(1.0)
            except (InvalidHandshake, OSError):  # refused, or dropped before it opened
                await self.async_sleep(1.0)

    def _heard(self, event: dict[str, Any]) -> None:
        if event["event"] == "reset":  # the log no longer holds what we missed: resynchronise
            self.resyncs += 1
        elif event["event"] != "status":
            self.events.append(event)
        self.seq = event["seq"]


class ElixirClient:
    """An Elixir Music API client for one guild and user (``http://host:port/api/v1``)."""

    def __init__(self, base_url: str, key: str, guild: str, user: str) -> None:
        self.base_url = f"{base_url.rstrip('/')}/{guild}"
        self.user = user
        self.http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    def _post(self, action: str, **body: Any) -> Any:
        answer = self.http.post(f"/{action}", json={"user": self.user, **body})
        answer.raise_for_status()
        return answer.json()

    def join(self, channel: str) -> None:
        self._post("join", channel=channel)

    def play(self, query: str) -> list[dict[str, Any]]:
        """Queue what ``query`` finds; the tracks queued."""
        return self._post("play", query=query)

    def now_playing(self) -> dict[str, Any] | None:
        answer = self.http.get("/nowplaying")
        return None if answer.status_code == 410 else answer.raise_for_status().json()

    async def next_track(self) -> dict[str, Any] | None:
        """Wait on the player stream until the current track changes; the new one (``None``:
        the queue ran out)."""
        url = self.base_url.replace("http", "ws", 1) + "/player"
        async with connect(url) as socket:
            first = json.loads(await socket.recv())
            playing = first["track"] and first["track"]["identifier"]
            async for raw in socket:
                track = json.loads(raw)["track"]
                if (track and track["identifier"]) != playing:
                    return track
        return None
