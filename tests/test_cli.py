"""The command line (SPEC §3): every command, and one clear stderr line on failure."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import CATALOG_FILE, GUILD, USER, VOICE, VOICE_2

import xenon_elixir as xe


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = xe.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fail_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("xenon-elixir: ")
    return lines[0]


def test_genkey_prints_a_key_that_the_store_knows(capsys: pytest.CaptureFixture[str], db_path: str) -> None:
    code, out, _ = run(capsys, "genkey", GUILD, USER, "--db", db_path)
    assert code == 0
    key = out.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", key)

    async def owner() -> tuple[str, str] | None:
        async with xe.Host.open(xe.Config(db=db_path)) as host:
            return await host.key_owner(key)

    assert asyncio.run(owner()) == (GUILD, USER)


def test_genkey_twice_needs_rotate(capsys: pytest.CaptureFixture[str], db_path: str) -> None:
    run(capsys, "genkey", GUILD, USER, "--db", db_path)
    code, out, err = run(capsys, "genkey", GUILD, USER, "--db", db_path)
    assert (code, out) == (1, "")
    assert "already exists" in fail_line(err)
    code, out, _ = run(capsys, "genkey", GUILD, USER, "--rotate", "--db", db_path)
    assert code == 0 and len(out.strip()) == 64


def test_db_defaults_to_the_environment(
    capsys: pytest.CaptureFixture[str], db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XE_DB", db_path)
    assert run(capsys, "genkey", GUILD, USER)[0] == 0
    assert Path(db_path).exists()


def test_revoke_key(capsys: pytest.CaptureFixture[str], db_path: str) -> None:
    run(capsys, "genkey", GUILD, USER, "--db", db_path)
    assert run(capsys, "revoke-key", GUILD, USER, "--db", db_path)[0] == 0
    code, _, err = run(capsys, "revoke-key", GUILD, USER, "--db", db_path)
    assert code == 1 and "no key" in fail_line(err)


def test_add_guild_and_remove_guild(capsys: pytest.CaptureFixture[str], db_path: str) -> None:
    code, out, _ = run(
        capsys, "add-guild", GUILD, "--name", "Lounge", "--voice", VOICE, "--voice", VOICE_2, "--db", db_path
    )
    assert code == 0 and "2 voice channel" in out

    async def guild() -> xe.Guild | None:
        async with xe.Host.open(xe.Config(db=db_path)) as host:
            return await host.get_guild(GUILD)

    assert asyncio.run(guild()) == xe.Guild(id=GUILD, name="Lounge", voice_channels=[VOICE, VOICE_2])
    assert run(capsys, "remove-guild", GUILD, "--db", db_path)[0] == 0
    assert asyncio.run(guild()) is None
    code, _, err = run(capsys, "remove-guild", GUILD, "--db", db_path)
    assert code == 1 and "not in the registry" in fail_line(err)


def test_import_tracks_reads_a_catalog_or_a_list(
    capsys: pytest.CaptureFixture[str], db_path: str, tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "import-tracks", str(CATALOG_FILE), "--db", db_path)
    assert code == 0
    catalog = json.loads(CATALOG_FILE.read_text())
    assert (
        out.strip()
        == f"imported {len(catalog['tracks'])} track(s) and {len(catalog['playlists'])} playlist(s)"
    )
    plain = tmp_path / "list.json"
    plain.write_text(json.dumps(catalog["tracks"][:2]))
    assert (
        run(capsys, "import-tracks", str(plain), "--db", db_path)[1].strip()
        == "imported 2 track(s) and 0 playlist(s)"
    )


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["genkey", "nope", USER], "Invalid guild"),
        (["add-guild", GUILD, "--name", "G", "--voice", "12"], "Invalid voice channel"),
        (["import-tracks", "/nonexistent/file.json"], "cannot read"),
        (["import-tracks", "BAD"], "JSON"),
        (["import-tracks", "WRONG"], "Invalid length"),
        (["import-tracks", "LINES"], "holds one track a line: import-tracks reads one JSON document"),
    ],
)
def test_bad_input_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], db_path: str, tmp_path: Path, argv: list[str], fragment: str
) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    wrong = dict(json.loads(CATALOG_FILE.read_text())["tracks"][0], length=-5)
    (tmp_path / "wrong.json").write_text(json.dumps([wrong]))
    argv = [
        {
            "BAD": str(tmp_path / "bad.json"),
            "WRONG": str(tmp_path / "wrong.json"),
            "LINES": str(CATALOG_FILE.with_name("catalog.ndjson")),
        }.get(a, a)
        for a in argv
    ]
    code, out, err = run(capsys, *argv, "--db", db_path)
    assert (code, out) == (1, "")
    assert fragment in fail_line(err)


def test_an_unusable_database_is_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("this is not a database " * 100)
    code, _, err = run(capsys, "genkey", GUILD, USER, "--db", str(not_a_db))
    assert code == 1 and "cannot use database" in fail_line(err)


@pytest.mark.parametrize(
    ("db", "line"),
    [
        (
            "sqlite:///x.db",
            "the database (--db or XE_DB) is a file path or a postgresql:// URL: for sqlite:///x.db write x.db",
        ),
        (
            ":memory:",
            ":memory: cannot be the database (--db or XE_DB): it must be a file (for a throwaway one, a "
            "temporary file)",
        ),
        (
            "mysql://h/x",
            "the database (--db or XE_DB) is a file path or a postgresql:// URL, not 'mysql://h/x'",
        ),
    ],
)
@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "1"],  # refused before the port is tried
        ["genkey", GUILD, USER],
        ["migrate", "--to", "postgresql://xe@127.0.0.1:1/x"],
    ],
)
def test_a_database_that_is_neither_a_file_nor_postgresql_is_one_clear_line(
    tmp_path: Path, argv: list[str], db: str, line: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "xenon_elixir", *argv, "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(xe.__file__).parent)},
    )
    assert (done.returncode, done.stderr, done.stdout) == (1, f"xenon-elixir: {line}\n", "")
    assert list(tmp_path.iterdir()) == []  # no "sqlite:" folder, no file


def test_every_shell_variable_of_the_readme_is_set_before_a_copy_paste_uses_it() -> None:
    """The As-is block sets what the later curl lines use ("A, TOKEN and KEY as set here"); any
    other block sets its own."""
    readme = (Path(xe.__file__).parent / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in readme.split("```sh\n")[1:]]

    def assigned(block: str) -> set[str]:
        return set(re.findall(r"(?:^|[\s;])([A-Za-z_]\w*)=", block, re.MULTILINE))

    (as_is,) = [block for block in blocks if "xenon-elixir add-guild" in block and "serve &" in block]
    assert {"A", "TOKEN", "KEY"} <= assigned(as_is)
    for block in blocks:
        used = set(re.findall(r"\$([A-Za-z_]\w*)", block))
        assert used <= assigned(as_is) | assigned(block), block


def test_schema_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert (code, out) == (0, xe.SCHEMA)


def test_the_module_runs_as_a_script(db_path: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "xenon_elixir", "genkey", GUILD, USER, "--db", db_path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"[0-9a-f]{64}\n", done.stdout)
    done = subprocess.run(
        [sys.executable, "-m", "xenon_elixir", "frobnicate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_add_bot_prints_a_token_and_rotates(capsys: pytest.CaptureFixture[str], db_path: str) -> None:
    code, out, _ = run(capsys, "add-bot", "386861188891279362", "Wick", "--db", db_path)
    first = out.strip()
    assert code == 0 and len(first) >= 40

    async def bot(token: str) -> xe.Bot | None:
        async with xe.Host.open(xe.Config(db=db_path)) as host:
            return await host.bot_by_token(token)

    assert asyncio.run(bot(first)) == xe.Bot("386861188891279362", "Wick")
    second = run(capsys, "add-bot", "386861188891279362", "Wick", "--db", db_path)[1].strip()
    assert asyncio.run(bot(first)) is None and asyncio.run(bot(second)) is not None
    assert run(capsys, "revoke-bot", "386861188891279362", "--db", db_path)[0] == 0
    assert asyncio.run(bot(second)) is None
    code, _, err = run(capsys, "revoke-bot", "235148962103951360", "--db", db_path)
    assert code == 1 and "no bot" in fail_line(err)


def test_add_template_and_add_backup_print_their_ids(
    capsys: pytest.CaptureFixture[str], db_path: str
) -> None:
    code, out, _ = run(
        capsys, "add-template", "Gaming", "--source", GUILD, "--creator", USER, "--db", db_path
    )
    assert code == 0 and re.fullmatch(r"[A-Za-z0-9]{12}\n", out)
    code, out, _ = run(
        capsys, "add-backup", "--source", GUILD, "--creator", USER, "--id", "3ZYDFWQP0H", "--db", db_path
    )
    assert (code, out) == (0, "3zydfwqp0h\n")
    code, _, err = run(
        capsys, "add-backup", "--source", GUILD, "--creator", USER, "--id", "3zydfwqp0h", "--db", db_path
    )
    assert code == 1 and "already exists" in fail_line(err)
    code, _, err = run(capsys, "add-template", "X", "--source", "1", "--creator", USER, "--db", db_path)
    assert code == 1 and "Invalid source_id" in fail_line(err)


@pytest.mark.parametrize("command", list(xe._EXAMPLES))
def test_every_command_has_help_with_examples_that_parse(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    with pytest.raises(SystemExit) as shown:
        xe.main([command, "--help"])
    out = capsys.readouterr().out
    assert shown.value.code == 0 and "examples:" in out
    for example in xe._EXAMPLES[command]:
        assert example in out
        words = shlex.split(example.split("$(")[-1].rstrip(")").split(" > ")[0])
        argv = words[words.index("xenon-elixir") + 1 :]
        parsed = xe._parser().parse_args(argv)  # exits on a bad example
        assert parsed.command == command


@pytest.mark.parametrize(
    ("command", "db"),
    [
        ("backup", "the SQLite file (default: $XE_DB, else ./xenon_elixir.db)"),
        ("migrate", "the SQLite file (default: $XE_DB, else ./xenon_elixir.db)"),
        ("genkey", "SQLite file or postgresql:// URL (default: $XE_DB, else ./xenon_elixir.db)"),
        ("serve", "SQLite file or postgresql:// URL (default: $XE_DB, else ./xenon_elixir.db)"),
    ],
)
def test_help_says_what_db_takes(capsys: pytest.CaptureFixture[str], command: str, db: str) -> None:
    """backup and migrate work on an SQLite file only: their help does not offer a PostgreSQL URL."""
    with pytest.raises(SystemExit):
        xe.main([command, "--help"])
    assert f"--db DB {db}" in " ".join(capsys.readouterr().out.split())


def test_the_schema_examples_write_no_file_of_the_checkout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        xe.main(["schema", "--help"])
    shown = capsys.readouterr().out
    targets = [example.split(" > ")[1] for example in xe._EXAMPLES["schema"]]
    assert targets and all(f"> {target}" in shown for target in targets)
    root = Path(xe.__file__).parent
    assert not [target for target in targets if (root / target).exists()]  # schema.sql is tracked


def test_a_locked_database_is_one_clear_line(capsys: pytest.CaptureFixture[str], db_path: str) -> None:
    assert run(capsys, "genkey", GUILD, USER, "--db", db_path)[0] == 0
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, out, err = run(capsys, "add-guild", GUILD, "--name", "G", "--db", db_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (code, out) == (1, "")
    assert "locked by another process" in fail_line(err)


def test_a_long_import_shows_a_progress_bar(
    capsys: pytest.CaptureFixture[str], db_path: str, tmp_path: Path
) -> None:
    sample = json.loads(CATALOG_FILE.read_text())["tracks"][0]
    tracks = [{**sample, "identifier": f"t{i:06d}"} for i in range(12_000)]
    (tmp_path / "big.json").write_text(json.dumps(tracks))
    code, out, err = run(capsys, "import-tracks", str(tmp_path / "big.json"), "--db", db_path)
    assert code == 0 and out == "imported 12000 track(s) and 0 playlist(s)\n"
    # not a terminal here: one line per chunk (on a terminal the bar rewrites one line)
    assert err.split("\n") == [
        "\r[############..................]  41% 5,000/12,000 tracks",
        "\r[#########################.....]  83% 10,000/12,000 tracks",
        "\r[##############################] 100% 12,000/12,000 tracks",
        "",
    ]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["genkey", GUILD], "the following arguments are required: USER"),
        (["serve", "--port", "eighty"], "expected a port number from 1 to 65535"),
        (["frobnicate"], "invalid choice"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        xe.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert len(err.splitlines()) == 1 and fragment in err and "--help)" in err


def test_list_shows_each_kind_without_secrets_and_pages(
    capsys: pytest.CaptureFixture[str], db_path: str
) -> None:
    users = sorted(str(460177285954142208 + i) for i in range(3))
    keys = [run(capsys, "genkey", GUILD, user, "--db", db_path)[1].strip() for user in users]
    code, out, err = run(capsys, "list", "keys", "--limit", "2", "--db", db_path)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["guild", "user", "created_at"]
    assert [line.split()[1] for line in lines[1:]] == users[:2]
    assert err.strip() == f"more: --after {GUILD}:{users[1]}"
    code, out, err = run(capsys, "list", "keys", "--after", f"{GUILD}:{users[1]}", "--db", db_path)
    assert [line.split()[1] for line in out.splitlines()[1:]] == users[2:] and err == ""
    for kind in ("bots", "guilds", "templates", "backups", "loaders"):
        code, out, _ = run(capsys, "list", kind, "--db", db_path)
        assert code == 0 and len(out.splitlines()) == 1  # the header of an empty listing
    assert not any(key in out for key in keys)
    with pytest.raises(SystemExit) as refused:
        xe.main(["list", "tokens", "--db", db_path])
    assert refused.value.code == 2


def test_backup_copies_the_database_while_a_server_writes(db_path: str, tmp_path: Path) -> None:
    """Online and consistent: taken while another process commits, it opens as a whole database."""
    from server import Server

    server = Server(db_path, tmp_path / "server.log", XE_ADMIN_TOKEN="backup-test")
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": "Bearer backup-test"}, timeout=10
        ) as http:
            while not stop.is_set():
                n = len(written)
                user = str(460177285954142208 + n)
                assert http.post("/admin/keys", json={"guild": GUILD, "user": user}).status_code == 201
                written.append(n)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.3)
        copies = [tmp_path / f"copy-{i}.db" for i in range(3)]
        for copy in copies:
            done = subprocess.run(
                [sys.executable, "-m", "xenon_elixir", "backup", str(copy), "--db", db_path],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
    finally:
        stop.set()
        writer.join(10)
        server.stop()
    counts = []
    for copy in copies:
        with sqlite3.connect(copy) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            counts.append(db.execute("SELECT count(*) FROM elixir_keys").fetchone()[0])
    assert counts == sorted(counts) and counts[-1] > 0 and counts[-1] <= len(written)
    again = subprocess.run(
        [sys.executable, "-m", "xenon_elixir", "backup", str(copies[0]), "--db", db_path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        again.returncode == 1
        and again.stderr.strip() == f"xenon-elixir: {copies[0]} exists; choose a new file"
    )
