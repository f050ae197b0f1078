"""HTTP throughput and p99 latency of three routes, as ratios against a bare Litestar app with one
route returning a small JSON object, measured in the same run under the same uvicorn settings
(httptools + uvloop, one worker) with wrk on loopback.

    python tests/bench/bench_http.py [--rounds 5] [--seconds 5] [--connections 64] [--only play] [--app-dir DIR]

Both servers run throughout; each round measures the baseline and then every route, so a
slow spell of this shared machine lands on both sides of a ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import GUILD, SOURCE, TARGET, USER, Uvicorn, seed

BARE_APP = """
from litestar import Litestar, get

@get("/")
async def index() -> dict[str, str]:
    return {"hello": "world"}

app = Litestar([index])
"""


def lua(method: str = "GET", headers: dict[str, str] | None = None, body: str | None = None) -> str:
    lines = [f'wrk.method = "{method}"']
    for name, value in (headers or {}).items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if body is not None:
        lines.append(f"wrk.body = [[{body}]]")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    return "\n".join(lines) + "\n"


def wrk(url: str, script: str, seconds: int, connections: int, threads: int) -> tuple[float, float, int]:
    """(requests/s, p99 ms, non-2xx responses)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", file.name, url],
        capture_output=True,
        text=True,
        check=True,
    )
    Path(file.name).unlink()
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, int(bad[1]) if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5, help="per measurement")
    parser.add_argument(
        "--rounds", type=int, default=5, help="each round measures the baseline, then every route"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (one leaves the other core to the server)"
    )
    parser.add_argument("--only", help="measure only the routes whose name contains this")
    parser.add_argument(
        "--app-dir", help="serve the xenon_elixir.py of this folder (another checkout, for before/after)"
    )
    args = parser.parse_args()

    def measure(url: str, script: str) -> tuple[float, float, int]:
        return wrk(url, script, args.seconds, args.connections, args.threads)

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "bare_app.py").write_text(BARE_APP)
        db = str(Path(folder, "bench.db"))
        secrets = seed(db, app_dir=args.app_dir)
        routes = {
            "GET /api/v1/{guild}/nowplaying": (f"/api/v1/{GUILD}/nowplaying", lua()),
            "GET /api/mappers (200 ids)": (
                f"/api/mappers?target={TARGET}&source={SOURCE}",
                lua(headers={"Authorization": secrets["token"]}),
            ),
            "POST /api/v1/{guild}/play (search, 2,000 tracks)": (
                f"/api/v1/{GUILD}/play",
                lua(
                    "POST",
                    {"Authorization": f"Bearer {secrets['key']}"},
                    f'{{"user": "{USER}", "query": "night rain song"}}',
                ),
            ),
        }
        routes = {name: route for name, route in routes.items() if not args.only or args.only in name}
        bare = Uvicorn("bare_app:app", app_dir=folder)
        copy = str(Path(folder, "bench-copy.db"))  # one database per server: one process per database
        shutil.copyfile(db, copy)
        env = {"XE_DB": db, "XE_RATE_LIMITS": "off", "XE_MAX_QUEUE": "1000000"}  # play only ever appends
        # The default configuration (the access log on, written to a file as a process manager
        # would keep it) is what users run; the log off is shown beside it.
        apps = {
            "default": Uvicorn(
                "xenon_elixir:app", app_dir=args.app_dir, env=env, log=Path(folder, "access.log")
            ),
            "log off": Uvicorn(
                "xenon_elixir:app", app_dir=args.app_dir, env={**env, "XE_DB": copy, "XE_ACCESS_LOG": "0"}
            ),
        }
        baseline: list[tuple[float, float, int]] = []
        results: dict[str, list[tuple[float, float, int]]] = {
            f"{name} [{variant}]": [] for name in routes for variant in apps
        }
        try:
            measure(bare.url + "/", lua())  # warm-up
            for app in apps.values():
                for path, script in routes.values():
                    measure(app.url + path, script)
            for _ in range(args.rounds):
                baseline.append(measure(bare.url + "/", lua()))
                for name, (path, script) in routes.items():
                    for variant, app in apps.items():
                        results[f"{name} [{variant}]"].append(measure(app.url + path, script))
            app_rss = apps["default"].rss_kib()
            logged = sum(1 for _ in Path(folder, "access.log").open())
        finally:
            bare.stop()
            for app in apps.values():
                app.stop()

    print(
        f"machine: {os.cpu_count()} cores; wrk -t{args.threads} -c{args.connections}, {args.seconds} s per figure, "
        f"{args.rounds} rounds; uvicorn httptools+uvloop, 1 worker; app RSS at the end {app_rss // 1024} MiB; "
        f"{logged:,} access-log lines written by the default app"
    )
    print("each ratio is against the baseline measured in the same round; the median round is shown")
    base_rps = statistics.median(r for r, _, _ in baseline)
    base_p99 = statistics.median(p for _, p, _ in baseline)
    print(f"{'bare Litestar, one JSON route':62} {base_rps:9.0f} req/s   p99 {base_p99:6.2f} ms")
    for name, runs in results.items():
        rps_ratio = statistics.median(run[0] / base[0] for run, base in zip(runs, baseline, strict=True))
        p99_ratio = statistics.median(run[1] / base[1] for run, base in zip(runs, baseline, strict=True))
        bad = sum(run[2] for run in runs)
        rounds = ", ".join(
            f"{run[0] / base[0]:.2f}x/{run[1] / base[1]:.2f}x"
            for run, base in zip(runs, baseline, strict=True)
        )
        print(
            f"{name:62} {statistics.median(r for r, _, _ in runs):9.0f} req/s   "
            f"p99 {statistics.median(p for _, p, _ in runs):6.2f} ms   "
            f"ratio {rps_ratio:4.2f}x req/s, {p99_ratio:4.2f}x p99" + (f"   ({bad} non-2xx!)" if bad else "")
        )
        print(f"{'':62} rounds (req/s / p99 ratio): {rounds}")


if __name__ == "__main__":
    main()
