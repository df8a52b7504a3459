"""Talking over, found in generated calls with known overlaps, through `callqa score`'s path.

    PYTHONPATH=. python benchmarks/bench_overlaps.py DIR [--tagger lexicon|bert|ensemble] [--only mono]

DIR holds calls written by `benchmarks/make_test_calls.py --overlap-set DIR N` (each as
stereo 16 kHz, mono 16 kHz and mono 8 kHz mu-law, with a JSON truth beside it). Every
file goes through Scorer.read + Scorer.score, as `callqa score` runs it. Per condition it
prints precision / recall of agent interruptions and of the customer talking over the
agent (an event matches a planned one of the same kind starting within 1 s), how many
backchannels were kept as turns of their own and how many were counted as talking
over, and the listening verdict (>= 80 good)
against the verdict of the same call scored from its true transcript (roles, texts,
times).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from pipeline.model import Call, Turn
from pipeline.scoring import Scorer
from pipeline.config import load_config

TOLERANCE = 1.0  # a mono voice change is found to about one embedding hop (tests/test_speech.py)
KINDS = ("interruption", "customer_overlap")


def condition(path: Path) -> str:
    return path.stem.split("_", 2)[2]  # overlap_03_mono_8k_ulaw -> mono_8k_ulaw


def matched(found: list, planned: list[dict], tolerance: float = TOLERANCE) -> int:
    """Planned events found (same kind, start within `tolerance` seconds), each at most once."""
    left = list(found)
    hits = 0
    for plan in planned:
        match = next((e for e in left if e.kind == plan["kind"] and abs(e.start - plan["start"]) <= tolerance), None)
        if match is not None:
            left.remove(match)
            hits += 1
    return hits


def is_backchannel_turn(turn, planned: dict) -> bool:
    """A short turn of the same role over the planned backchannel: it was kept as its own turn."""
    overlap = min(turn.end, planned["end"]) - max(turn.start, planned["start"])
    return overlap > 0 and turn.role == planned["role"] and turn.duration < 1.0


def true_call(truth: dict, name: str) -> Call:
    turns = [Turn(id=i, role=t["role"], text=t["text"], start=t["start"], end=t["end"])
             for i, t in enumerate(sorted(truth["turns"], key=lambda t: t["start"]))]
    return Call(id=name, source="truth", turns=turns)


def verdict(call: Call) -> str:
    listening = call.scores.dimensions["listening"].score
    return "n/a" if listening is None else ("good" if listening >= 80 else "bad")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--tagger", choices=("lexicon", "bert", "ensemble"), help="override tagger.kind")
    parser.add_argument("--only", default="", help="only files whose name contains this")
    args = parser.parse_args()

    config = load_config()
    if args.tagger:
        config["tagger"]["kind"] = args.tagger
    scorer = Scorer(config, speech_overrides={"progress": False})
    # condition -> counters
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for path in sorted(p for p in args.folder.iterdir() if p.suffix in (".flac", ".wav") and args.only in p.name):
        truth = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        started = time.perf_counter()
        [call] = scorer.read(path, agent_channel=truth["agent_channel"])
        call = scorer.score(call)
        seconds = time.perf_counter() - started
        expected = scorer.score(true_call(truth, path.stem))
        counts = totals[condition(path)]
        counts["audio_s"] += truth["turns"][-1]["end"]
        counts["seconds"] += seconds
        for kind in KINDS:
            found = [e for e in call.events if e.kind == kind]
            planned = [o for o in truth["overlaps"] if o["kind"] == kind]
            hits = matched(found, planned)
            counts[f"{kind}_found"] += len(found)
            counts[f"{kind}_planned"] += len(planned)
            counts[f"{kind}_hits"] += hits
        turns = {t.id: t for t in call.turns}
        over = [turns[e.turn_ids[-1]] for e in call.events if e.kind in KINDS]
        backchannels = truth.get("backchannels", [])
        counts["backchannels"] += len(backchannels)
        counts["backchannels_kept"] += sum(any(is_backchannel_turn(t, b) for t in call.turns) for b in backchannels)
        counts["backchannels_over"] += sum(any(is_backchannel_turn(t, b) for t in over) for b in backchannels)
        counts["verdicts"] += 1
        counts["verdicts_right"] += verdict(call) == verdict(expected)
        print(f"{path.name}: {len([e for e in call.events if e.kind in KINDS])} events found, "
              f"{len(truth['overlaps'])} planned; listening {verdict(call)} (text: {verdict(expected)}); {seconds:.0f} s",
              flush=True)

    print()
    print("| condition | interruptions P / R | customer over agent P / R | backchannels kept "
          "| backchannels counted as talking over | listening verdict = text's | seconds per audio second |")
    print("|---|---|---|---|---|---|---|")
    for name, c in sorted(totals.items()):
        cells = []
        for kind in KINDS:
            precision = c[f"{kind}_hits"] / c[f"{kind}_found"] if c[f"{kind}_found"] else float("nan")
            recall = c[f"{kind}_hits"] / c[f"{kind}_planned"] if c[f"{kind}_planned"] else float("nan")
            cells.append(f"{precision:.2f} / {recall:.2f} ({c[f'{kind}_hits']:.0f} of {c[f'{kind}_planned']:.0f}, "
                         f"{c[f'{kind}_found']:.0f} found)")
        print(f"| {name} | {cells[0]} | {cells[1]} | {c['backchannels_kept']:.0f} of {c['backchannels']:.0f} "
              f"| {c['backchannels_over']:.0f} "
              f"| {c['verdicts_right']:.0f} of {c['verdicts']:.0f} | {c['seconds'] / c['audio_s']:.2f} |")


if __name__ == "__main__":
    main()
