"""Writing results: per-call JSON and HTML, the batch CSV, the per-agent summary.

File writes go to a temporary name first and are renamed into place, so an
interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from pipeline.model import AGENT_TAGS, Call

# Tags a trainer should look at (red) and good practice (green).
BAD_TAGS = {"rigid", "vague", "impatient", "perfunctory"}
GOOD_TAGS = {"empathy", "confirmation", "polite", "apology", "proactive", "commitment",
             "greeting", "closing", "backchannel"}
ROLE_LABELS = {"agent": "坐席", "customer": "客户", "unknown": "?"}
EVENT_KINDS = ("interruption", "customer_overlap", "silence")
# Customer-outcome columns of scores.csv (empty for calls scored before outcome signals).
OUTCOME_COLUMNS = ("outcome_resolution", "outcome_start_sentiment", "outcome_end_sentiment",
                   "outcome_sentiment_change", "outcome_customer_repeats")

MAX_NAME_CHARS = 100  # file names stay well under the file system's 255 bytes, CJK included
# Cells a spreadsheet would run as a formula (OWASP "CSV injection"); numbers such
# as -3.5 are left as they are.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

templates = Environment(loader=PackageLoader("pipeline", "templates"), autoescape=select_autoescape())


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def safe_name(call_id: str) -> str:
    """A file name for a call id (or a tag label) that is unique and safe: an id that had
    to be changed (`team/1`, `..`, `.hidden`, very long) also gets a short hash of the
    id, so `team/1` and `team_1` never write over each other."""
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in call_id)
    if name == call_id and not name.startswith(".") and 0 < len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{name.lstrip('.')[:MAX_NAME_CHARS - 9] or 'call'}_{digest}"


# --- per call ---------------------------------------------------------------

def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def highlight(text: str, tags) -> Markup:
    """The turn text with each tagged span wrapped in <mark>; overlapping spans keep the first."""
    spans = sorted(((t.char_start, t.char_end, t.label) for t in tags), key=lambda s: (s[0], -s[1]))
    out, pos = [], 0
    for start, end, label in spans:
        if start < pos or end <= start:
            continue
        css = ("bad" if label in BAD_TAGS else "good" if label in GOOD_TAGS
               else "sentiment-negative" if label == "sentiment.negative" else "neutral")
        out.append(escape(text[pos:start]))
        out.append(Markup('<mark class="{}" title="{}">{}</mark>').format(css, label, text[start:end]))
        pos = end
    out.append(escape(text[pos:]))
    return Markup("").join(out)


def render_call_html(call: Call, audio_src: str | None = None) -> str:
    # Beside each turn: the rules its evidence belongs to, with that occurrence's points.
    # An occurrence spanning turns (an interruption: the customer's turn, then the
    # agent's) sits beside the turn of whoever did it.
    reasons = defaultdict(dict)
    roles = {t.id: t.role for t in call.turns}
    for dim in call.scores.dimensions.values():
        for result in dim.results:
            if result.status not in ("deduct", "bonus", "excepted"):
                continue
            for evidence in result.evidence:
                if evidence.turn_ids:
                    turn_id = next((i for i in evidence.turn_ids if roles.get(i) == evidence.speaker),
                                   evidence.turn_ids[0])
                    shown = reasons[turn_id].get(result.rule_id)
                    points = evidence.points + (shown["points"] if shown else 0.0)
                    reasons[turn_id][result.rule_id] = dict(
                        rule_id=result.rule_id, description=result.description,
                        status=result.status, points=points)
    events = defaultdict(list)
    for event in call.events:
        if event.kind in EVENT_KINDS and event.turn_ids:
            events[event.turn_ids[-1]].append(event)
    rows = [dict(turn=t, clock=clock(t.start) if t.start is not None else "",
                 role_label=ROLE_LABELS[t.role], html=highlight(t.text, call.tags_for(t.id)),
                 reasons=list(reasons.get(t.id, {}).values()), events=events.get(t.id, []))
            for t in call.turns]
    return templates.get_template("call.html").render(call=call, scores=call.scores, rows=rows,
                                                 audio_src=audio_src)


def write_call(call: Call, out_dir: Path) -> None:
    name = safe_name(call.id)
    write_atomic(out_dir / "calls" / f"{name}.json", call.to_json())
    audio = None
    if call.audio is not None:
        audio = os.path.relpath(call.audio.path, out_dir / "calls")
    write_atomic(out_dir / "calls" / f"{name}.html", render_call_html(call, audio))


# --- batch -------------------------------------------------------------------

def _deductions(call: Call) -> Counter:
    return Counter(r.rule_id for d in call.scores.dimensions.values() for r in d.results
                   if r.status == "deduct")


def batch_rows(calls: list[Call]) -> tuple[list[str], list[dict]]:
    dimensions = list(calls[0].scores.dimensions) if calls else []
    header = (["call_id", "source", "agent_id", "team", "date", "total", "grade", "critical_failed"]
              + dimensions + [f"tag_{t}" for t in AGENT_TAGS]
              + ["customer_negative_turns"] + [f"event_{k}" for k in EVENT_KINDS] + list(OUTCOME_COLUMNS)
              + ["deductions"])
    rows = []
    for call in calls:
        tags = Counter(t.label for t in call.tags)
        turns_tagged = {lab: len({t.turn_id for t in call.tags if t.label == lab}) for lab in tags}
        events = Counter(e.kind for e in call.events)
        row = dict(call_id=call.id, source=call.source, agent_id=call.agent_id or "", team=call.team or "",
                   date=call.date or "", total=call.scores.total, grade=call.scores.grade,
                   critical_failed=int(call.scores.critical_failed))
        for name in dimensions:
            score = call.scores.dimensions[name].score
            row[name] = "" if score is None else score
        for tag in AGENT_TAGS:
            row[f"tag_{tag}"] = turns_tagged.get(tag, 0)
        row["customer_negative_turns"] = sum(1 for t in call.turns
                                             if t.role == "customer" and t.sentiment == "negative")
        for kind in EVENT_KINDS:
            row[f"event_{kind}"] = events.get(kind, 0)
        row.update(outcome_row(call))
        row["deductions"] = " ".join(f"{rule}×{n}" if n > 1 else rule for rule, n in sorted(_deductions(call).items()))
        rows.append(row)
    return header, rows


def _csv_cell(value: object) -> object:
    """A cell that a spreadsheet shows as text, never runs: a leading quote before =, +, -, @, tab or CR."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def outcome_row(call: Call) -> dict:
    o = call.outcome
    if o is None:
        return dict.fromkeys(OUTCOME_COLUMNS, "")
    return dict(outcome_resolution=o.resolution, outcome_start_sentiment=o.start_sentiment or "",
                outcome_end_sentiment=o.end_sentiment or "", outcome_sentiment_change=o.sentiment_change or "",
                outcome_customer_repeats=o.customer_repeats)


