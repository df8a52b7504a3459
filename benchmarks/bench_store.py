"""Results store and review app speed: saving scored calls, filtering, the calls page.

    python benchmarks/bench_store.py [--calls 2000] [--postgres postgresql+psycopg://...]

Scores the sample calls once, then saves copies under new ids (spread over four
weeks and the sample agents) into a fresh SQLite store (and a PostgreSQL one when
given), and prints calls saved per second, the time of a filtered `list_calls`,
and the time to render the review app's calls page and a call page.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.scoring import Scorer  # noqa: E402
from pipeline.review.store import Store  # noqa: E402
from pipeline.review.webapp import create_app  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "calls"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--postgres", help="an empty PostgreSQL database URL to measure too")
    args = parser.parse_args()
    scorer = Scorer()
    samples = [scorer.score(c) for p in sorted(SAMPLES.iterdir()) for c in scorer.read(p)]
    copies = []
    for i in range(args.calls):
        call = samples[i % len(samples)].model_copy(deep=True)
        call.id = f"{call.id}-{i:05d}"
        call.date = f"2026-11-{2 + 7 * (i % 4):02d}"
        copies.append(call)
    turns = sum(len(c.turns) for c in copies)
    print(f"{len(copies)} calls, {turns} turns ({turns / len(copies):.1f} per call)")
    with tempfile.TemporaryDirectory() as folder:
        targets = [("SQLite", str(Path(folder) / "callqa.db"))] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
        for name, url in targets:
            store = Store(url)
            start = time.perf_counter()
            for call in copies:
                store.save_call(call, "sha", "cfg")
            saved = time.perf_counter() - start
            start = time.perf_counter()
            found = store.list_calls(week="2026-W47", flag="interruption")
            listed = time.perf_counter() - start
            print(f"{name}: save {len(copies) / saved:.0f} calls/s (one transaction each); "
                  f"list_calls(week, flag) {1000 * listed:.0f} ms for {len(found)} calls")
            client = TestClient(create_app(store, load_config(), [Path(folder)], Path(folder)),
                                base_url="http://127.0.0.1")
            for page in ("/", "/?flag=interruption", f"/calls/{copies[0].id}"):
                client.get(page)
                start = time.perf_counter()
                assert client.get(page).status_code == 200
                print(f"  GET {page}: {1000 * (time.perf_counter() - start):.0f} ms")
            store.close()


if __name__ == "__main__":
    main()
