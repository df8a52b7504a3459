"""Text-path throughput on this machine.

Prints, for each tagger, tagging speed (utterances/s) and end-to-end scoring
speed (calls/s and calls/hour, read + tag + events + score, no file output) on
the bundled sample calls, in one process. The lexicon tagger uses one core;
BERT uses torch's threads (all cores unless told otherwise).

    python benchmarks/bench_text.py [--repeat 20] [--taggers lexicon bert]
"""

import argparse
import time
from pathlib import Path

from pipeline.config import load_config
from pipeline.scoring import Scorer

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "calls"


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--taggers", nargs="+", default=["lexicon", "bert"], choices=("lexicon", "bert", "ensemble"))
    args = parser.parse_args()
    for kind in args.taggers:
        config = load_config()
        config["tagger"]["kind"] = kind
        measure(Scorer(config), kind, args.repeat)


def measure(scorer: Scorer, kind: str, repeat: int) -> None:
    calls = [c for path in sorted(SAMPLES.iterdir()) for c in scorer.read(path)]
    texts = [t.text for c in calls for t in c.turns]
    roles = [t.role for c in calls for t in c.turns]
    scorer.tagger.predict(texts[:10], roles[:10])  # load dictionaries and weights outside the timing
    cores = "1 core"
    if kind != "lexicon":
        import torch

        cores = f"torch threads {torch.get_num_threads()}"

    seconds = timed(lambda: scorer.tagger.predict(texts, roles), repeat)
    print(f"{kind} tagging: {len(texts) / seconds:,.0f} utterances/s "
          f"({len(texts)} utterances, mean {sum(map(len, texts)) / len(texts):.1f} chars, {cores})")

    def score_all():
        for path in sorted(SAMPLES.iterdir()):
            for call in scorer.read(path):
                scorer.score(call)

    seconds = timed(score_all, max(3, repeat // 4))
    print(f"{kind} end to end (read+tag+events+score): {len(calls) / seconds:,.1f} calls/s = "
          f"{len(calls) / seconds * 3600:,.0f} calls/hour ({len(calls)} calls, "
          f"{len(texts) / len(calls):.0f} turns/call, {cores})")
    stages = dict(scorer.stages())  # tag, events, outcome, score: what `callqa score` runs
    per_call_ms = {name: sum(timed(lambda: stage(c), 5) for c in calls) / len(calls) * 1000
                   for name, stage in stages.items()}
    print(f"{kind} per call: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in per_call_ms.items()))


if __name__ == "__main__":
    main()
