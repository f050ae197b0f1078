"""Real Redis and PostgreSQL servers for tests: each one a child process of the test run, on a free
loopback port, in a temporary directory of its own, stopped by its PID. The machine's own services
(Redis on 6379, PostgreSQL on 5432) are never used.

Both speak to their server over a raw socket (RESP for Redis, the v3 frontend/backend protocol for
PostgreSQL), so neither the redis nor the asyncpg package is needed to start, check or reset one.

PostgreSQL refuses to run as root: when the tests run as root, initdb and postgres run as the
``postgres`` system user (Debian's package creates it), or as ``nobody`` when there is none, through
``subprocess.Popen(user=, group=, extra_groups=[])`` -- no wrapper process, so ``pid`` is the
postmaster itself. Their directory is made with ``mkdtemp`` and handed to that user (pytest's
``tmp_path`` sits under a root-only folder they could not enter). ``initdb`` runs once per test
process into a template data directory; each server starts from a ``cp -a`` of it. Servers keep their
files in /dev/shm when it has room (see ``scratch_root``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, Self

import pytest

REDIS_MISSING = "redis-server not installed (apt-get install redis-server)"
POSTGRES_MISSING = "PostgreSQL server binaries (initdb, postgres) not found (apt-get install postgresql)"


# --------------------------------------------------------------------------------------------------
# Finding the binaries


def find_redis_server() -> str | None:
    """The ``redis-server`` binary: on PATH, else where Debian and source builds put it."""
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3]) or (0,)


def _pg_bin_version(directory: Path) -> tuple[int, ...] | None:
    """The version of the PostgreSQL server in ``directory``, or None if it lacks initdb or postgres."""
    if not all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres")):
        return None
    if directory.parent.parent == Path("/usr/lib/postgresql"):  # Debian: /usr/lib/postgresql/<version>/bin
        return _version_key(directory.parent.name)
    try:
        output = subprocess.run(
            [str(directory / "postgres"), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+(?:\.\d+)*)", output)
    return _version_key(match.group(1)) if match else None


def find_postgres_bin() -> Path | None:
    """The ``bin`` folder of the newest PostgreSQL server here (one holding ``initdb`` and ``postgres``):
    Debian's /usr/lib/postgresql/<version>/bin folders and the folders PATH leads to."""
    candidates: set[Path] = set(Path("/usr/lib/postgresql").glob("*/bin"))
    for name in ("postgres", "initdb"):
        found = shutil.which(name)
        if found:
            candidates.add(Path(found).resolve().parent)
    best: tuple[tuple[int, ...], Path] | None = None
    for directory in candidates:
        version = _pg_bin_version(directory)
        if version is not None and (best is None or version > best[0]):
            best = (version, directory)
    return best[1] if best else None


# --------------------------------------------------------------------------------------------------
# Ports and processes

_RANDOM = random.SystemRandom()  # unaffected by a test seeding ``random``


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_LOWEST_PORT = 15_000
_next_port = [-1]
"""Where this process's next port is looked for in :func:`_own_ports` (they are taken in turn,
from a random start: a port comes round again only after every other one)."""


