"""The scorecard: dimensions, rules, points and grades from configs/scorecard.yaml.

Rule types
  penalty   deduct `points` for each hit of `when` (or once, with per: call)
  bonus     add `points` for each hit of `when`
  required  deduct `points` once when `when` has no hit
  response  for each hit of `trigger`, expect a hit of `expect` within the next
            `within_turns` turns, or within the next `within_replies` turns of
            `replies_by` (agent) not counting turns that match `skip` (a bare
            嗯/好的 is not a reply); deduct `points` for each one left unanswered

Every rule may have
  max_points    cap on what the rule can deduct or add in one call
  applies_when  condition; without a hit the rule is N/A (not held against the agent)
  unless        condition; with a hit the rule is excepted for this call
  severity      critical: a deduction fails the whole call (grade 不合格, total 0)

A dimension starts at its `base` (default 100). Bonuses lift it toward 100,
never above; deductions are then taken from that figure. So a violation always
costs its full points and a bonus never wins them back: two calls that differ
only by one deduction or one bonus never tie (until 0 or the 100 ceiling).
A dimension whose rules are all N/A has no score and is left out of the total,
which is the weighted mean of the dimensions that apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.model import Call, DimensionScore, Evidence, RuleResult, Scores
from pipeline.rules import Condition, Context, Hit, RuleError, line_of, parse_condition, span_hit

RULE_TYPES = ("penalty", "bonus", "required", "response")
RULE_KEYS = ("id", "dimension", "description", "type", "points", "max_points", "per",
             "when", "trigger", "expect", "within_turns", "within_replies", "replies_by", "skip",
             "applies_when", "unless", "severity")


class ScorecardError(ValueError):
    pass


class _LineDict(dict):
    line: int = 0


class _LineLoader(yaml.SafeLoader):
    """A YAML loader whose mappings remember their line, for error messages."""

    def construct_mapping(self, node, deep=False):
        mapping = _LineDict(super().construct_mapping(node, deep=deep))
        mapping.line = node.start_mark.line + 1
        return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)


@dataclass
class Dimension:
    name: str
    label: str
    weight: float
    base: float


@dataclass
class Rule:
    id: str
    dimension: str
    description: str
    type: str
    points: float
    max_points: float | None
    per_call: bool
    severity: str
    when: Condition | None
    trigger: Condition | None
    expect: Condition | None
    within_turns: int
    within_replies: int | None
    replies_by: str
    skip: Condition | None
    applies_when: Condition | None
    unless: Condition | None


@dataclass
class Grade:
    name: str
    min: float


@dataclass
class Scorecard:
    name: str
    version: str
    dimensions: dict[str, Dimension]
    rules: list[Rule]
    grades: list[Grade]  # highest first

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def grade_for(self, total: float) -> str:
        return next(g.name for g in self.grades if total >= g.min)


# --- loading ------------------------------------------------------------------

def load_scorecard(path: str | Path) -> Scorecard:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)
    except FileNotFoundError:
        raise ScorecardError(f"{path}: scorecard file not found") from None
    except yaml.YAMLError as err:
        mark, context = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        opened = f" (in what starts at line {context.line + 1})" if context else ""
        raise ScorecardError(f"{where}: not valid YAML: {getattr(err, 'problem', err)}{opened}") from None
    try:
        return _build(data, str(path))
    except RuleError as err:
        raise ScorecardError(str(err)) from None


def _fail(where: str, node, problem: str):
    raise RuleError(f"{where}, {line_of(node)}: {problem}")


def _build(data, where: str) -> Scorecard:
    if not isinstance(data, dict):
        raise RuleError(f"{where}: the scorecard must be a mapping with dimensions, rules and grades")
    for key in ("dimensions", "rules", "grades"):
        if key not in data:
            _fail(where, data, f"missing top-level `{key}`")
    dimensions = {}
    if not isinstance(data["dimensions"], dict) or not data["dimensions"]:
        _fail(where, data, "`dimensions` must map names to {label, weight}")
    for name, spec in data["dimensions"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("weight"), (int, float)) or spec["weight"] < 0:
            _fail(where, spec if isinstance(spec, dict) else data["dimensions"],
                  f"dimension {name!r} needs a non-negative numeric `weight`")
        dimensions[name] = Dimension(name, str(spec.get("label", name)), float(spec["weight"]),
                                     float(spec.get("base", 100)))
    grades = _grades(data["grades"], where, data)
    # `patterns` holds conditions that rules reuse through YAML anchors; each is
    # checked here so that a mistake is reported at its own line.
    if not isinstance(data.get("patterns", {}), dict):
        _fail(where, data, "`patterns` must map names to conditions")
    for name, node in data.get("patterns", {}).items():
        parse_condition(node, f"{where}: pattern {name!r}")
    if not isinstance(data["rules"], list) or not data["rules"]:
        _fail(where, data, "`rules` must be a non-empty list")
    rules, seen = [], set()
    for node in data["rules"]:
        rule = _rule(node, where, dimensions)
        if rule.id in seen:
            _fail(where, node, f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        rules.append(rule)
    return Scorecard(str(data.get("name", Path(where).stem)), str(data.get("version", "1")),
                     dimensions, rules, grades)


def _grades(node, where: str, parent) -> list[Grade]:
    if not isinstance(node, list) or not node:
        _fail(where, parent, "`grades` must be a list of {grade, min}")
    grades = []
    for g in node:
        if not isinstance(g, dict) or "grade" not in g or not isinstance(g.get("min"), (int, float)):
            _fail(where, g if isinstance(g, dict) else parent, "each grade needs `grade` and a numeric `min`")
        grades.append(Grade(str(g["grade"]), float(g["min"])))
    grades.sort(key=lambda g: g.min, reverse=True)
    if grades[-1].min > 0:
        _fail(where, parent, "the lowest grade must have `min: 0` so every score gets a grade")
    return grades


def _rule(node, where: str, dimensions: dict[str, Dimension]) -> Rule:
    if not isinstance(node, dict):
        raise RuleError(f"{where}: each rule must be a mapping, got {node!r}")
    rid = node.get("id")
    here = f"{where}: rule {rid!r}"
    if not rid:
        _fail(where, node, "rule without an `id`")
    unknown = [k for k in node if k not in RULE_KEYS]
    if unknown:
        _fail(here, node, f"unknown key {unknown[0]!r}; rules use {', '.join(RULE_KEYS)}")
    if node.get("dimension") not in dimensions:
        _fail(here, node, f"`dimension` must be one of {', '.join(dimensions)}, got {node.get('dimension')!r}")
    kind = node.get("type")
    if kind not in RULE_TYPES:
        _fail(here, node, f"`type` must be one of {', '.join(RULE_TYPES)}, got {kind!r}")
    points = node.get("points")
    if isinstance(points, bool) or not isinstance(points, (int, float)) or points < 0:
        _fail(here, node, f"`points` must be a non-negative number, got {points!r}")
    cap = node.get("max_points")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap < 0):
        _fail(here, node, f"`max_points` must be a non-negative number, got {cap!r}")
    severity = node.get("severity", "normal")
    if severity not in ("normal", "critical"):
        _fail(here, node, f"`severity` must be normal or critical, got {severity!r}")
    per = node.get("per", "hit")
    if per not in ("hit", "call"):
        _fail(here, node, f"`per` must be hit or call, got {per!r}")
    needed = ("trigger", "expect") if kind == "response" else ("when",)
    for key in needed:
        if key not in node:
            _fail(here, node, f"a {kind} rule needs `{key}`")
    replies = node.get("within_replies")
    if replies is not None and (isinstance(replies, bool) or not isinstance(replies, int) or replies < 1):
        _fail(here, node, f"`within_replies` must be a positive whole number, got {replies!r}")
    replies_by = node.get("replies_by", "agent")
    if replies_by not in ("agent", "customer"):
        _fail(here, node, f"`replies_by` must be agent or customer, got {replies_by!r}")
    cond = {k: parse_condition(node[k], here) if k in node else None
            for k in ("when", "trigger", "expect", "skip", "applies_when", "unless")}
    return Rule(id=str(rid), dimension=node["dimension"], description=str(node.get("description", rid)),
                type=kind, points=float(points), max_points=None if cap is None else float(cap),
                per_call=per == "call", severity=severity, within_turns=int(node.get("within_turns", 2)),
                within_replies=replies, replies_by=replies_by, **cond)


# --- scoring ------------------------------------------------------------------

def _evidence(hit: Hit, note: str = "") -> Evidence:
    return Evidence(turn_ids=list(hit.turn_ids), speaker=hit.role, start=hit.start, end=hit.end,
                    text=hit.text, note=note)


def _apply(rule: Rule, ctx: Context) -> RuleResult:
    def result(status: str, points: float = 0.0, evidence=()) -> RuleResult:
        return RuleResult(rule_id=rule.id, dimension=rule.dimension, description=rule.description,
                          status=status, points=points, severity=rule.severity, evidence=list(evidence))

    if rule.applies_when is not None and not rule.applies_when.hits(ctx):
        return result("na")
    if rule.type == "response":
        return _apply_response(rule, ctx, result)
    hits = rule.when.hits(ctx)
    if rule.type == "required":
        if hits:
            return result("pass", evidence=[_evidence(h, "found") for h in hits[:3]])
        scope = rule.when.scope(ctx)[:3]
        missing = [(span_hit(scope), "missing in these turns")] if scope else [(None, "")]
        return _deduct(rule, ctx, result, missing, once=True)
    if not hits:
        return result("pass")
    return _deduct(rule, ctx, result, [(h, "") for h in hits], rule.per_call)


def _apply_response(rule: Rule, ctx: Context, result) -> RuleResult:
    triggers = rule.trigger.hits(ctx)
    if not triggers:
        return result("na")
    answers = {ctx.position(h) for h in rule.expect.hits(ctx)}
    window = _reply_window(rule, ctx)
    unanswered, answered = [], []
    seen_positions = set()
    for trig in sorted(triggers, key=ctx.position):
        p = ctx.position(trig)
        if p in seen_positions:  # two hits in one turn are one occasion
            continue
        seen_positions.add(p)
        if answers & window(p):
            answered.append(trig)
        else:
            unanswered.append(trig)
    if not unanswered:
        return result("pass", evidence=[_evidence(h, "answered") for h in answered[:3]])
    wait = (f"{rule.within_replies} {rule.replies_by} replies" if rule.within_replies
            else f"{rule.within_turns} turns")
    return _deduct(rule, ctx, result, [(h, f"no answer within {wait}") for h in unanswered], rule.per_call)


def _reply_window(rule: Rule, ctx: Context):
    """position -> the positions where an answer counts: the next `within_turns`
    turns, or the next `within_replies` turns of `replies_by` that `skip` leaves."""
    if rule.within_replies is None:
        return lambda p: set(range(p + 1, p + rule.within_turns + 1))
    skipped = {ctx.position(h) for h in rule.skip.hits(ctx)} if rule.skip is not None else set()
    replies = [i for i, t in enumerate(ctx.call.turns) if t.role == rule.replies_by]

    def window(p: int) -> set[int]:
        # a skipped turn that does answer still counts; it just does not use up a reply
        found, counted = set(), 0
        for i in (i for i in replies if i > p):
            found.add(i)
            counted += i not in skipped
            if counted == rule.within_replies:
                break
        return found

    return window


def _deduct(rule: Rule, ctx: Context, result, hits: list, once: bool) -> RuleResult:
    """Deduct (or add) points for the hits. Several hits in one utterance
    ("我不清楚，需要问一下") are one occurrence; each occurrence's share of the
    points is kept on its evidence, up to the rule's cap."""
    if rule.unless is not None:
        exceptions = rule.unless.hits(ctx)
        if exceptions:
            return result("excepted", evidence=[_evidence(h, "exception applies") for h in exceptions[:3]])
    sign = 1 if rule.type == "bonus" else -1
    budget = rule.max_points if rule.max_points is not None else float("inf")
    evidence, counted = [], set()
    for hit, note in hits:
        share = 0.0
        occurrence = None if hit is None else hit.turn_ids
        if occurrence not in counted and not (once and counted):
            counted.add(occurrence)
            share = min(rule.points, budget)
            budget -= share
        if hit is not None:
            evidence.append(_evidence(hit, note).model_copy(update={"points": sign * share}))
    total = min(rule.points * len(counted), rule.max_points if rule.max_points is not None else float("inf"))
    return result("bonus" if sign > 0 else "deduct", sign * total, evidence)


