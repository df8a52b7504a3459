"""The condition language of the scorecard.

A condition is a YAML mapping that finds *hits* (moments in the call) and is
built from one primary key plus optional modifiers.

Primary keys
  tag: rigid | [rigid, vague]      turns carrying a tag (from the tagger)
    min_confidence: 0.8            only tags the tagger is at least this sure of
  outcome: customer_repeat | [..]  customer-outcome signals (pipeline.outcome):
                                   resolved, unresolved, complaint, calmer, angrier,
                                   ended_negative, and the reactions in
                                   configs/outcome.yaml (customer_repeat, ...)
  event: interruption              timing events (from pipeline.events)
  restates: {share: 0.5, min_shared: 4}
                                   clauses that take up what the other party said
                                   since this speaker's last turn: at least `share`
                                   of the clause's character bigrams, and `min_shared`
                                   of them (restating or paraphrasing a need)
  phrase: 这是规定 | [..]          literal text in a turn
  regex: '规定.{0,4}这样'          a regular expression, with optional
    exclude: '可以帮您'            a pattern that must not occur in the same turn
  any: [cond, ...]                 hits of every child that has hits
  all: [cond, ...]                 all children must have hits; their hits
  none: [cond, ...]                one hit (the scope) when no child has hits
  at_least: 2, of: [cond, ...]     at least N children have hits; their hits

Modifiers (any combination)
  role: agent | customer | both    whose turns count (default both)
  first_turns / last_turns: N      only the first / last N turns of that role
  first_seconds / last_seconds: N  only turns starting in the first / ending in
                                   the last N seconds
  min_value / max_value: x         event value bounds (字/分钟, seconds, ratio)
  near / not_near: cond            keep hits that have / have no hit of `cond`
    within_chars: N                in the same turn within N characters
  after / not_after: cond          keep hits that have / have no hit of `cond`
    within_turns: N                in the same turn or the N turns before
  followed_by / not_followed_by: cond  keep hits that have / have no hit of `cond`
    within_turns: N                in the same turn or the N turns after
                                   (the customer's reaction to what the agent did)
  max_chars: N                     only hits in turns of at most N spoken characters
  min_count: N                     no hits unless there are at least N

Every hit keeps its turns, role, times and matched text, so a deduction can be
traced to what was said and when.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.model import Call, Turn
from pipeline.normalize import bigrams, count_spoken_chars, normalize_text


class RuleError(ValueError):
    """A problem in a scorecard; the message names the line."""


@dataclass(frozen=True)
class Hit:
    turn_ids: tuple[int, ...]
    role: str | None
    start: float | None
    end: float | None
    text: str
    char_start: int | None = None  # within the first turn, for text hits
    char_end: int | None = None


@dataclass
class Context:
    """What conditions look at: the call plus lookup tables built once per call."""

    call: Call
    order: dict[int, int] = field(init=False)  # turn id -> position in the call
    turns: dict[int, Turn] = field(init=False)

    def __post_init__(self):
        self.order = {t.id: i for i, t in enumerate(self.call.turns)}
        self.turns = {t.id: t for t in self.call.turns}

    def position(self, hit: Hit) -> int:
        return min(self.order[t] for t in hit.turn_ids) if hit.turn_ids else -1


def turn_hit(turn: Turn, start: int | None = None, end: int | None = None) -> Hit:
    text = turn.text if start is None else turn.text[start:end]
    return Hit((turn.id,), turn.role, turn.start, turn.end, text, start, end)


# --- parsing ----------------------------------------------------------------

CLAUSE = re.compile(r"[^，。？！；]+")

PRIMARY_KEYS = ("tag", "event", "outcome", "restates", "phrase", "regex", "any", "all", "none", "at_least")
MODIFIER_KEYS = ("role", "first_turns", "last_turns", "first_seconds", "last_seconds",
                 "min_value", "max_value", "min_confidence", "near", "not_near", "within_chars",
                 "after", "not_after", "followed_by", "not_followed_by", "within_turns",
                 "max_chars", "min_count", "exclude", "of")


def line_of(node) -> str:
    return f"line {getattr(node, 'line', '?')}"


def parse_condition(node, where: str) -> "Condition":
    """Build a Condition from a YAML mapping; `where` prefixes error messages."""
    here = f"{where}, {line_of(node)}"
    if not isinstance(node, dict):
        raise RuleError(f"{here}: a condition must be a mapping such as `tag: rigid`, got {node!r}")
    unknown = [k for k in node if k not in PRIMARY_KEYS + MODIFIER_KEYS]
    if unknown:
        raise RuleError(f"{here}: unknown key {unknown[0]!r}; a condition uses one of "
                        f"{', '.join(PRIMARY_KEYS)} plus modifiers {', '.join(MODIFIER_KEYS)}")
    primary = [k for k in PRIMARY_KEYS if k in node]
    if len(primary) != 1:
        raise RuleError(f"{here}: a condition needs exactly one of {', '.join(PRIMARY_KEYS)}; "
                        f"found {primary or 'none'}")
    kind = primary[0]
    value = node[kind]
    if "min_confidence" in node and kind != "tag":
        raise RuleError(f"{here}: `min_confidence` applies to `tag` conditions only")
    if kind == "tag":
        base: Condition = TagCondition(_strings(value, here, "tag"), _number(node, "min_confidence", here, 0.0))
    elif kind == "outcome":
        base = OutcomeCondition(_strings(value, here, "outcome"))
    elif kind == "restates":
        if not isinstance(value, dict) or set(value) != {"share", "min_shared"}:
            raise RuleError(f"{here}: `restates` needs {{share: 0..1, min_shared: N}}, got {value!r}")
        base = Restates(_number(value, "share", here), _number(value, "min_shared", here))
    elif kind == "event":
        base = EventCondition(_strings(value, here, "event"), node.get("min_value"), node.get("max_value"))
    elif kind == "phrase":
        phrases = [normalize_text(p) for p in _strings(value, here, "phrase")]
        base = TextCondition(re.compile("|".join(map(re.escape, sorted(phrases, key=len, reverse=True)))),
                             _regex(node.get("exclude"), here))
    elif kind == "regex":
        base = TextCondition(_regex(value, here), _regex(node.get("exclude"), here))
    elif kind in ("any", "all", "none"):
        base = BoolCondition(kind, _children(value, here, kind))
    else:
        if not isinstance(value, int) or value < 1:
            raise RuleError(f"{here}: `at_least` must be a positive whole number, got {value!r}")
        if "of" not in node:
            raise RuleError(f"{here}: `at_least: {value}` needs an `of:` list of conditions")
        base = AtLeast(value, _children(node["of"], here, "of"))
    return _with_modifiers(base, node, here)


def _strings(value, here: str, key: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise RuleError(f"{here}: `{key}` must be a string or a list of strings")
    return items


def _regex(value, here: str) -> re.Pattern | None:
    if value is None:
        return None
    try:
        return re.compile(value)  # not normalised: that would turn "?" into "？"
    except (re.error, TypeError) as err:
        raise RuleError(f"{here}: {value!r} is not a valid regular expression: {err}") from None


def _children(value, here: str, key: str) -> list["Condition"]:
    if not isinstance(value, list) or not value:
        raise RuleError(f"{here}: `{key}` must be a non-empty list of conditions")
    return [parse_condition(child, here) for child in value]


def _number(node, key: str, here: str, default=None):
    value = node.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise RuleError(f"{here}: `{key}` must be a non-negative number, got {value!r}")
    return value


def _with_modifiers(base: "Condition", node: dict, here: str) -> "Condition":
    role = node.get("role", "both")
    if role not in ("agent", "customer", "both"):
        raise RuleError(f"{here}: `role` must be agent, customer or both, got {role!r}")
    windows = {k: _number(node, k, here) for k in ("first_turns", "last_turns", "first_seconds", "last_seconds")}
    for key in ("min_value", "max_value"):
        _number(node, key, here)
    if ("min_value" in node or "max_value" in node) and "event" not in node:
        raise RuleError(f"{here}: `min_value`/`max_value` apply to `event` conditions only")
    condition = Scoped(base, role, {k: v for k, v in windows.items() if v is not None})
    for key, keep in (("near", True), ("not_near", False)):
        if key in node:
            condition = Near(condition, parse_condition(node[key], here), keep,
                             _number(node, "within_chars", here, 10))
    for key, keep in (("after", True), ("not_after", False)):
        if key in node:
            condition = After(condition, parse_condition(node[key], here), keep,
                              _number(node, "within_turns", here, 2))
    for key, keep in (("followed_by", True), ("not_followed_by", False)):
        if key in node:
            condition = After(condition, parse_condition(node[key], here), keep,
                              _number(node, "within_turns", here, 2), forward=True)
    if "max_chars" in node:
        condition = MaxChars(condition, _number(node, "max_chars", here))
    if "min_count" in node:
        condition = MinCount(condition, _number(node, "min_count", here))
    return condition


# --- evaluation -------------------------------------------------------------

class Condition:
    def hits(self, ctx: Context) -> list[Hit]:
        raise NotImplementedError

    def scope(self, ctx: Context) -> list[Turn]:
        """The turns this condition looks at (evidence for 'required but missing')."""
        return list(ctx.call.turns)


@dataclass
class TagCondition(Condition):
    labels: list[str]
    min_confidence: float

    def hits(self, ctx):
        return [Hit((t.turn_id,), ctx.turns[t.turn_id].role, ctx.turns[t.turn_id].start,
                    ctx.turns[t.turn_id].end, t.text, t.char_start, t.char_end)
                for t in ctx.call.tags if t.label in self.labels and t.confidence >= self.min_confidence]


@dataclass
class OutcomeCondition(Condition):
    kinds: list[str]

    def hits(self, ctx):
        if ctx.call.outcome is None:
            return []
        found = []
        for signal in ctx.call.outcome.signals:
            turns = [ctx.turns[t] for t in signal.turn_ids if t in ctx.turns]
            if signal.kind in self.kinds and turns:
                found.append(Hit(tuple(t.id for t in turns), turns[0].role, turns[0].start, turns[-1].end,
                                 f"{signal.kind}: {signal.text}" + (f" ({signal.note})" if signal.note else "")))
        return found


@dataclass
class EventCondition(Condition):
    kinds: list[str]
    min_value: float | None
    max_value: float | None

    def hits(self, ctx):
        found = []
        for e in ctx.call.events:
            if e.kind not in self.kinds:
                continue
            if self.min_value is not None and (e.value is None or e.value < self.min_value):
                continue
            if self.max_value is not None and (e.value is None or e.value > self.max_value):
                continue
            quoted = " / ".join(ctx.turns[t].text for t in e.turn_ids if t in ctx.turns)
            measured = f"{e.kind} = {e.value}" if e.value is not None else e.kind
            found.append(Hit(tuple(e.turn_ids), e.role, e.start, e.end,
                             f"{e.detail} ({measured})" + (f": {quoted}" if quoted else "")))
        return found


@dataclass
class Restates(Condition):
    """Clauses made mostly of what the other party said since this speaker's last turn."""

    share: float
    min_shared: float

    def hits(self, ctx):
        found, heard = [], {}  # role -> bigrams the other party said since that role last spoke
        for turn in ctx.call.turns:
            earlier = heard.get(turn.role, set())
            for clause in CLAUSE.finditer(turn.text):
                own = bigrams(clause.group(0))
                shared = own & earlier
                if own and len(shared) >= self.min_shared and len(shared) >= self.share * len(own):
                    found.append(turn_hit(turn, clause.start(), clause.end()))
            heard[turn.role] = set()
            said = bigrams(turn.text)
            for role in ("agent", "customer"):
                if role != turn.role:
                    heard[role] = heard.get(role, set()) | said
        return found