def _own_ports() -> range:
    """This test process's loopback ports: below the kernel's ephemeral range (never handed out to
    outgoing connections, so a server stopped or killed in the middle of a test still finds its
    port free when it starts again on it), and each pytest-xdist worker's a slice of its own. Two
    workers drawing from one range could hand out one port: the server that lost the race for it
    exits, and until it has, the other worker's server answers its readiness check, and the test
    talks to another test's server (the likeliest cause of a CI failure: an admin's key create
    answered without a key, as a server where that key existed would answer)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = max(low - _LOWEST_PORT, 0) // max(workers, 1)
    if size < 1_000:
        return range(0)
    first = _LOWEST_PORT + worker % workers * size
    return range(first, first + size)


def free_port() -> int:
    """A free loopback port of this test process's own (:func:`_own_ports`), or the kernel's
    choice where there is no room below its ephemeral range."""
    ports = _own_ports()
    if _next_port[0] < 0:
        _next_port[0] = _RANDOM.randrange(max(len(ports), 1))
    for _ in range(min(len(ports), 200)):
        _next_port[0] = (_next_port[0] + 1) % len(ports)
        if _port_is_free(port := ports[_next_port[0]]):
            return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_SETPRIV = shutil.which("setpriv")


def _die_with_parent(sig: str, command: list[str]) -> list[str]:
    """``command`` run through util-linux's setpriv (which execs it: the PID stays the server's), so that
    the kernel sends ``sig`` to the server if the test run dies without stopping it (a crash or a CI
    timeout) and no server is left behind. The kernel sends it when the *thread* that started the child
    ends, so it is asked for only from the main thread."""
    if _SETPRIV is None or threading.current_thread() is not threading.main_thread():
        return command
    return [_SETPRIV, "--pdeathsig", sig, "--", *command]


_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _prctl.restype = ctypes.c_int
except (OSError, AttributeError):  # not Linux
    _prctl = None


@contextlib.contextmanager
def _adopting_orphans() -> Iterator[bool]:
    """Make this process a child subreaper for the duration (Linux's PR_SET_CHILD_SUBREAPER), so that the
    children of a child killed meanwhile become ours to reap: otherwise they go to PID 1, which in a
    container may reap them late or never (they stay behind as zombies). Yields whether that worked."""
    if _prctl is None:
        yield False
        return
    before = ctypes.c_int(0)
    _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.addressof(before), 0, 0, 0)
    if _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        yield False
        return
    try:
        yield True
    finally:
        _prctl(_PR_SET_CHILD_SUBREAPER, before.value, 0, 0, 0)


def _reap(pids: list[int], timeout: float) -> None:
    """Wait until ``pids`` are gone, reaping those that are our children (see ``_adopting_orphans``)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # dead already (SIGKILL): returns at once
    _wait_gone(pids, timeout)


def _listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds a listening TCP socket on ``port``: so that the readiness
    probe that follows cannot be answered by some other server holding the port while ours fails to
    bind it. True when /proc cannot tell."""
    try:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except PermissionError:
        return True
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    return True
    return False


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {[pid for pid in pids if _alive(pid)]} did not exit")
        time.sleep(0.005)


def scratch_root() -> str | None:
    """Where servers keep their files: ``$XE_SERVICES_TMP`` if set, else /dev/shm when it is a tmpfs with
    2 GiB free (memory: no disk write-back; a PostgreSQL server starts and makes databases several times
    faster there than on this machine's ext4), else the usual temporary folder."""
    chosen = os.environ.get("XE_SERVICES_TMP")
    if chosen:
        return chosen
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        return None
    if stats.f_bavail * stats.f_frsize >= 2 << 30 and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return None


_SWEPT: set[str | None] = set()


def _make_directory(kind: str) -> Path:
    """A new directory ``xe-<kind>-<our pid>-XXXXXXXX`` in ``scratch_root()``. The first call in a process
    removes those left there by test runs that died without cleaning up (their pid is gone)."""
    root = scratch_root()
    if root not in _SWEPT:
        _SWEPT.add(root)
        with contextlib.suppress(OSError):
            for entry in Path(root or tempfile.gettempdir()).iterdir():
                match = re.fullmatch(r"xe-(?:redis|postgres|pg-template)-(\d+)-\w+", entry.name)
                if match and not _pid_exists(int(match.group(1))):
                    shutil.rmtree(entry, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"xe-{kind}-{os.getpid()}-", dir=root))


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


_LIVE: set[Any] = set()


@atexit.register
def _close_all() -> None:
    """Whatever a test left running is stopped when the test run exits."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()


class _ChildServer:
    """What both servers share: one child process at a time, on one port, logging to one file."""

    name = "server"
    _port_taken = "Address already in use"

    def __init__(self, directory: Path | None, port: int | None, *, owns_directory: bool = False) -> None:
        self._owns_directory = owns_directory or directory is None
        self.directory = _make_directory(self.name) if directory is None else Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.log = self.directory / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._output: Any = None
        self.starts = 0
        _LIVE.add(self)

    # What each server defines
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _popen_options(self) -> dict[str, Any]:
        return {}

    def _ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start the server on its port (the same port as before, after a stop or a kill) and wait until
        it answers. Only a first start on a port chosen here moves to another port if that one is taken."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        for attempt in range(5):
            try:
                self._spawn(timeout)
                return
            except _PortTaken:
                if self._fixed_port or self.starts > 0 or attempt == 4:
                    raise
                self.port = free_port()

    def _spawn(self, timeout: float) -> None:
        self._output = self.log.open("ab")
        self._output.write(f"--- start on port {self.port} at {time.strftime('%H:%M:%S')}\n".encode())
        self._output.flush()
        offset = self.log.stat().st_size
        self.process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,  # a Ctrl-C at the terminal goes to pytest only
            **self._popen_options(),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.process.wait()
                self._close_output()
                with self.log.open("rb") as log:
                    log.seek(offset)
                    output = log.read().decode(errors="replace")
                if self._port_taken in output:
                    raise _PortTaken(output)
                raise RuntimeError(f"{self.name} exited at start ({self.process.returncode}):\n{output}")
            if _listening(self.process.pid, self.port) and self._ready():
                self.starts += 1
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not answer in {timeout} s:\n{_tail(self.log)}")
            time.sleep(0.005)

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> bool:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop the server gracefully (SIGKILL if it takes longer than ``timeout``); returns its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None and not self._signal_and_wait(self._stop_signal, timeout):
            self.kill()
        self.process.wait()
        self._close_output()
        return self.process.returncode

    _stop_signal = signal.SIGTERM

    def kill(self) -> None:
        """SIGKILL, as if the server were lost: no shutdown, every connection cut."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.process.wait()
        self._close_output()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop the server if it runs, and start it again on the same port with the same data."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop the server and remove its directory (if it made it)."""
        self.stop()
        _LIVE.discard(self)
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.process.pid}" if self.running and self.process else "stopped"
        return f"<{type(self).__name__} 127.0.0.1:{self.port} {state}>"


