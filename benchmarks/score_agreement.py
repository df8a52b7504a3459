"""How far the scores agree with what a QA reviewer or a human judge expects.

Runs the same code path as `callqa score` (pipeline.scoring.Scorer on whole
calls) over:

- data/scorecard_dev/pairs.jsonl: minimal pairs (one behaviour changed); the
  better call must score strictly higher on that dimension (ties and N/A fail);
- data/scorecard_dev/calls.jsonl: timed calls with an expected verdict per
  dimension (good = score >= 80, bad = < 80, na = no score);
- data/scorecard_dev/jddc_judged.jsonl: verdicts on real JD.com sessions
  (text in ../shared/real/dialogues/jddc2019_sample.jsonl, skipped when absent);
- ../shared/real/dialogues/stc3_dev.jsonl: Spearman of the total, of each
  dimension and of the outcome with the judges' mean S, A and E (skipped when absent);
- ../shared/real/sentiment/waimai_sample.jsonl: sentiment macro-F1 over
  positive/negative, each review tagged as one customer turn (skipped when absent).

    python benchmarks/score_agreement.py [--tagger lexicon|bert] [--scorecard PATH]
                                         [--limit N] [--show-failures N]
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from scipy.stats import spearmanr

from pipeline.config import load_config
from pipeline.model import Call, Turn
from pipeline.normalize import normalize_text
from pipeline.scorecard import load_scorecard
from pipeline.scoring import Scorer
from pipeline.taggers.base import sentiment_of

REPO = Path(__file__).resolve().parents[1]
DEV = REPO / "data" / "scorecard_dev"
REAL = REPO.parent / "shared" / "real"
DIMENSIONS = ("listening", "expression", "empathy", "proactive")
GOOD_FROM = 80.0
# Ordinal codings of the outcome signals, for rank correlations only.
RESOLUTION_RANK = {"complaint": 0, "unresolved": 1, "unknown": 2, "resolved": 3}
SENTIMENT_RANK = {"negative": 0, "neutral": 1, "positive": 2}


def make_call(call_id: str, turns: list[dict], industry: str | None = None) -> Call:
    built = [Turn(id=i, role=t["role"], text=normalize_text(t["text"]),
                  start=t.get("start"), end=t.get("end")) for i, t in enumerate(turns)]
    return Call(id=call_id, turns=built, industry=industry)


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def verdict(score: float | None) -> str:
    return "na" if score is None else "good" if score >= GOOD_FROM else "bad"


def turns_of(spec) -> list[dict]:
    """A call in the dev set is {"turns": [...]} (or the list itself)."""
    return spec["turns"] if isinstance(spec, dict) else spec


# --- the measures -------------------------------------------------------------

def pair_accuracy(scorer: Scorer, pairs: list[dict]) -> dict:
    per_dim: dict[str, list[bool]] = defaultdict(list)
    failures = []
    for p in pairs:
        dim = p["dimension"]
        better = scorer.score(make_call(p["id"] + "/better", turns_of(p["better"]), p.get("industry")))
        worse = scorer.score(make_call(p["id"] + "/worse", turns_of(p["worse"]), p.get("industry")))
        b, w = better.scores.dimensions[dim].score, worse.scores.dimensions[dim].score
        ok = b is not None and w is not None and b > w
        per_dim[dim].append(ok)
        if not ok:
            failures.append((p, b, w, better, worse))
    return {"per_dimension": {d: (sum(v), len(v)) for d, v in per_dim.items()},
            "overall": (sum(sum(v) for v in per_dim.values()), sum(len(v) for v in per_dim.values())),
            "failures": failures}


def verdict_agreement(scorer: Scorer, items: list[tuple[Call, dict]]) -> dict:
    agree: dict[str, list[bool]] = defaultdict(list)
    failures = []
    for call, expected in items:
        scorer.score(call)
        for dim, want in expected.items():
            got = verdict(call.scores.dimensions[dim].score)
            agree[dim].append(got == want)
            if got != want:
                failures.append((call, dim, want, got))
    return {"per_dimension": {d: (sum(v), len(v)) for d, v in agree.items()}, "failures": failures}


def stc3_correlations(scorer: Scorer, rows: list[dict]) -> dict:
    """Spearman of each score and outcome signal with the judges' mean A, S, E.
    A dimension with no score in a dialogue counts as 100 (nothing held against
    the agent)."""
    series: dict[str, list[float]] = defaultdict(list)
    judged: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        call = scorer.score(make_call(row["id"], row["turns"]))
        series["total"].append(call.scores.total)
        for dim in DIMENSIONS:
            score = call.scores.dimensions[dim].score
            series[dim].append(100.0 if score is None else score)
        series["resolution"].append(RESOLUTION_RANK[call.outcome.resolution])
        series["end_sentiment"].append(SENTIMENT_RANK.get(call.outcome.end_sentiment, 1))
        for key in ("S", "A", "E"):
            judged[key].append(row["quality_mean"][key])
    table = {}
    for name, values in series.items():
        table[name] = {key: float(spearmanr(values, judged[key]).statistic) if len(set(values)) > 1 else 0.0
                       for key in judged}
    return table


def sentiment_f1(scorer: Scorer, rows: list[dict]) -> dict:
    texts = [normalize_text(r["text"]) for r in rows]
    predicted = [sentiment_of({h.label for h in hits})
                 for hits in scorer.tagger.predict(texts, ["customer"] * len(texts))]
    gold = [r["label"] for r in rows]
    f1s = {}
    for label in ("positive", "negative"):
        tp = sum(p == g == label for p, g in zip(predicted, gold))
        fp = sum(p == label != g for p, g in zip(predicted, gold))
        fn = sum(g == label != p for p, g in zip(predicted, gold))
        f1s[label] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"macro_f1": statistics.fmean(f1s.values()), **f1s, "n": len(rows)}


# --- running everything ---------------------------------------------------------

class CachedTagger:
    """The configured tagger with its predictions kept in a file, keyed by
    (tagger, role, text): a second run that changes only the scorecard or the
    rules re-tags nothing (a BERT run tags ~6,000 utterances). The tagger tags
    each utterance on its own, so the cache returns exactly what it would."""

    def __init__(self, tagger, path: Path):
        self.tagger, self.path, self.name = tagger, path, tagger.name
        self.cache = pickle.loads(path.read_bytes()) if path.exists() else {}

    def predict(self, texts, roles):
        keys = [(self.name, role, text) for text, role in zip(texts, roles)]
        missing = sorted({k for k in keys if k not in self.cache})
        if missing:
            hits = self.tagger.predict([k[2] for k in missing], [k[1] for k in missing])
            self.cache.update(zip(missing, hits))
        return [self.cache[k] for k in keys]

    def save(self) -> None:
        self.path.write_bytes(pickle.dumps(self.cache))


def build_scorer(tagger: str | None, scorecard: Path | None) -> Scorer:
    config = load_config()
    if tagger:
        config["tagger"] = {**config["tagger"], "kind": tagger}
    return Scorer(config, scorecard=load_scorecard(scorecard) if scorecard else None)


def dev_verdict_items(dev: Path, limit: int | None) -> list[tuple[Call, dict]]:
    path = dev / "calls.jsonl"
    if not path.exists():
        return []
    return [(make_call(r["id"], r["turns"], r.get("industry")), r["expected"]) for r in read_jsonl(path, limit)]


def jddc_verdict_items(dev: Path, real: Path, limit: int | None) -> list[tuple[Call, dict]]:
    judged, sessions = dev / "jddc_judged.jsonl", real / "dialogues" / "jddc2019_sample.jsonl"
    if not judged.exists() or not sessions.exists():
        return []
    text = {s["id"]: s for s in read_jsonl(sessions)}
    return [(make_call(j["session_id"], text[j["session_id"]]["turns"]), j["expected"])
            for j in read_jsonl(judged, limit) if j["session_id"] in text]


def evaluate(scorer: Scorer, dev: Path = DEV, real: Path = REAL, limit: int | None = None) -> dict:
    """Every measure whose data is present; absent data is left out of the result."""
    results: dict = {}
    if (dev / "pairs.jsonl").exists():
        results["pairs"] = pair_accuracy(scorer, read_jsonl(dev / "pairs.jsonl", limit))
    if items := dev_verdict_items(dev, limit):
        results["calls"] = verdict_agreement(scorer, items)
    if items := jddc_verdict_items(dev, real, limit):
        results["jddc"] = verdict_agreement(scorer, items)
    if (path := real / "dialogues" / "stc3_dev.jsonl").exists():
        results["stc3"] = stc3_correlations(scorer, read_jsonl(path, limit))
    if (path := real / "sentiment" / "waimai_sample.jsonl").exists():
        rows = read_jsonl(path)
        if limit:  # both classes in a slice: the file is not shuffled
            rows = [r for r in rows if r["label"] == "positive"][:limit] + \
                   [r for r in rows if r["label"] == "negative"][:limit]
        results["sentiment"] = sentiment_f1(scorer, rows)
    return results


def _share(hits: int, total: int) -> str:
    return f"{hits / total:6.1%} ({hits}/{total})" if total else "   n/a"


def _turns_text(call: Call) -> str:
    return " | ".join(f"{'A' if t.role == 'agent' else 'C'}:{t.text}" for t in call.turns)


def print_report(results: dict, show_failures: int = 0) -> None:
    if "pairs" in results:
        r = results["pairs"]
        print("Minimal pairs: better call strictly higher on the dimension (ties and N/A fail)")
        for dim in DIMENSIONS:
            if dim in r["per_dimension"]:
                print(f"  {dim:11s} {_share(*r['per_dimension'][dim])}")
        print(f"  {'overall':11s} {_share(*r['overall'])}")
        for p, b, w, better, worse in r["failures"][:show_failures]:
            print(f"    FAIL {p['id']} {p['dimension']} {p.get('behaviour', '')}: better {b} worse {w}")
            print(f"      better: {_turns_text(better)}")
            print(f"      worse:  {_turns_text(worse)}")
    for key, title in (("calls", "Timed calls"), ("jddc", "Real JD.com sessions, judged")):
        if key in results:
            r = results[key]
            print(f"{title}: verdict agreement per dimension (good >= {GOOD_FROM:.0f}, bad < {GOOD_FROM:.0f}, na = no score)")
            for dim in DIMENSIONS:
                if dim in r["per_dimension"]:
                    print(f"  {dim:11s} {_share(*r['per_dimension'][dim])}")
            for call, dim, want, got in r["failures"][:show_failures]:
                score = call.scores.dimensions[dim].score
                print(f"    FAIL {call.id} {dim}: expected {want}, got {got} ({score}): "
                      + "; ".join(f"{x.rule_id} {x.points:+.0f}" for x in call.scores.dimensions[dim].results
                                  if x.points))
    if "stc3" in results:
        print("STC-3 dev (195 Weibo dialogues, 19 judges): Spearman with mean S / A / E")
        for name, row in results["stc3"].items():
            print(f"  {name:13s} S {row['S']:+.3f}   A {row['A']:+.3f}   E {row['E']:+.3f}")
    if "sentiment" in results:
        s = results["sentiment"]
        print(f"Real delivery reviews ({s['n']}): sentiment macro-F1 over positive/negative "
              f"{s['macro_f1']:.3f} (positive {s['positive']:.3f}, negative {s['negative']:.3f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tagger", choices=("lexicon", "bert", "ensemble"), help="override tagger.kind")
    parser.add_argument("--scorecard", type=Path, help="a scorecard YAML instead of the configured one")
    parser.add_argument("--dev", type=Path, default=DEV, help="the development set folder")
    parser.add_argument("--real", type=Path, default=REAL, help="the shared real-data folder")
    parser.add_argument("--limit", type=int, help="only the first N items of each set (a quick look)")
    parser.add_argument("--show-failures", type=int, default=0, metavar="N", help="print N failures per set")
    parser.add_argument("--tag-cache", type=Path, metavar="FILE",
                        help="keep the tagger's predictions in FILE and reuse them (for scorecard work; "
                             "delete it when the model changes)")
    args = parser.parse_args(argv)
    try:
        scorer = build_scorer(args.tagger, args.scorecard)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.tag_cache:
        scorer.tagger = CachedTagger(scorer.tagger, args.tag_cache)
    print(f"tagger {scorer.tagger.name}, scorecard {scorer.scorecard.label}")
    results = evaluate(scorer, args.dev, args.real, args.limit)
    if args.tag_cache:
        scorer.tagger.save()
    print_report(results, args.show_failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
