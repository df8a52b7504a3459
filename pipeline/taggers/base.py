"""The tagger interface shared by every tagger.

Shaped like a scikit-learn estimator:

    tagger.fit(texts, roles, label_sets)  -> tagger
    tagger.predict(texts, roles)          -> list[list[TagHit]]

`texts` are normalised utterances, `roles` their speakers ("agent" /
"customer"), `label_sets` the gold labels per utterance (agent tags from
`pipeline.model.AGENT_TAGS` plus "sentiment.negative"/"sentiment.positive";
neutral sentiment is the absence of both). A rule-based tagger's `fit` learns
nothing and returns itself; a classifier's `fit` trains.

A hit covers the characters that triggered it; a classifier that labels whole
utterances returns the full span (0, len(text)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from pipeline.model import Call, Tag


@dataclass(frozen=True)
class TagHit:
    label: str
    char_start: int
    char_end: int
    confidence: float = 1.0
    rule: str | None = None


class Tagger(Protocol):
    name: str

    def fit(
        self,
        texts: Sequence[str],
        roles: Sequence[str],
        label_sets: Sequence[set[str]],
    ) -> "Tagger": ...

    def predict(self, texts: Sequence[str], roles: Sequence[str]) -> list[list[TagHit]]: ...


def predict_label_sets(
    tagger: Tagger, texts: Sequence[str], roles: Sequence[str]
) -> list[set[str]]:
    """Utterance-level labels, for evaluation against gold label sets."""
    return [{h.label for h in hits} for hits in tagger.predict(texts, roles)]


def sentiment_of(labels: set[str]) -> str:
    if "sentiment.negative" in labels:
        return "negative"
    if "sentiment.positive" in labels:
        return "positive"
    return "neutral"


def tag_call(call: Call, tagger: Tagger) -> Call:
    """Pipeline stage: tag every turn of the call and set each turn's sentiment."""
    texts = [t.text for t in call.turns]
    roles = [t.role for t in call.turns]
    all_hits = tagger.predict(texts, roles)
    call.tags = []
    for turn, hits in zip(call.turns, all_hits):
        for hit in hits:
            call.tags.append(
                Tag(
                    label=hit.label,
                    turn_id=turn.id,
                    char_start=hit.char_start,
                    char_end=hit.char_end,
                    text=turn.text[hit.char_start : hit.char_end],
                    confidence=hit.confidence,
                    source=tagger.name,
                    rule=hit.rule,
                )
            )
        turn.sentiment = sentiment_of({h.label for h in hits})
    call.versions["tagger"] = tagger.name
    return call