def score_call(call: Call, scorecard: Scorecard) -> Call:
    """Pipeline stage: apply the scorecard to a tagged call with events."""
    ctx = Context(call)
    results = [_apply(rule, ctx) for rule in scorecard.rules]
    dimensions = {}
    for name, dim in scorecard.dimensions.items():
        own = [r for r in results if r.dimension == name]
        applicable = any(r.status != "na" for r in own)
        score = None
        if applicable:
            lifted = min(100.0, dim.base + sum(r.points for r in own if r.points > 0))
            score = round(max(0.0, lifted + sum(r.points for r in own if r.points < 0)), 1)
        dimensions[name] = DimensionScore(name=name, label=dim.label, score=score,
                                          applicable=applicable, results=own)
    weighted = [(scorecard.dimensions[n].weight, d.score) for n, d in dimensions.items() if d.applicable]
    weight_sum = sum(w for w, _ in weighted)
    total = round(sum(w * s for w, s in weighted) / weight_sum, 1) if weight_sum else 100.0
    critical = any(r.severity == "critical" and r.status == "deduct" for r in results)
    if critical:
        total = 0.0
    call.scores = Scores(dimensions=dimensions, total=total, grade=scorecard.grade_for(total),
                         critical_failed=critical, scorecard=scorecard.label)
    call.versions["scorecard"] = scorecard.label
    return call
