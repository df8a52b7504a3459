"""Robustness check on real JD.com chats (../shared/real/dialogues, research data).

Scores the 300 JDDC sessions with the text pipeline and prints the grade
distribution, tag rates per agent turn, the rules that deduct most often and a
few flagged examples per tag so a person can judge them.

    python benchmarks/jddc_check.py [--examples 5] [--tagger ensemble]
"""

import argparse
import json
import random
from collections import Counter
from pathlib import Path

from pipeline.config import load_config
from pipeline.model import Call, Turn
from pipeline.normalize import normalize_text
from pipeline.scoring import Scorer

JDDC = Path(__file__).resolve().parents[2] / "shared" / "real" / "dialogues" / "jddc2019_sample.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", type=Path, default=JDDC)
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--tagger", choices=("lexicon", "bert", "ensemble"), help="override tagger.kind")
    args = parser.parse_args()
    config = load_config()
    if args.tagger:
        config["tagger"]["kind"] = args.tagger
    scorer = Scorer(config)
    calls = []
    for line in args.path.read_text(encoding="utf-8").splitlines():
        s = json.loads(line)
        turns = [Turn(id=i, role=t["role"], text=normalize_text(t["text"])) for i, t in enumerate(s["turns"])]
        calls.append(scorer.score(Call(id=s["id"], turns=turns)))
    agent_turns = sum(1 for c in calls for t in c.turns if t.role == "agent")
    customer_turns = sum(1 for c in calls for t in c.turns if t.role == "customer")
    print(f"{len(calls)} sessions, {agent_turns} agent turns, {customer_turns} customer turns")
    print("grades:", dict(Counter(c.scores.grade for c in calls).most_common()))
    mean = sum(c.scores.total for c in calls) / len(calls)
    print(f"mean total {mean:.1f}")
    for name in calls[0].scores.dimensions:
        applicable = [c.scores.dimensions[name].score for c in calls if c.scores.dimensions[name].applicable]
        print(f"  {name:10s} applicable in {len(applicable):3d} sessions, mean {sum(applicable) / max(1, len(applicable)):.1f}")
    per_label = Counter()
    examples: dict[str, list[str]] = {}
    for c in calls:
        for turn_id, label in sorted({(t.turn_id, t.label) for t in c.tags}):
            turn = c.turn(turn_id)
            if label.startswith("sentiment") and turn.role != "customer":
                continue  # customer sentiment is what the empathy rules read
            per_label[label] += 1
            examples.setdefault(label, []).append(turn.text)
    print("turns carrying each tag (share of that role's turns; sentiment: customer turns):")
    for label, n in sorted(per_label.items()):
        base = customer_turns if label.startswith("sentiment") else agent_turns
        print(f"  {label:20s} {n:5d}  {n / base:6.1%}")
    deductions = Counter(r.rule_id for c in calls for d in c.scores.dimensions.values()
                         for r in d.results if r.status == "deduct")
    print("most frequent deductions:", deductions.most_common(8))
    rng = random.Random(0)
    for label in ("rigid", "vague", "impatient", "perfunctory", "empathy", "sentiment.negative"):
        sample = rng.sample(examples.get(label, []), min(args.examples, len(examples.get(label, []))))
        print(f"--- {label}:" + "".join(f"\n    {text}" for text in sample))


if __name__ == "__main__":
    main()