def _share(calls: list[Call], test) -> float | str:
    """Share of the calls with an outcome for which `test(outcome)` holds."""
    known = [c.outcome for c in calls if c.outcome is not None]
    return round(sum(1 for o in known if test(o)) / len(known), 2) if known else ""


def _csv_text(header: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header)
    writer.writeheader()
    writer.writerows({key: _csv_cell(value) for key, value in row.items()} for row in rows)
    # BOM so that Excel, which QA teams open these in, reads the Chinese correctly.
    return "\ufeff" + buffer.getvalue()


def write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    write_atomic(path, _csv_text(header, rows))


def write_batch_csv(calls: list[Call], path: Path) -> None:
    write_csv(path, *batch_rows(calls))


def agent_summary_rows(calls: list[Call]) -> tuple[list[str], list[dict]]:
    by_agent = defaultdict(list)
    for call in calls:
        if call.agent_id:
            by_agent[call.agent_id].append(call)
    dimensions = list(calls[0].scores.dimensions) if calls else []
    grades = sorted({c.scores.grade for c in calls})
    header = (["agent_id", "team", "calls", "mean_total"] + [f"mean_{d}" for d in dimensions]
              + [f"grade_{g}" for g in grades]
              + ["share_resolved", "share_complaint", "share_ended_negative", "mean_customer_repeats"]
              + ["top_deductions"])
    rows = []
    for agent, own in sorted(by_agent.items()):
        row = dict(agent_id=agent, team=own[0].team or "", calls=len(own),
                   mean_total=round(statistics.fmean(c.scores.total for c in own), 1))
        for d in dimensions:
            values = [c.scores.dimensions[d].score for c in own if c.scores.dimensions[d].applicable]
            row[f"mean_{d}"] = round(statistics.fmean(values), 1) if values else ""
        counts = Counter(c.scores.grade for c in own)
        for g in grades:
            row[f"grade_{g}"] = counts.get(g, 0)
        row["share_resolved"] = _share(own, lambda o: o.resolution == "resolved")
        row["share_complaint"] = _share(own, lambda o: o.resolution == "complaint")
        row["share_ended_negative"] = _share(own, lambda o: o.end_sentiment == "negative")
        repeats = [c.outcome.customer_repeats for c in own if c.outcome is not None]
        row["mean_customer_repeats"] = round(statistics.fmean(repeats), 2) if repeats else ""
        deductions = sum((_deductions(c) for c in own), Counter())
        row["top_deductions"] = " ".join(f"{rule}:{n / len(own):.2f}/call" for rule, n in deductions.most_common(3))
        rows.append(row)
    return header, rows


def write_agent_summary(calls: list[Call], path: Path) -> bool:
    header, rows = agent_summary_rows(calls)
    if not rows:
        return False
    write_csv(path, header, rows)
    return True
