"""HTTP throughput and p99 latency of three routes, as ratios against a bare Litestar app with one
route returning a small JSON object, measured in the same run under the same uvicorn settings
(httptools + uvloop, one worker) with wrk on loopback.

    python tests/bench/bench_http.py [--seconds 10] [--connections 64]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import GUILD, SOURCE, TARGET, USER, Uvicorn, seed  # noqa: E402

BARE_APP = '''
from litestar import Litestar, get

@get("/")
async def index() -> dict[str, str]:
    return {"hello": "world"}

app = Litestar([index])
'''


def lua(method: str = "GET", headers: dict[str, str] | None = None, body: str | None = None) -> str:
    lines = [f'wrk.method = "{method}"']
    for name, value in (headers or {}).items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if body is not None:
        lines.append(f"wrk.body = [[{body}]]")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    return "\n".join(lines) + "\n"


def wrk(url: str, script: str, seconds: int, connections: int) -> tuple[float, float, int]:
    """(requests/s, p99 ms, non-2xx responses)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", file.name, url],
        capture_output=True, text=True, check=True,
    )
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, int(bad[1]) if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    measure = lambda url, script: wrk(url, script, args.seconds, args.connections)  # noqa: E731

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "bare_app.py").write_text(BARE_APP)
        bare = Uvicorn("bare_app:app", app_dir=folder)
        try:
            measure(bare.url + "/", lua())  # warm-up
            base_rps, base_p99, _ = measure(bare.url + "/", lua())
        finally:
            bare.stop()

        db = str(Path(folder, "bench.db"))
        secrets = seed(db)
        app = Uvicorn("xenon_elixir:app", env={"XE_DB": db, "XE_RATE_LIMITS": "off", "XE_ACCESS_LOG": "0"})
        routes = {
            "GET /api/v1/{guild}/nowplaying": (f"/api/v1/{GUILD}/nowplaying", lua()),
            "GET /api/mappers (200 ids)": (
                f"/api/mappers?target={TARGET}&source={SOURCE}",
                lua(headers={"Authorization": secrets["token"]}),
            ),
            "POST /api/v1/{guild}/play (search, 2,000 tracks)": (
                f"/api/v1/{GUILD}/play",
                lua("POST", {"Authorization": f"Bearer {secrets['key']}"}, f'{{"user": "{USER}", "query": "night rain song"}}'),
            ),
        }
        results = {}
        try:
            for name, (path, script) in routes.items():
                measure(app.url + path, script)  # warm-up
                results[name] = measure(app.url + path, script)
        finally:
            app.stop()

    print(f"machine: {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
          f"{args.connections} connections, {args.seconds} s per figure, wrk -t2, uvicorn httptools+uvloop 1 worker")
    print(f"{'bare Litestar':52} {base_rps:9.0f} req/s   p99 {base_p99:6.2f} ms")
    for name, (rps, p99, bad) in results.items():
        print(f"{name:52} {rps:9.0f} req/s   p99 {p99:6.2f} ms   "
              f"ratio {rps / base_rps:4.2f}x req/s, {p99 / base_p99:4.2f}x p99" + (f"   ({bad} non-2xx!)" if bad else ""))


if __name__ == "__main__":
    main()
