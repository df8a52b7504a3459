"""Reviewer verdicts: flags, human-reviewed scores, rule precision, training data, calibration.

A *flag* is something the machine marked that a trainer can check: a tag on a
turn, or a timing event (interruption, customer talking over the agent,
silence). Flags are identified by what they are (label, turn, characters or
time), not by position, so verdicts survive re-scoring the call. Problem flags
(bad tags, customer negative emotion, timing events) are the ones the review
page steps through.

Verdicts: `confirm`, `reject` (reason: wrong_tag, wrong_speaker, asr_error) or
`add` (a flag the machine missed, on a turn). The newest verdict on a flag wins.
The human-reviewed score of a call is the scorecard applied to the call with
rejected flags removed and added ones put in; flags nobody judged stay as the
machine set them.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.model import AGENT_TAGS, Call, Event, Scores, Tag
from pipeline.outcome import read_sentiment_change
from pipeline.review.privacy import Privacy
from pipeline.readers import ReadError, decode_text
from pipeline.report import BAD_TAGS, EVENT_KINDS
from pipeline.scorecard import Scorecard, score_call
from pipeline.review.store import ReviewSummary, Store, Verdict, evidence_items
from pipeline.taggers.base import sentiment_of

TRAINING_LABELS = AGENT_TAGS + ("sentiment.negative", "sentiment.positive")
# What a reviewer can add on a turn: any training label, or a missed interruption.
ADDABLE_LABELS = TRAINING_LABELS + ("interruption",)
PROBLEM_LABELS = frozenset(BAD_TAGS) | {"sentiment.negative"} | set(EVENT_KINDS)


@dataclass
class Flag:
    key: str
    kind: str  # tag | event | added
    label: str
    turn_id: int  # the turn it sits on (an event: the turn that started it)
    start: float | None
    end: float | None
    text: str
    char_start: int | None = None
    char_end: int | None = None
    verdict: Verdict | None = None

    @property
    def problem(self) -> bool:
        return self.label in PROBLEM_LABELS


def tag_key(tag: Tag) -> str:
    return f"tag:{tag.label}:{tag.turn_id}:{tag.char_start}-{tag.char_end}"


def event_key(event: Event) -> str:
    start = "" if event.start is None else f"{event.start:.2f}"
    return f"event:{event.kind}:{'-'.join(map(str, event.turn_ids))}:{start}"


def added_key(label: str, turn_id: int) -> str:
    return f"added:{label}:{turn_id}"


def latest(verdicts: list[Verdict]) -> dict[str, Verdict]:
    """flag key -> the newest verdict on it (verdicts come oldest first)."""
    return {v.flag_key: v for v in verdicts}


def flags_of(call: Call, verdicts: list[Verdict]) -> list[Flag]:
    """Every flag of the call with its newest verdict, in call order."""
    newest = latest(verdicts)
    turns = {t.id: t for t in call.turns}
    flags = []
    for tag in call.tags:
        turn = turns[tag.turn_id]
        flags.append(Flag(tag_key(tag), "tag", tag.label, tag.turn_id, turn.start, turn.end, tag.text,
                          tag.char_start, tag.char_end))
    for event in call.events:
        if event.kind in EVENT_KINDS and event.turn_ids:
            flags.append(Flag(event_key(event), "event", event.kind, event.turn_ids[-1], event.start,
                              event.end, event.detail))
    for key, verdict in newest.items():
        if key.startswith("added:") and verdict.turn_id in turns:
            turn = turns[verdict.turn_id]
            flags.append(Flag(key, "added", verdict.label, turn.id, turn.start, turn.end, turn.text))
    order = {t.id: i for i, t in enumerate(call.turns)}
    for flag in flags:
        flag.verdict = newest.get(flag.key)
    return sorted(flags, key=lambda f: (order[f.turn_id], f.start or 0.0, f.char_start or 0))


def reviewed_call(call: Call, verdicts: list[Verdict]) -> Call:
    """The call as the reviewers see it: rejected flags out, added flags in."""
    newest = latest(verdicts)
    rejected = {k for k, v in newest.items() if v.verdict == "reject"}
    out = call.model_copy(deep=True)
    out.tags = [t for t in out.tags if tag_key(t) not in rejected]
    out.events = [e for e in out.events if event_key(e) not in rejected]
    turns = {t.id: t for t in out.turns}
    previous = {t.id: p.id for p, t in zip(out.turns, out.turns[1:])}
    for key, verdict in newest.items():
        if verdict.verdict != "add" or verdict.turn_id not in turns:
            continue
        turn = turns[verdict.turn_id]
        if verdict.label == "interruption":
            out.events.append(Event(kind="interruption", role=turn.role, start=turn.start, end=turn.start,
                                    turn_ids=[previous.get(turn.id, turn.id), turn.id],
                                    detail="added by a reviewer"))
        else:
            out.tags.append(Tag(label=verdict.label, turn_id=turn.id, char_start=0, char_end=len(turn.text),
                                text=turn.text, source="reviewer", rule=verdict.note or None))
    for turn in out.turns:
        turn.sentiment = sentiment_of({t.label for t in out.tags if t.turn_id == turn.id})
    # a rejected "negative" on the customer's last turn: no longer a customer who ended upset
    return read_sentiment_change(out)


def human_scores(call: Call, verdicts: list[Verdict], scorecard: Scorecard) -> Scores | None:
    """Scores recomputed from the reviewed flags; None when nobody reviewed the call."""
    if not verdicts:
        return None
    return score_call(reviewed_call(call, verdicts), scorecard).scores


# --- rule precision -------------------------------------------------------------

@dataclass
class RulePrecision:
    rule_id: str
    description: str
    fired: int  # evidence items (deductions and bonuses) over every stored call
    reviewed: int  # of those, items on a turn a reviewer gave a verdict on
    upheld: int  # reviewed items still there after the verdicts
    added: int  # items that appear only after reviewers added missed flags

    @property
    def precision(self) -> float | None:
        return self.upheld / self.reviewed if self.reviewed else None


def _evidence_items(scores: Scores) -> dict[str, set[tuple]]:
    items: dict[str, set[tuple]] = defaultdict(set)
    for dim in scores.dimensions.values():
        for result in dim.results:
            items[result.rule_id] |= evidence_items(result)
    return items


def review_summary(call: Call, verdicts: list[Verdict], scorecard: Scorecard,
                   human: Scores | None = None) -> ReviewSummary:
    """What the list and rule-precision pages need from one call's verdicts (`human`:
    their reviewed scores when the caller has them already)."""
    human = human or human_scores(call, verdicts, scorecard)
    machine, reviewed_items = _evidence_items(call.scores), _evidence_items(human)
    judged_turns = {v.turn_id for v in verdicts if v.verdict in ("confirm", "reject")}
    rules = {}
    for rule_id in set(machine) | set(reviewed_items):
        reviewed = {item for item in machine.get(rule_id, ()) if judged_turns & set(item[0])}
        counts = (len(reviewed), len(reviewed & reviewed_items.get(rule_id, set())),
                  len(reviewed_items.get(rule_id, set()) - machine.get(rule_id, set())))
        if any(counts):
            rules[rule_id] = counts
    return ReviewSummary(call.id, scorecard.label, human.total, human.grade, len(verdicts), rules)


def refresh_review(store: Store, call_id: str, scorecard: Scorecard) -> None:
    """Compute and store one call's review result (after a verdict, or when stale)."""
    verdicts = store.verdicts(call_id)
    if verdicts:
        store.save_review(review_summary(store.get_call(call_id), verdicts, scorecard))


