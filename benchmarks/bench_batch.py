"""Batch throughput: calls/hour with 1 and 2 workers, the scaling ratio, and where the time goes.

    PYTHONPATH=. python benchmarks/bench_batch.py [--calls 600] [--workers 1 2] [--engine local]

Text: synthetic transcripts made by recombining the turns of the sample calls
(samples/calls) into new calls of 12-30 turns with fresh timings, written to a
temporary folder (nothing is committed). Audio: copies of the four test calls in
tests/data/audio (synthesised Mandarin, stereo and mono, 16 kHz and 8 kHz G.711;
see benchmarks/make_test_calls.py), under new names so each is a new call.

Each figure is one `run_batch` into a fresh run folder, so it includes starting
the workers and loading their models, as a QA team's overnight run does; the
start-up alone is measured with a one-call batch and printed too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import soundfile

from pipeline import batch
from pipeline.config import load_config
from pipeline.readers import RoleMap, read_calls

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "calls"
AUDIO = REPO / "tests" / "data" / "audio"
STAGES = ("read", "transcribe", "tag", "events", "outcome", "score", "write", "store")


def synthetic_calls(folder: Path, count: int, seed: int = 7) -> None:
    """`count` JSON calls recombined from the sample calls' turns, agents A001-A020 over one week."""
    roles = RoleMap(load_config()["roles"])
    turns = {"agent": [], "customer": []}
    for path in sorted(SAMPLES.iterdir()):
        if path.suffix in (".json", ".txt", ".csv"):
            for call in read_calls(path, roles):
                for turn in call.turns:
                    if turn.role in turns:
                        turns[turn.role].append(turn.text)
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        clock, out = 0.0, []
        for n in range(rng.randint(12, 30)):
            role = "agent" if n % 2 == 0 else "customer"
            text = rng.choice(turns[role])
            start = clock + rng.uniform(-0.8, 2.5) if out else rng.uniform(0.3, 1.5)
            end = max(start, 0) + 0.22 * len(text) + 0.3  # about 4.5 characters a second
            out.append({"role": role, "text": text, "start": round(max(start, 0), 2), "end": round(end, 2)})
            clock = end
        call = {"id": f"synthetic_{i:05d}", "agent_id": f"A{rng.randint(1, 20):03d}",
                "date": f"2026-11-{16 + i % 7}", "turns": out}
        (folder / f"{call['id']}.json").write_text(json.dumps(call, ensure_ascii=False), encoding="utf-8")


def audio_calls(folder: Path, copies: int) -> float:
    """`copies` renamed copies of each test recording; returns the seconds of audio written."""
    folder.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    for i in range(copies):
        for path in sorted(AUDIO.glob("*.wav")):
            shutil.copy(path, folder / f"{path.stem}_{i:02d}.wav")
            seconds += soundfile.info(str(path)).duration
    return seconds


def compare(inputs: Path, workers: list[int], engine: str, scratch: Path) -> None:
    results = {}
    for count in workers:
        results[count] = measure(inputs, count, engine, scratch)
        report(f"{count} worker(s)", results[count])
    if 1 in results and 2 in results:
        print(f"  scaling 1 -> 2 workers: x{results[2].calls_per_hour / results[1].calls_per_hour:.2f}")


def measure(inputs: Path, workers: int, engine: str, scratch: Path) -> batch.Summary:
    out = Path(tempfile.mkdtemp(dir=scratch, prefix=f"run{workers}_"))
    return batch.run_batch(inputs, out, workers=workers, engine=engine, progress=False)


def report(label: str, summary: batch.Summary) -> None:
    calls = summary.scored
    print(f"  {label}: {calls} calls in {summary.seconds:.1f} s = {summary.calls_per_hour:,.0f} calls/hour "
          f"(failed {summary.failed})")
    spent = sum(summary.stage_seconds.values())
    for stage in STAGES:
        seconds = summary.stage_seconds.get(stage)
        if seconds:
            print(f"      {stage:<10} {seconds:7.2f} s  {1000 * seconds / max(calls, 1):7.1f} ms/call  "
                  f"{100 * seconds / spent:5.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=600, help="synthetic text calls (default 600)")
    parser.add_argument("--audio-copies", type=int, default=3, help="copies of the 4 test recordings (default 3)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    args = parser.parse_args()
    print(f"machine: {batch._cores()} usable cores, load average {os.getloadavg()[0]:.2f} "
          f"(other work on the machine lowers these figures); engine {args.engine}")
    with tempfile.TemporaryDirectory(prefix="callqa-bench-") as scratch:
        scratch = Path(scratch)
        synthetic_calls(scratch / "one", 1)
        synthetic_calls(scratch / "text", args.calls)
        startup = measure(scratch / "one", 1, args.engine, scratch)
        print(f"start-up (pool, models, first call) with a one-call batch: {startup.seconds:.1f} s")
        print(f"text: {args.calls} synthetic calls (sample turns recombined, 12-30 turns each)")
        compare(scratch / "text", args.workers, args.engine, scratch)
        if importlib.util.find_spec("faster_whisper") is None:
            print("audio: not measured: the speech stage's faster-whisper is not installed")
            return
        seconds = audio_calls(scratch / "audio", args.audio_copies)
        calls = 4 * args.audio_copies
        print(f"audio: {calls} recordings, {seconds / 60:.1f} min of audio ({seconds / calls:.0f} s a call)")
        compare(scratch / "audio", args.workers, args.engine, scratch)


if __name__ == "__main__":
    main()