class _PortTaken(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------------
# Redis


def _resp_encode(*args: str | bytes | int) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisError(Exception):
    pass


def _resp_read(stream: Any) -> Any:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("connection closed")
        return data[:-2]
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_resp_read(stream) for _ in range(size)]
    raise ConnectionError(f"unexpected reply {line!r}")


def redis_command(port: int, *args: str | bytes | int, timeout: float = 5.0) -> Any:
    """Send one command to the Redis server on 127.0.0.1:``port`` over a new connection; returns the
    reply (str for a status, bytes for a bulk string, int, list, None) or raises RedisError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_resp_encode(*args))
        with sock.makefile("rb") as stream:
            return _resp_read(stream)


class RedisServer(_ChildServer):
    """``redis-server`` as a child process on 127.0.0.1, keeping nothing on disk. Started on creation
    unless ``start=False``; ``close()`` (or ``with``) stops it and removes its directory."""

    name = "redis"

    def __init__(
        self,
        directory: Path | None = None,
        port: int | None = None,
        *,
        binary: str | None = None,
        args: list[str] | tuple[str, ...] = (),
        start: bool = True,
    ) -> None:
        binary = binary or find_redis_server()
        if binary is None:
            raise FileNotFoundError(REDIS_MISSING)
        self.binary = binary
        self.args = list(args)
        super().__init__(directory, port)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        if start:
            self.start()

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no", "--logfile", ""]
        return _die_with_parent("SIGKILL", [*command, *self.args])

    def _ready(self) -> bool:
        """Answering, and ours beyond doubt (its process id)."""
        try:
            info = self.command("INFO", "server", timeout=5.0)
        except (OSError, RedisError):
            return False
        found = re.search(rb"^process_id:(\d+)", info, re.MULTILINE)
        return found is not None and int(found.group(1)) == self.pid

    def command(self, *args: str | bytes | int, timeout: float = 5.0) -> Any:
        """One command over a new connection: ``server.command("SET", "k", "v")``."""
        return redis_command(self.port, *args, timeout=timeout)

    def ping(self, timeout: float = 1.0) -> bool:
        try:
            return bool(self.command("PING", timeout=timeout) == "PONG")
        except (OSError, RedisError):
            return False

    def flushall(self) -> None:
        self.command("FLUSHALL")

    def close(self) -> None:
        """Stop the server (by SHUTDOWN NOSAVE: 2 ms, where SIGTERM waits up to 100 ms for Redis's next
        timer tick) and remove its directory."""
        if self.process is not None and self.running:
            with contextlib.suppress(OSError, RedisError):
                self.command("SHUTDOWN", "NOSAVE", timeout=2.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(2.0)
        super().close()


# --------------------------------------------------------------------------------------------------
# PostgreSQL


class PostgresError(Exception):
    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self.sqlstate = fields.get("C", "")
        super().__init__(f"{fields.get('S', 'ERROR')} {self.sqlstate}: {fields.get('M', '')}")


class _PgConnection:
    """Just enough of the PostgreSQL v3 protocol for trust authentication and simple queries."""

    def __init__(self, port: int, user: str, database: str, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.stream = self.sock.makefile("rb")
            params = b"".join(
                f"{key}\0{value}\0".encode() for key, value in (("user", user), ("database", database))
            )
            body = struct.pack("!i", 196608) + params + b"\0"
            self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
            while True:
                kind, payload = self._read()
                if kind == b"R" and struct.unpack("!i", payload[:4])[0] != 0:
                    raise PostgresError(
                        {"M": "the server asked for a password (only trust auth is spoken here)"}
                    )
                if kind == b"E":
                    raise PostgresError(self._fields(payload))
                if kind == b"Z":
                    return
        except BaseException:
            self.close()
            raise

    def _read(self) -> tuple[bytes, bytes]:
        header = self.stream.read(5)
        if len(header) < 5:
            raise ConnectionError("connection closed")
        size = struct.unpack("!i", header[1:])[0] - 4
        payload = self.stream.read(size)
        if len(payload) < size:
            raise ConnectionError("connection closed")
        return header[:1], payload

    @staticmethod
    def _fields(payload: bytes) -> dict[str, str]:
        return {part[:1].decode(): part[1:].decode(errors="replace") for part in payload.split(b"\0") if part}

    def query(self, sql: str) -> list[tuple[str | None, ...]]:
        """Run ``sql`` (several statements allowed) and return the rows of the last result, as text."""
        body = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(body) + 4) + body)
        rows: list[tuple[str | None, ...]] = []
        error: PostgresError | None = None
        while True:
            kind, payload = self._read()
            if kind == b"T":
                rows = []
            elif kind == b"D":
                count = struct.unpack("!h", payload[:2])[0]
                offset, row = 2, list[str | None]()
                for _ in range(count):
                    size = struct.unpack("!i", payload[offset : offset + 4])[0]
                    offset += 4
                    if size < 0:
                        row.append(None)
                    else:
                        row.append(payload[offset : offset + size].decode())
                        offset += size
                rows.append(tuple(row))
            elif kind == b"E":
                error = PostgresError(self._fields(payload))
            elif kind == b"Z":
                if error is not None:
                    raise error
                return rows

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        with contextlib.suppress(OSError):
            self.stream.close()
        self.sock.close()


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Who runs initdb and postgres: None (ourselves) unless we are root; then ``postgres`` (Debian's
    package makes it), else ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError(
        "running as root, and there is neither a postgres nor a nobody user to run PostgreSQL as"
    )


def _as_user(account: pwd.struct_passwd | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _pg_environment() -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("PG", "LC_")) and key != "LANG"
    }
    environment["LC_ALL"] = "C"
    return environment


def _make_owned_directory(kind: str, account: pwd.struct_passwd | None) -> Path:
    directory = _make_directory(kind)
    if account is not None:
        os.chown(directory, account.pw_uid, account.pw_gid)
    return directory


INITDB_OPTIONS = ["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"]
INITDB_OPTIONS += ["--no-sync", "--no-instructions"]
_TEMPLATES: dict[Path, Path] = {}
_TEMPLATE_LOCK = threading.Lock()
INITDB_SECONDS: list[float] = []
"""How long each initdb took in this process (one per PostgreSQL bin folder)."""


def _template_data_dir(bin_dir: Path, account: pwd.struct_passwd | None) -> Path:
    """A fresh cluster made by initdb once per test process; servers start from copies of it."""
    with _TEMPLATE_LOCK:
        if bin_dir not in _TEMPLATES:
            holder = _make_owned_directory("pg-template", account)
            atexit.register(shutil.rmtree, holder, True)
            data = holder / "data"
            started = time.monotonic()
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(data), *INITDB_OPTIONS],
                cwd=holder,
                env=_pg_environment(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=True,
                timeout=120,
                **_as_user(account),
            )
            INITDB_SECONDS.append(time.monotonic() - started)
            _TEMPLATES[bin_dir] = data
        return _TEMPLATES[bin_dir]


POSTGRES_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "dynamic_shared_memory_type": "mmap",
}
"""Durability off for speed, except synchronous_commit: with fsync off a commit costs no more with it
on (measured: 2,000 single-row commits in 0.46 s on, 0.51 s off), and with it off a ``kill()`` loses the
last ~200 ms of commits the server had acknowledged (measured: 50 of 200), which a test of a lost
server must not mistake for a bug. ``settings={"synchronous_commit": "off"}`` turns it off. Dynamic
shared memory lives in the data directory (mmap), so a killed server leaves none in /dev/shm."""

_DATABASE_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")


class PostgresServer(_ChildServer):
    """``postgres`` as a child process on 127.0.0.1 with trust authentication for user ``postgres``,
    fsync and full_page_writes off (``POSTGRES_SETTINGS``), its socket in its own directory.
    Started on creation unless ``start=False``; ``close()`` (or ``with``) stops it and removes its
    directory. ``settings`` adds ``-c name=value`` options."""

    name = "postgres"
    _port_taken = "could not create any TCP/IP sockets"
    _stop_signal = signal.SIGINT  # "fast" shutdown: open sessions are ended (SIGTERM would wait for them)

    def __init__(
        self,
        directory: Path | None = None,
        port: int | None = None,
        *,
        bin_dir: Path | None = None,
        settings: dict[str, str] | None = None,
        start: bool = True,
    ) -> None:
        bin_dir = bin_dir or find_postgres_bin()
        if bin_dir is None:
            raise FileNotFoundError(POSTGRES_MISSING)
        self.bin_dir = bin_dir
        self.settings = dict(settings or {})
        self.account = _unprivileged_user()
        owns_directory = directory is None
        if directory is None:
            directory = _make_owned_directory("postgres", self.account)
        super().__init__(directory, port, owns_directory=owns_directory)
        if self.account is not None:
            os.chown(directory, self.account.pw_uid, self.account.pw_gid)
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        if not self.data_dir.exists():
            template = _template_data_dir(bin_dir, self.account)
            subprocess.run(["cp", "-a", str(template), str(self.data_dir)], check=True)
        if not self.socket_dir.exists():
            self.socket_dir.mkdir(mode=0o700)
            if self.account is not None:
                os.chown(self.socket_dir, self.account.pw_uid, self.account.pw_gid)
        self.url = self.url_for("postgres")
        if start:
            self.start()

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)
        self.url = self.url_for("postgres")

    def _command(self) -> list[str]:
        options = {"listen_addresses": "127.0.0.1", **POSTGRES_SETTINGS, **self.settings}
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        command += ["-k", str(self.socket_dir)]
        for key, value in options.items():
            command += ["-c", f"{key}={value}"]
        # SIGQUIT: an immediate shutdown, in which the postmaster ends its backends too.
        return _die_with_parent("SIGQUIT", command)

    def _popen_options(self) -> dict[str, Any]:
        return {"env": _pg_environment(), **_as_user(self.account)}

    def _ready(self) -> bool:
        try:  # the data directory: ours, beyond doubt
            return self.execute("show data_directory", timeout=5.0) == [(str(self.data_dir),)]
        except (OSError, PostgresError):  # refused, or "the database system is starting up"
            return False

    def connect(self, database: str = "postgres", timeout: float = 5.0) -> _PgConnection:
        """A raw protocol connection: ``conn.query(sql)`` returns rows of text; ``conn.close()``."""
        return _PgConnection(self.port, "postgres", database, timeout)

    def execute(
        self, sql: str, database: str = "postgres", timeout: float = 10.0
    ) -> list[tuple[str | None, ...]]:
        """Run ``sql`` over a new connection; returns the rows of its last result, as text."""
        connection = self.connect(database, timeout)
        try:
            return connection.query(sql)
        finally:
            connection.close()

    def psql(self, sql: str, database: str = "postgres", timeout: float = 30.0) -> str:
        """Run ``sql`` through the psql client (unaligned, tuples only); returns its output."""
        binary = self.bin_dir / "psql"
        psql = str(binary) if binary.exists() else shutil.which("psql")
        if psql is None:
            raise FileNotFoundError("psql not installed (apt-get install postgresql-client)")
        command = [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"]
        command += ["-p", str(self.port), "-d", database, "-c", sql]
        result = subprocess.run(
            command,
            env=_pg_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise PostgresError({"M": result.stderr.strip()})
        return result.stdout

    def create_database(self, name: str | uuid.UUID | None = None, template: str | None = None) -> str:
        """Create an empty database named ``name`` (letters, digits, _ and -, such as a UUID; a new
        unique name if None), or a copy of the database ``template``; returns its URL."""
        name = str(name) if name is not None else f"t_{uuid.uuid4().hex}"
        for plain in (name, template or name):
            if not _DATABASE_NAME.fullmatch(plain):
                raise ValueError(f"not a plain database name: {plain!r}")
        copied = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{copied} STRATEGY FILE_COPY')
        return self.url_for(name)

    def drop_database(self, name: str | uuid.UUID) -> None:
        if not _DATABASE_NAME.fullmatch(str(name)):
            raise ValueError(f"not a plain database name: {name!r}")
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend it started, as if the server were lost: every
        connection is cut at once, and the next start recovers from the WAL."""
        if self.process is None:
            return
        if self.process.poll() is None:
            pid = self.process.pid
            with _adopting_orphans():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)  # so that it starts no backend while they are listed
                children = _children(pid)
                for child in [pid, *children]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                self.process.wait()
                # The next postmaster refuses the data directory while an old backend holds its memory.
                _reap(children, 10.0)
        self.process.wait()
        self._close_output()


