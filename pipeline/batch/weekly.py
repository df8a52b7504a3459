"""The weekly report for QA leads: one HTML page per batch run, its figures as CSV.

    report.html                   grade distribution, score distribution per dimension,
                                  per-agent table (change against a previous run when
                                  given), the most frequent flags with example moments
                                  linked to the review app and to the per-call page
    report/grades.csv             calls per grade
    report/dimensions.csv         calls per 10-point score bin, per dimension
    report/agents.csv             the per-agent table (what `--previous` reads back)
    report/flags.csv              calls per flag (a deducted scorecard rule)
    report/human_agreement.csv    machine against human scores, when the manifest had them

Charts are matplotlib PNGs embedded in the page, so the report is one file to
mail. The report works from `CallSummary`s, a few numbers per call, so a batch of
any size keeps only those in memory.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib import font_manager, rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.model import Call
from pipeline.report import batch_rows, safe_name, write_atomic, write_csv
from pipeline.scorecard import Scorecard

BIN_WIDTH = 10  # score distribution bins: 0-9, 10-19, ..., 90-100
TOP_FLAGS = 10
EXAMPLES_PER_FLAG = 3
CHART_AGENTS = 30  # the chart shows the lowest-scoring agents; the table shows all
GRADE_COLOURS = ("#1b7f3b", "#2f6db3", "#b37a00", "#c0392b", "#7f1d1d")

log = logging.getLogger("callqa.batch")
_env = Environment(loader=PackageLoader("pipeline.batch", "templates"), autoescape=select_autoescape())


class PreviousRunError(ValueError):
    pass


@dataclass
class Flag:
    """A deducted rule in one call, at the first moment of its evidence."""

    rule_id: str
    description: str
    dimension: str
    turn_id: int | None
    start: float | None
    text: str


@dataclass
class CallSummary:
    call_id: str
    agent_id: str
    team: str
    date: str
    total: float
    grade: str
    dimensions: dict[str, float | None]  # None: no occasion (N/A)
    flags: list[Flag]
    row: dict  # the call's row of scores.csv


def summarize(call: Call) -> CallSummary:
    flags = []
    for dimension in call.scores.dimensions.values():
        for result in dimension.results:
            if result.status == "deduct":
                first = result.evidence[0] if result.evidence else None
                flags.append(Flag(result.rule_id, result.description, dimension.name,
                                  first.turn_ids[0] if first and first.turn_ids else None,
                                  first.start if first else None, first.text if first else ""))
    return CallSummary(call.id, call.agent_id or "", call.team or "", call.date or "", call.scores.total,
                       call.scores.grade, {d.name: d.score for d in call.scores.dimensions.values()},
                       flags, batch_rows([call])[1][0])


# --- figures -------------------------------------------------------------------

def grade_rows(calls: list[CallSummary], scorecard: Scorecard) -> list[dict]:
    counts = Counter(c.grade for c in calls)
    return [dict(grade=g.name, min_score=g.min, calls=counts.get(g.name, 0),
                 share=round(counts.get(g.name, 0) / len(calls), 4) if calls else 0.0)
            for g in scorecard.grades]


def dimension_rows(calls: list[CallSummary], scorecard: Scorecard) -> list[dict]:
    rows = []
    for name, dimension in scorecard.dimensions.items():
        scores = [c.dimensions.get(name) for c in calls]
        bins = Counter(min(int(s // BIN_WIDTH), 100 // BIN_WIDTH - 1) for s in scores if s is not None)
        for b in range(100 // BIN_WIDTH):
            upper = b * BIN_WIDTH + BIN_WIDTH - (0 if b == 100 // BIN_WIDTH - 1 else 1)
            rows.append(dict(dimension=name, label=dimension.label, bin=f"{b * BIN_WIDTH}-{upper}",
                             calls=bins.get(b, 0)))
        rows.append(dict(dimension=name, label=dimension.label, bin="N/A",
                         calls=sum(1 for s in scores if s is None)))
    return rows


def agent_rows(calls: list[CallSummary], scorecard: Scorecard, previous: dict[str, dict] | None) -> list[dict]:
    lowest_grade = scorecard.grades[-1].name
    by_agent = defaultdict(list)
    for call in calls:
        by_agent[call.agent_id or "(unknown)"].append(call)
    rows = []
    for agent, own in sorted(by_agent.items()):
        flags = Counter(f.description for c in own for f in {f.rule_id: f for f in c.flags}.values())
        top, top_count = flags.most_common(1)[0] if flags else ("", 0)
        row = dict(agent_id=agent, team=Counter(c.team for c in own).most_common(1)[0][0], calls=len(own),
                   mean_total=_mean([c.total for c in own]))
        for name in scorecard.dimensions:
            row[f"mean_{name}"] = _mean([c.dimensions.get(name) for c in own])
        row.update(fail_rate=round(sum(c.grade == lowest_grade for c in own) / len(own), 3),
                   flagged_rate=round(sum(bool(c.flags) for c in own) / len(own), 3),
                   flags_per_call=round(sum(len(c.flags) for c in own) / len(own), 2),
                   top_flag=top, top_flag_rate=round(top_count / len(own), 3))
        if previous is not None:
            before = previous.get(agent, {})
            for key in ["mean_total", *(f"mean_{n}" for n in scorecard.dimensions), "flags_per_call"]:
                row[f"change_{key}"] = _change(row[key], before.get(key))
        rows.append(row)
    return rows


def flag_rows(calls: list[CallSummary], review_url: str) -> list[dict]:
    """Flags by the number of calls they occur in, each with example moments."""
    counts, examples, first = Counter(), defaultdict(list), {}
    for call in calls:
        for flag in {f.rule_id: f for f in call.flags}.values():
            counts[flag.rule_id] += 1
            first.setdefault(flag.rule_id, flag)
            if len(examples[flag.rule_id]) < EXAMPLES_PER_FLAG:
                examples[flag.rule_id].append((call, flag))
    rows = []
    for rule_id, count in counts.most_common():
        row = dict(rule_id=rule_id, description=first[rule_id].description, dimension=first[rule_id].dimension,
                   calls=count, share=round(count / len(calls), 4))
        for i, (call, flag) in enumerate(examples[rule_id], start=1):
            anchor = f"#turn-{flag.turn_id}" if flag.turn_id is not None else ""
            row[f"example_{i}"] = f"{review_url.rstrip('/')}/calls/{quote(call.call_id, safe='')}{anchor}"
            row[f"example_{i}_page"] = f"calls/{safe_name(call.call_id)}.html{anchor}"
            row[f"example_{i}_text"] = flag.text
        rows.append(row)
    return rows


def agreement_rows(calls: list[CallSummary], human_scores: dict[str, dict[str, float]],
                   scorecard: Scorecard) -> list[dict]:
    """Machine against human score per dimension, over the calls that have both."""
    rows = []
    for name in ["total", *scorecard.dimensions]:
        pairs = [(c.total if name == "total" else c.dimensions.get(name), human_scores[c.call_id][name])
                 for c in calls if name in human_scores.get(c.call_id, {})]
        pairs = [(m, h) for m, h in pairs if m is not None]
        if not pairs:
            continue
        machine, human = np.array(pairs, dtype=float).T
        correlation = (round(float(np.corrcoef(machine, human)[0, 1]), 3)
                       if len(pairs) >= 3 and machine.std() > 0 and human.std() > 0 else "")
        rows.append(dict(dimension=name, calls=len(pairs), mean_machine=round(float(machine.mean()), 1),
                         mean_human=round(float(human.mean()), 1),
                         mean_abs_difference=round(float(np.abs(machine - human).mean()), 1),
                         correlation=correlation))
    return rows


def _mean(values) -> float | str:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 1) if values else ""


def _change(now, before) -> float | str:
    try:
        return round(float(now) - float(before), 1)
    except (TypeError, ValueError):
        return ""  # a new agent, or a dimension without occasion in one of the runs


def read_previous(run_dir: Path) -> dict[str, dict]:
    """agent id -> that agent's row in a previous run's report/agents.csv."""
    path = run_dir / "report" / "agents.csv"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError:
        raise PreviousRunError(f"{path}: no per-agent figures there; --previous must be the folder "
                               f"of an earlier `callqa batch` run") from None
    return {row["agent_id"]: row for row in csv.DictReader(io.StringIO(text))}


# --- charts --------------------------------------------------------------------

def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _grade_chart(grades: list[dict]) -> str:
    figure = Figure(figsize=(5, 3))
    axes = figure.subplots()
    bars = axes.bar([g["grade"] for g in grades], [g["calls"] for g in grades], color=GRADE_COLOURS[:len(grades)])
    axes.bar_label(bars)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("通话数")
    axes.set_title("等级分布")
    return _png(figure)


def _dimension_chart(dimensions: list[dict], scorecard: Scorecard) -> str:
    figure = Figure(figsize=(3 * len(scorecard.dimensions), 2.8))
    for axes, (name, dimension) in zip(figure.subplots(1, len(scorecard.dimensions), squeeze=False)[0],
                                       scorecard.dimensions.items()):
        rows = [r for r in dimensions if r["dimension"] == name and r["bin"] != "N/A"]
        axes.bar([r["bin"].split("-")[0] for r in rows], [r["calls"] for r in rows], color="#2f6db3")
        axes.set_title(f"{dimension.label} {name}")
        axes.set_xlabel("分数")
        axes.tick_params(axis="x", labelsize=7)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.axes[0].set_ylabel("通话数")
    return _png(figure)


def _agent_chart(agents: list[dict], previous: dict[str, dict] | None) -> str:
    shown = sorted((a for a in agents if a["mean_total"] != ""), key=lambda a: a["mean_total"])[:CHART_AGENTS]
    figure = Figure(figsize=(6, 0.8 + 0.3 * len(shown)))
    axes = figure.subplots()
    names = [a["agent_id"] for a in shown]
    axes.barh(names, [a["mean_total"] for a in shown], color="#2f6db3", label="本期")
    if previous:
        before = [(i, float(previous[n]["mean_total"])) for i, n in enumerate(names)
                  if previous.get(n, {}).get("mean_total")]
        if before:
            axes.scatter([b for _, b in before], [i for i, _ in before], color="#c0392b", marker="|", s=200,
                         label="上期", zorder=3)
    axes.set_xlim(0, 100)
    axes.set_xlabel("平均总分")
    axes.set_title("坐席平均总分" + (f"(最低的 {CHART_AGENTS} 位)" if len(agents) > CHART_AGENTS else ""))
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)


def _flag_chart(flags: list[dict]) -> str:
    top = flags[:TOP_FLAGS][::-1]
    figure = Figure(figsize=(6, 0.8 + 0.35 * len(top)))
    axes = figure.subplots()
    axes.barh([f["description"] for f in top], [100 * f["share"] for f in top], color="#c0392b")
    axes.set_xlabel("出现该问题的通话 %")
    axes.set_title("最常见的扣分项")
    return _png(figure)


def _chart_style(font: str) -> dict:
    try:
        font_manager.findfont(font_manager.FontProperties(family=font), fallback_to_default=False)
    except ValueError:
        log.warning("font %r not found: Chinese chart labels will show as boxes "
                    "(Debian: apt-get install fonts-noto-cjk)", font)
        return {}
    return {"font.family": [font], "axes.unicode_minus": False}


# --- the page -------------------------------------------------------------------

def write_weekly_report(calls: list[CallSummary], out_dir: Path, scorecard: Scorecard, config: dict, *,
                        failed: int = 0, human_scores: dict[str, dict[str, float]] | None = None,
                        previous: Path | None = None) -> Path:
    """Write report.html and report/*.csv into the run folder; returns the page's path."""
    before = read_previous(previous) if previous else None
    settings = config["report"]
    figures = dict(grades=grade_rows(calls, scorecard), dimensions=dimension_rows(calls, scorecard),
                   agents=agent_rows(calls, scorecard, before),
                   flags=flag_rows(calls, settings["review_app_url"]))
    agreement = agreement_rows(calls, human_scores or {}, scorecard)
    if agreement:
        figures["human_agreement"] = agreement
    for name, rows in figures.items():
        header = list(dict.fromkeys(key for row in rows for key in row)) or ["none"]
        write_csv(out_dir / "report" / f"{name}.csv", header, rows)
    charts = {}
    if calls:
        with rc_context(_chart_style(settings["font"])):
            charts = dict(grades=_grade_chart(figures["grades"]),
                          dimensions=_dimension_chart(figures["dimensions"], scorecard),
                          agents=_agent_chart(figures["agents"], before))
            if figures["flags"]:
                charts["flags"] = _flag_chart(figures["flags"])
    dates = sorted(c.date for c in calls if c.date)
    page = _env.get_template("weekly.html").render(
        run=out_dir.name, calls=len(calls), failed=failed, dates=(dates[0], dates[-1]) if dates else None,
        mean_total=_mean([c.total for c in calls]), scorecard=scorecard, figures=figures, charts=charts,
        previous=previous, top_flags=figures["flags"][:TOP_FLAGS], examples=EXAMPLES_PER_FLAG)
    path = out_dir / "report.html"
    write_atomic(path, page)
    return path
