"""Text-path throughput on this machine.

Prints lexicon tagging speed (utterances/s, one process = one core) and
end-to-end scoring speed (calls/s and calls/hour, read + tag + events + score,
no file output) on the bundled sample calls.

    python benchmarks/bench_text.py [--repeat 20]
"""

import argparse
import time
from pathlib import Path

from pipeline.events import detect_events
from pipeline.scorecard import score_call
from pipeline.scoring import Scorer
from pipeline.taggers import tag_call

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
    args = parser.parse_args()
    scorer = Scorer()
    calls = [c for path in sorted(SAMPLES.iterdir()) for c in scorer.read(path)]
    texts = [t.text for c in calls for t in c.turns]
    roles = [t.role for c in calls for t in c.turns]
    scorer.tagger.predict(texts[:10], roles[:10])  # load jieba's dictionary outside the timing

    seconds = timed(lambda: scorer.tagger.predict(texts, roles), args.repeat)
    print(f"lexicon tagging: {len(texts) / seconds:,.0f} utterances/s "
          f"({len(texts)} utterances, mean {sum(map(len, texts)) / len(texts):.1f} chars, 1 core)")

    def score_all():
        for path in sorted(SAMPLES.iterdir()):
            for call in scorer.read(path):
                scorer.score(call)

    seconds = timed(score_all, max(3, args.repeat // 4))
    print(f"end to end (read+tag+events+score): {len(calls) / seconds:,.1f} calls/s = "
          f"{len(calls) / seconds * 3600:,.0f} calls/hour ({len(calls)} calls, "
          f"{len(texts) / len(calls):.0f} turns/call, 1 core)")
    stages = {"tag": lambda c: tag_call(c, scorer.tagger),
              "events": lambda c: detect_events(c, scorer.config),
              "score": lambda c: score_call(c, scorer.scorecard)}
    per_call_ms = {name: sum(timed(lambda: stage(c), 5) for c in calls) / len(calls) * 1000
                   for name, stage in stages.items()}
    print("per call: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in per_call_ms.items()))

if __name__ == "__main__":
    main()
