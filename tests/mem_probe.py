"""``xenon-elixir serve`` that answers SIGUSR1 with its memory figures, for the memory tests.

    python -X tracemalloc=1 tests/mem_probe.py serve --db X --port N     (XE_MEM_REPORT=/path/report.json)

On SIGUSR1 the server runs a full garbage collection, then writes (to a temporary file renamed to
$XE_MEM_REPORT, so a reader never sees half a file): the live GC-tracked objects by type, the bytes
tracemalloc traces, and RSS. With $XE_MEM_SNAPSHOTS set it also dumps a tracemalloc snapshot
there (snapshot-N.pickle, N counting reports from 1), for a test to show where memory grew.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
import sys
import tracemalloc
from pathlib import Path

_reports = 0


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def _report(signum: int, frame: object) -> None:
    global _reports
    _reports += 1
    unreachable = gc.collect()  # cyclic garbage waits for a full collection: count only what is alive
    types = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
    figures = {
        "report": _reports,
        "unreachable": unreachable,
        "types": types,
        "traced": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
        "rss_kib": _rss_kib(),
    }
    snapshots = os.environ.get("XE_MEM_SNAPSHOTS")
    if snapshots and tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(os.path.join(snapshots, f"snapshot-{_reports}.pickle"))
    target = os.environ["XE_MEM_REPORT"]
    with open(f"{target}.tmp", "w") as out:
        json.dump(figures, out)
    os.replace(f"{target}.tmp", target)


if __name__ == "__main__":
    sys.path.insert(
        0, str(Path(__file__).resolve().parent.parent)
    )  # the checkout, as `python -m` from its root
    import xenon_elixir

    signal.signal(signal.SIGUSR1, _report)
    sys.exit(xenon_elixir.main(sys.argv[1:]))