# --------------------------------------------------------------------------------------------------
# Fixtures (to be imported into conftest.py)


def _missing(reason: str) -> NoReturn:
    """Skip the test; or fail it where XE_SERVICES_REQUIRED=1 (in CI, so that a missing install step
    does not pass as a run of skipped tests)."""
    if os.environ.get("XE_SERVICES_REQUIRED") == "1":
        pytest.fail(f"{reason}, and XE_SERVICES_REQUIRED=1")
    pytest.skip(reason)


def _redis_or_skip() -> str:
    binary = find_redis_server()
    if binary is None:
        _missing(REDIS_MISSING)
    return binary


def _postgres_or_skip() -> Path:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        _missing(POSTGRES_MISSING)
    return bin_dir


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis server of the test's own, empty; it may stop, kill and start it as it likes."""
    server = RedisServer(binary=_redis_or_skip())
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """One Redis server for the whole run. Take it through ``redis_fresh`` (running and emptied)
    unless the test flushes it itself."""
    server = RedisServer(binary=_redis_or_skip())
    yield server
    server.close()


@pytest.fixture
def redis_fresh(redis_session: RedisServer) -> RedisServer:
    """The session's Redis, running (started again if an earlier test stopped it) and emptied."""
    if not redis_session.running:
        redis_session.start()
    redis_session.flushall()
    return redis_session


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run; each test takes a database of its own (``postgres_db``
    or ``postgres_server.create_database()``). Tests that kill or restart a server use ``make_postgres``."""
    server = PostgresServer(bin_dir=_postgres_or_skip())
    yield server
    server.close()


def new_database(server: PostgresServer, template: str | None = None) -> Iterator[str]:
    """For a fixture: the URL of a new database on ``server`` (started again if a test stopped
    it), empty or a copy of ``template``, dropped after the test (each copy takes 7.5 MB)."""
    if not server.running:
        server.start()
    name = f"t_{uuid.uuid4().hex}"
    yield server.create_database(name, template=template)
    if server.running:
        server.drop_database(name)


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on the session's PostgreSQL server, dropped after the test."""
    yield from new_database(postgres_server)


@pytest.fixture
def make_postgres() -> Iterator[Callable[..., PostgresServer]]:
    """Start PostgreSQL servers of the test's own (``make_postgres(settings={...})``), to stop, kill
    and restart; all are stopped and removed at the end."""
    bin_dir = _postgres_or_skip()
    started: list[PostgresServer] = []

    def make(**options: Any) -> PostgresServer:
        server = PostgresServer(bin_dir=bin_dir, **options)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()