def refresh_stale_reviews(store: Store, scorecard: Scorecard) -> int:
    """Recompute the review results a re-scored call, a verdict from outside the app or
    a changed scorecard left stale; usually none, so this is one query."""
    stale = store.stale_reviews(scorecard.label)
    for call_id in stale:
        refresh_review(store, call_id, scorecard)
    return len(stale)


def rule_precision(store: Store, scorecard: Scorecard, fired: dict[str, int] | None = None) -> list[RulePrecision]:
    """Per rule of the scorecard: fired over every stored call (`fired`: Store.rule_fired(),
    when the caller keeps it), and reviewed / upheld / added from the stored review
    results (no call is re-scored here)."""
    refresh_stale_reviews(store, scorecard)
    fired = store.rule_fired() if fired is None else fired
    reviewed = store.rule_reviewed()
    return [RulePrecision(r.id, r.description, fired.get(r.id, 0), *reviewed.get(r.id, (0, 0, 0)))
            for r in scorecard.rules]


# --- corrections as training data ------------------------------------------------

def correction_rows(store: Store, privacy: Privacy | None) -> list[dict]:
    """One row per reviewed turn: text, role, labels after the verdicts, source.

    A turn is reviewed when a reviewer judged or added a tag on it. Turns with an
    ASR error are left out (the text is wrong); a wrong-speaker verdict swaps the
    role. Text is masked unless `privacy` is None."""
    by_call: dict[str, list[Verdict]] = defaultdict(list)
    for verdict in store.verdicts():
        by_call[verdict.call_id].append(verdict)
    rows = []
    for call_id, verdicts in sorted(by_call.items()):
        call = store.get_call(call_id)
        reviewed = reviewed_call(call, verdicts)
        on_turn: dict[int, list[Verdict]] = defaultdict(list)
        for v in latest(verdicts).values():
            if not v.flag_key.startswith("event:") and v.label != "interruption":
                on_turn[v.turn_id].append(v)
        for turn in reviewed.turns:
            judged = on_turn.get(turn.id)
            if not judged or any(v.reason == "asr_error" for v in judged) or turn.role == "unknown":
                continue
            role = turn.role
            if any(v.reason == "wrong_speaker" for v in judged):
                role = "customer" if role == "agent" else "agent"
            labels = sorted({t.label for t in reviewed.tags_for(turn.id)} & set(TRAINING_LABELS))
            rows.append(dict(text=privacy.mask(turn.text) if privacy else turn.text, role=role,
                             labels=labels, source=f"review:{call_id}:{turn.id}"))
    return rows


