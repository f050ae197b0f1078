"""The Containerfile: slim base, non-root, database on a volume, configured by the environment,
and a HEALTHCHECK that really checks /health. Built and run for real where an engine works."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from server import Server, free_port

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = (ROOT / "Containerfile").read_text()


def instruction(name: str) -> list[str]:
    joined = CONTAINERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def healthcheck_argv() -> list[str]:
    (check,) = instruction("HEALTHCHECK")
    return json.loads(check.split("CMD", 1)[1])


def base_image() -> str:
    bases = {line.split()[0] for line in instruction("FROM")}
    (base,) = bases  # the build stage and the image share one slim base
    return base


def test_slim_base_non_root_user_and_a_volume_for_the_database() -> None:
    assert re.fullmatch(r"docker\.io/library/python:3\.1[1-9]-slim", base_image())
    (user,) = instruction("USER")
    assert user not in ("root", "0")
    assert instruction("VOLUME") == ['["/data"]']
    assert "XE_DB=/data/xenon_elixir.db" in " ".join(instruction("ENV"))
    assert instruction("EXPOSE") == ["8000"]
    command = json.loads(instruction("CMD")[0])
    assert command == ["xenon-elixir", "serve", "--host", "0.0.0.0", "--port", "8000"]


def test_no_build_leftovers_and_nothing_private_goes_into_the_build() -> None:
    """The wheel is installed from a bind mount of the build stage: no layer holds the source,
    a build folder or the wheel. The build context leaves out .git and databases."""
    (install,) = [run for run in instruction("RUN") if "pip install" in run]
    assert install.startswith("--mount=type=bind,from=build,") and "/wheels/*.whl" in install
    ignored = (ROOT / ".containerignore").read_text().splitlines()
    assert {".git", "**/*.db", "tests"} <= set(ignored)


def test_the_readme_builds_a_docker_format_image_so_the_healthcheck_is_kept() -> None:
    """podman's default OCI format silently drops HEALTHCHECK."""
    readme = (ROOT / "README.md").read_text()
    builds = re.findall(r"^podman build .*$", readme, flags=re.MULTILINE)
    assert builds and all("--format docker" in line for line in builds)
    publishes = re.findall(r"-p (\S+):8000", readme)
    assert publishes and all(p.startswith("127.0.0.1:") for p in publishes)


def test_the_image_gets_every_file_the_install_needs() -> None:
    (copied,) = instruction("COPY")
    files = set(copied.split()[:-1])
    assert {"pyproject.toml", "README.md", "xenon_elixir.py"} <= files
    for name in files:
        assert (ROOT / name).exists(), name


def test_the_healthcheck_command_checks_the_health_route(db_path: str, tmp_path: Path) -> None:
    argv = healthcheck_argv()
    assert "/health" in argv[-1]
    server = Server(db_path, tmp_path / "server.log")
    try:
        pointed = [a.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}") for a in argv]
        assert subprocess.run(pointed, timeout=30, check=False).returncode == 0
    finally:
        server.stop()
    dead = [a.replace("127.0.0.1:8000", f"127.0.0.1:{free_port()}") for a in argv]
    assert subprocess.run(dead, capture_output=True, timeout=30, check=False).returncode != 0


def _engine() -> str | None:
    """A container engine that works and already has the base image: tests never pull from a
    registry (this machine reaches none)."""
    base = base_image()
    for engine in ("podman", "docker"):
        if shutil.which(engine) is None:
            continue
        probe = subprocess.run(
            [engine, "image", "inspect", base], capture_output=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return engine
    return None


@pytest.mark.skipif(_engine() is None, reason="no container engine with the base image on this machine")
def test_the_image_builds_and_serves(tmp_path: Path) -> None:
    engine = _engine()
    assert engine is not None
    tag = "xenon-elixir-test"
    build = [
        engine,
        "build",
        *(["--format", "docker"] if engine == "podman" else []),
        "-t",
        tag,
        "-f",
        "Containerfile",
        ".",
    ]
    subprocess.run(build, cwd=ROOT, check=True, timeout=900)
    inspected = json.loads(
        subprocess.run([engine, "image", "inspect", tag], capture_output=True, check=True).stdout
    )
    assert inspected[0]["Config"]["Healthcheck"]["Test"][1:] == healthcheck_argv()
    layers = subprocess.run(
        [engine, "run", "--rm", tag, "sh", "-c", "ls /src /wheels /app 2>&1; pip cache dir 2>&1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "xenon_elixir.py" not in layers.stdout and ".whl" not in layers.stdout
    port = free_port()
    name = f"xe-test-{port}"
    subprocess.run(
        [engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "-e", "XE_ADMIN_TOKEN=t", tag],
        check=True,
        timeout=120,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the container did not answer"
                time.sleep(0.5)
        assert health["status"] == "ok"
        user = subprocess.run([engine, "exec", name, "id", "-u"], capture_output=True, text=True, check=True)
        assert user.stdout.strip() != "0"
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, timeout=60)
