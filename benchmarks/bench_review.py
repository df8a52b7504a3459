"""Review app latency as verdicts grow: the calls list and rule-precision pages.

    python benchmarks/bench_review.py [--calls 10000] [--clients 20] [--requests 10] [--store FILE]

Scores the sample calls once (lexicon tagger), saves copies under new ids into a
fresh SQLite store through the real Store API, and gives every call verdicts
(a confirm and a reject; their stored review results are computed once per
sample and saved per call with `Store.save_review`, as the app does after a
verdict). Then starts the real app (`callqa review` in a subprocess, uvicorn)
and has `--clients` threads each request the list page and the precision page
`--requests` times, while a reviewer posts a verdict every second (each one
changes the store, so the pages are recomputed: this is the honest case);
prints p50 / p95 / max per page. `--store FILE` keeps the
built store there and reuses it when it exists (measure again without rebuilding).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import config_path, load_config  # noqa: E402
from pipeline.review.store import Store  # noqa: E402
from pipeline.review.verdicts import flags_of, review_summary  # noqa: E402
from pipeline.scorecard import load_scorecard  # noqa: E402
from pipeline.scoring import Scorer  # noqa: E402

SAMPLES = ROOT / "samples" / "calls"


def build_store(path: Path, calls: int) -> None:
    config = load_config()
    config["tagger"]["kind"] = "lexicon"  # fast synthetic calls: the tagger is not what is measured
    scorer = Scorer(config)
    scorecard = load_scorecard(config_path(config, config["scorecard"]))
    samples = [scorer.score(c) for p in sorted(SAMPLES.iterdir()) if p.suffix in (".json", ".txt", ".csv")
               for c in scorer.read(p)]
    store = Store(path)
    start = time.perf_counter()
    for i in range(calls):
        sample = samples[i % len(samples)]
        call = sample.model_copy(update={"id": f"{sample.id}-{i:05d}", "date": f"2026-11-{2 + 7 * (i % 4):02d}"})
        store.save_call(call, "sha", "cfg")
        flags = [f for f in flags_of(call, []) if f.kind == "tag"][:2]
        for flag, verdict in zip(flags, ("confirm", "reject")):
            store.record_verdict(call.id, flag.key, flag.label, verdict, turn_id=flag.turn_id,
                                 reason="wrong_tag" if verdict == "reject" else None)
        verdicts = store.verdicts(call.id)
        if verdicts:
            store.save_review(review_summary(call, verdicts, scorecard))
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1} calls stored ({(i + 1) / (time.perf_counter() - start):.0f}/s)", flush=True)
    with store.engine.connect() as conn:
        n_verdicts = conn.exec_driver_sql("SELECT count(*) FROM verdicts").scalar()
        n_reviewed = conn.exec_driver_sql("SELECT count(*) FROM reviews").scalar()
    print(f"store: {calls} calls, {n_verdicts} verdicts, {n_reviewed} calls with a stored review result")
    store.close()


def start_app(store: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "review", "--store", str(store),
                                "--port", str(port), "--export-dir", str(store.parent / "exports")],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/rules", timeout=120).read()
            return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("callqa review did not answer within 120 s")


def measure(url: str, clients: int, requests: int) -> list[float]:
    times: list[float] = []
    lock = threading.Lock()

    def client():
        for _ in range(requests):
            start = time.perf_counter()
            with urllib.request.urlopen(url, timeout=300) as response:
                response.read()
                assert response.status == 200
            with lock:
                times.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def reviewer(base: str, store_path: Path, stop: threading.Event) -> int:
    """Posts a verdict (confirm) on another call's flag every second until stopped."""
    import json

    store = Store(store_path)
    posted = 0
    for call_id in store.call_ids():
        if stop.wait(1.0):
            break
        flag = next(iter(flags_of(store.get_call(call_id), [])), None)
        if flag is None:
            continue
        body = json.dumps(dict(flag_key=flag.key, label=flag.label, turn_id=flag.turn_id, verdict="confirm"))
        request = urllib.request.Request(f"{base}/verdicts/{urllib.parse.quote(call_id, safe='')}",
                                         data=body.encode(), headers={"Content-Type": "application/json",
                                                                      "Origin": base})
        with urllib.request.urlopen(request, timeout=300) as response:
            assert response.status == 200
        posted += 1
    store.close()
    return posted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10, help="per client and page")
    parser.add_argument("--port", type=int, default=8797)
    parser.add_argument("--store", type=Path, help="keep the store here; reused when it exists")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = args.store or Path(folder) / "callqa.db"
        if not store.exists():
            build_store(store, args.calls)
        app = start_app(store, args.port)
        try:
            base = f"http://127.0.0.1:{args.port}"
            for name, page in [("calls list", "/"), ("calls list, filtered", "/?flag=interruption&week=2026-W47"),
                               ("rule precision", "/rules")]:
                stop, posted = threading.Event(), []
                writer = threading.Thread(target=lambda: posted.append(reviewer(base, store, stop)))
                writer.start()
                try:
                    times = sorted(measure(base + page, args.clients, args.requests))
                finally:
                    stop.set()
                    writer.join()
                p50, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
                print(f"{name} ({page}): {len(times)} requests from {args.clients} concurrent clients while "
                      f"{posted[0]} verdicts were posted: p50 {1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms, "
                      f"max {1000 * times[-1]:.0f} ms")
        finally:
            app.terminate()
            app.wait(timeout=30)


if __name__ == "__main__":
    main()
