"""The one data model that flows through every stage.

A `Call` starts with turns (from a transcript reader or from speech recognition);
the tagger adds `Tag`s, the event detector adds `Event`s, the outcome stage adds
the customer's `Outcome` and the scorecard adds `Scores`. Everything serialises to JSON and back without loss
(`call.to_json()` / `Call.from_json()`).

Times are seconds from the start of the call; `None` where the input had none.
Character offsets (`char_start`, `char_end`) index the turn's normalised `text`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["agent", "customer", "unknown"]
ROLES: tuple[str, ...] = ("agent", "customer", "unknown")

AGENT_TAGS: tuple[str, ...] = (
    "greeting",
    "backchannel",
    "confirmation",
    "empathy",
    "perfunctory",
    "rigid",
    "polite",
    "apology",
    "vague",
    "impatient",
    "proactive",
    "commitment",
    "closing",
)
SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")


class _Model(BaseModel):
    # Unknown keys are an error so that a typo in a hand-written JSON transcript
    # is reported instead of silently dropped.
    model_config = ConfigDict(extra="forbid")


class Word(_Model):
    """A recognised word with its own times (filled by the speech stage)."""

    text: str
    start: float
    end: float
    probability: float | None = None


class Turn(_Model):
    """One utterance by one speaker."""

    id: int
    role: Role
    text: str
    start: float | None = None
    end: float | None = None
    speaker: str | None = None  # the label in the source ("坐席", "A", cluster id)
    channel: int | None = None  # audio channel, for stereo recordings
    asr_confidence: float | None = None  # mean word probability, 0..1
    low_confidence: bool = False  # ASR marked this segment as unreliable
    words: list[Word] = Field(default_factory=list)
    sentiment: Literal["negative", "neutral", "positive"] | None = None

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return max(0.0, self.end - self.start)


class Tag(_Model):
    """A label on (part of) a turn, from a tagger."""

    label: str  # an AGENT_TAGS entry, or "sentiment.negative" / "sentiment.positive"
    turn_id: int
    char_start: int
    char_end: int
    text: str  # the matched text (the whole turn for classifier tags)
    confidence: float = 1.0
    source: str = "lexicon"  # which tagger produced it
    rule: str | None = None  # lexicon entry or pattern that fired, for review


class Event(_Model):
    """Something measured from timing: interruption, silence, speech rate..."""

    kind: str
    role: Role | None = None  # who did it (the interrupter, the silent party)
    start: float | None = None
    end: float | None = None
    turn_ids: list[int] = Field(default_factory=list)
    value: float | None = None  # seconds, 字/分钟 or a ratio, per kind
    detail: str = ""


class Evidence(_Model):
    """What a trainer needs to find and replay the moment behind a rule result."""

    turn_ids: list[int]
    speaker: Role | None = None
    start: float | None = None
    end: float | None = None
    text: str = ""
    note: str = ""
    points: float = 0.0  # this occurrence's share of the rule's points (0 once capped)


class RuleResult(_Model):
    rule_id: str
    dimension: str
    description: str
    status: Literal["pass", "deduct", "bonus", "na", "excepted"]
    points: float = 0.0  # negative for a deduction, positive for a bonus
    severity: Literal["normal", "critical"] = "normal"
    evidence: list[Evidence] = Field(default_factory=list)


class DimensionScore(_Model):
    name: str
    label: str
    score: float | None  # None when the dimension had no occasion (N/A)
    applicable: bool
    results: list[RuleResult] = Field(default_factory=list)


class Scores(_Model):
    dimensions: dict[str, DimensionScore]
    total: float
    grade: str
    critical_failed: bool = False
    scorecard: str = ""  # name and version of the scorecard used


class OutcomeSignal(_Model):
    """One sign of how the call ended for the customer, with the turns it rests on."""

    kind: str  # resolved | unresolved | complaint | calmer | angrier | customer_repeat | ...
    turn_ids: list[int]
    text: str = ""
    note: str = ""


class Outcome(_Model):
    """The customer's side of the call (pipeline.outcome): how they sounded at the
    start and at the end, whether the problem ended solved, and how often they
    had to repeat or correct themselves. Shown beside the grade."""

    start_sentiment: Literal["negative", "neutral", "positive"] | None = None
    end_sentiment: Literal["negative", "neutral", "positive"] | None = None
    sentiment_change: Literal["calmer", "same", "angrier"] | None = None
    resolution: Literal["resolved", "unresolved", "complaint", "unknown"] = "unknown"
    customer_repeats: int = 0  # turns where the customer repeated, corrected or asked to finish
    signals: list[OutcomeSignal] = Field(default_factory=list)


class AudioInfo(_Model):
    path: str
    sample_rate: int | None = None
    channels: int | None = None
    duration: float | None = None
    agent_channel: int | None = None
    role_confidence: float | None = None  # how sure the agent/customer assignment is
    sha256: str | None = None
    # False when talking at once cannot be told from the recording (a mono mix): the
    # events stage then reports no interruptions instead of a silent "none".
    overlaps_measurable: bool | None = None


class Call(_Model):
    id: str
    source: str = ""  # the file it was read from
    turns: list[Turn] = Field(default_factory=list)
    tags: list[Tag] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    scores: Scores | None = None
    outcome: Outcome | None = None  # None for calls scored before outcome signals existed
    agent_id: str | None = None
    team: str | None = None
    date: str | None = None
    industry: str | None = None
    audio: AudioInfo | None = None
    warnings: list[str] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)  # stage -> model/config version
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def has_times(self) -> bool:
        return bool(self.turns) and all(
            t.start is not None and t.end is not None for t in self.turns
        )

    def turn(self, turn_id: int) -> Turn:
        return self.turns[self._index()[turn_id]]

    def _index(self) -> dict[int, int]:
        return {t.id: i for i, t in enumerate(self.turns)}

    def tags_for(self, turn_id: int) -> list[Tag]:
        return [t for t in self.tags if t.turn_id == turn_id]

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "Call":
        return cls.model_validate_json(text)