class ExportError(ValueError):
    pass


def export_corrections(store: Store, out_dir: Path, privacy: Privacy | None) -> int:
    """Write the corrections as a `datasets` dataset (datasets.load_from_disk(out_dir)),
    plus the same rows as out_dir/corrections.jsonl. Returns the number of rows.

    `out_dir` must be new, empty, or an earlier corrections export (which is replaced
    whole): an export is never merged into a folder holding other files. The dataset
    is written beside it and swapped in, and corrections.jsonl through a temporary
    file and os.replace, so a crash leaves the previous export or the new one."""
    from datasets import Dataset, Features, List, Value

    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExportError(f"{out_dir}: exists and is not a folder")
        contents = {p.name for p in out_dir.iterdir()}
        if contents and "corrections.jsonl" not in contents:
            raise ExportError(f"{out_dir}: folder holds other files ({', '.join(sorted(contents)[:3])}…); "
                              "give a new or empty folder, or an earlier corrections export to replace")
    rows = correction_rows(store, privacy)
    features = Features(text=Value("string"), role=Value("string"), labels=List(Value("string")),
                        source=Value("string"))
    dataset = Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        dataset.save_to_disk(str(staging / "dataset"))
        jsonl = staging / "dataset" / ".corrections.jsonl.tmp"
        with open(jsonl, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(jsonl, staging / "dataset" / "corrections.jsonl")
        if out_dir.exists():  # an earlier export: moved aside, then removed once the new one is in
            os.replace(out_dir, staging / "previous")
        os.replace(staging / "dataset", out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(rows)


# --- calibration against human QA scores ----------------------------------------

def read_human_scores(path: Path, scorecard: Scorecard) -> list[tuple[str, str, float]]:
    """(call_id, dimension or "total", score) from a QA sheet: a call_id column and
    columns named after dimensions (listening or 倾听...) and/or total (总分)."""
    text = decode_text(Path(path).read_bytes(), Path(path))
    reader = csv.DictReader(text.splitlines())
    names = {"total": "total", "总分": "total"}
    for dim in scorecard.dimensions.values():
        names[dim.name], names[dim.label] = dim.name, dim.name
    header = reader.fieldnames or []
    columns = {c: names[c.strip()] for c in header if c.strip() in names}
    if "call_id" not in header or not columns:
        raise ReadError(f"{path}: needs a call_id column and at least one score column "
                        f"({', '.join(sorted(names))})")
    rows = []
    for number, row in enumerate(reader, 2):
        for column, dimension in columns.items():
            value = (row.get(column) or "").strip()
            if not value:
                continue
            try:
                rows.append((row["call_id"].strip(), dimension, float(value)))
            except ValueError:
                raise ReadError(f"{path}:{number}: {column} is not a number: {value!r}") from None
    return rows


@dataclass
class Agreement:
    dimension: str
    n: int
    correlation: float | None  # Pearson r; None with fewer than 3 calls or no spread
    mean_abs_diff: float | None


@dataclass
class Disagreement:
    call_id: str
    dimension: str
    machine: float
    human: float

    @property
    def diff(self) -> float:
        return self.machine - self.human


def calibration(store: Store, dimensions: list[str], worst: int = 10) -> tuple[list[Agreement], list[Disagreement]]:
    """Machine vs human scores per dimension (and total), and the calls that disagree most."""
    human = store.human_scores()
    pairs: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for summary in store.list_calls():
        theirs = human.get(summary.id)
        if not theirs:
            continue
        ours = dict(summary.dimensions, total=summary.total)
        for dimension, score in theirs.items():
            if ours.get(dimension) is not None:
                pairs[dimension].append((summary.id, ours[dimension], score))
    agreements, gaps = [], []
    for dimension in ["total"] + dimensions:
        rows = pairs.get(dimension, [])
        machine = np.array([m for _, m, _ in rows])
        people = np.array([h for _, _, h in rows])
        correlation = None
        if len(rows) >= 3 and machine.std() > 0 and people.std() > 0:
            correlation = round(float(np.corrcoef(machine, people)[0, 1]), 3)
        mad = round(statistics.fmean(abs(machine - people)), 2) if rows else None
        agreements.append(Agreement(dimension, len(rows), correlation, mad))
        gaps += [Disagreement(c, dimension, m, h) for c, m, h in rows]
    gaps.sort(key=lambda g: abs(g.diff), reverse=True)
    return agreements, gaps[:worst]