@dataclass
class TextCondition(Condition):
    pattern: re.Pattern
    exclude: re.Pattern | None

    def hits(self, ctx):
        found = []
        for turn in ctx.call.turns:
            if self.exclude is not None and self.exclude.search(turn.text):
                continue
            for m in self.pattern.finditer(turn.text):
                if m.end() > m.start():
                    found.append(turn_hit(turn, m.start(), m.end()))
        return found


@dataclass
class BoolCondition(Condition):
    op: str  # any | all | none
    children: list[Condition]

    def hits(self, ctx):
        per_child = [c.hits(ctx) for c in self.children]
        if self.op == "any":
            return [h for hits in per_child for h in hits]
        if self.op == "all":
            return [h for hits in per_child for h in hits] if all(per_child) else []
        # none: the absence itself is the finding; point at the turns searched.
        if any(per_child):
            return []
        scope = self.scope(ctx)
        return [span_hit(scope)] if scope else []

    def scope(self, ctx):
        ids = {t.id for c in self.children for t in c.scope(ctx)}
        return [t for t in ctx.call.turns if t.id in ids]


@dataclass
class AtLeast(Condition):
    n: int
    children: list[Condition]

    def hits(self, ctx):
        per_child = [hits for c in self.children if (hits := c.hits(ctx))]
        return [h for hits in per_child for h in hits] if len(per_child) >= self.n else []


@dataclass
class Scoped(Condition):
    inner: Condition
    role: str
    windows: dict[str, float]

    def scope(self, ctx):
        turns = [t for t in self.inner.scope(ctx) if self.role == "both" or t.role == self.role]
        if "first_turns" in self.windows:
            turns = turns[: int(self.windows["first_turns"])]
        if "last_turns" in self.windows:
            turns = turns[-int(self.windows["last_turns"]):] if self.windows["last_turns"] else []
        if "first_seconds" in self.windows:
            turns = [t for t in turns if t.start is None or t.start <= self.windows["first_seconds"]]
        if "last_seconds" in self.windows:
            call_end = max((t.end for t in ctx.call.turns if t.end is not None), default=None)
            turns = [t for t in turns if t.end is None or call_end is None
                     or t.end >= call_end - self.windows["last_seconds"]]
        return turns

    def hits(self, ctx):
        allowed = {t.id for t in self.scope(ctx)}
        if isinstance(self.inner, BoolCondition) and self.inner.op == "none":
            # "none" must search only the scoped turns, so scope its children.
            return BoolCondition("none", [Scoped(c, self.role, self.windows) for c in self.inner.children]).hits(ctx)
        hits = self.inner.hits(ctx)
        if isinstance(self.inner, EventCondition):
            # events carry their own role; windows apply to the turns involved
            return [h for h in hits if (self.role == "both" or h.role == self.role)
                    and (not self.windows or any(t in allowed for t in h.turn_ids))]
        return [h for h in hits if any(t in allowed for t in h.turn_ids)]


@dataclass
class Near(Condition):
    inner: Condition
    other: Condition
    keep_if_near: bool
    within_chars: int

    def scope(self, ctx):
        return self.inner.scope(ctx)

    def hits(self, ctx):
        others = self.other.hits(ctx)

        def is_near(h: Hit) -> bool:
            return any(o.turn_ids[:1] == h.turn_ids[:1] and o.char_start is not None
                       and h.char_start is not None
                       and o.char_start - h.char_end <= self.within_chars
                       and h.char_start - o.char_end <= self.within_chars
                       for o in others)

        return [h for h in self.inner.hits(ctx) if is_near(h) == self.keep_if_near]


@dataclass
class After(Condition):
    """after: `other` in the same turn or the N turns before; with forward=True
    (followed_by): in the same turn or the N turns after the hit's last turn."""

    inner: Condition
    other: Condition
    keep_if_after: bool
    within_turns: int
    forward: bool = False

    def scope(self, ctx):
        return self.inner.scope(ctx)

    def hits(self, ctx):
        positions = [ctx.position(o) for o in self.other.hits(ctx)]

        def related(h: Hit) -> bool:
            if self.forward:
                last = max(ctx.order[t] for t in h.turn_ids) if h.turn_ids else -1
                return any(last <= q <= last + self.within_turns for q in positions)
            p = ctx.position(h)
            return any(p - self.within_turns <= q <= p for q in positions)

        return [h for h in self.inner.hits(ctx) if related(h) == self.keep_if_after]


@dataclass
class MaxChars(Condition):
    inner: Condition
    n: float

    def scope(self, ctx):
        return self.inner.scope(ctx)

    def hits(self, ctx):
        return [h for h in self.inner.hits(ctx)
                if h.turn_ids and all(count_spoken_chars(ctx.turns[t].text) <= self.n for t in h.turn_ids)]


@dataclass
class MinCount(Condition):
    inner: Condition
    n: int

    def scope(self, ctx):
        return self.inner.scope(ctx)

    def hits(self, ctx):
        hits = self.inner.hits(ctx)
        return hits if len(hits) >= self.n else []


def span_hit(turns: list[Turn]) -> Hit:
    starts = [t.start for t in turns if t.start is not None]
    ends = [t.end for t in turns if t.end is not None]
    return Hit(tuple(t.id for t in turns), None, min(starts, default=None), max(ends, default=None),
               " / ".join(t.text for t in turns[:3]) + (" …" if len(turns) > 3 else ""))
