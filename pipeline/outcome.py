"""Customer-outcome signals: how the call ended for the customer.

Read from the customer's turns after tagging (configs/outcome.yaml):
- sentiment at the start and at the end: the tagger's sentiment of the
  customer's first and last turns, and whether they ended calmer or angrier;
- resolution, from the customer's last turns: a complaint threat, "still not
  solved", or thanks / "solved";
- what the customer says back: repeating themselves, correcting the agent,
  asking to be let finish, checking anyone is listening, not following the
  explanation (phrase lists); a customer turn that says much the same as one of
  their own turns before the agent's last reply (character-bigram overlap); an
  agent's check ("…，对吧？") answered without a yes; a customer asking which of
  two things the agent just said holds ("一粒还是两粒？": the agent contradicted
  itself).

Every signal keeps its turns, so the report can show what it rests on and a
scorecard rule can use it as a condition ({outcome: customer_repeat}).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

from pipeline.model import Call, Outcome, OutcomeSignal, Turn
from pipeline.normalize import overlap, spoken_text

_SENTENCE = re.compile(r"[^。？！]+[。？！]*")

SENTIMENT_RANK = {"negative": 0, "neutral": 1, "positive": 2}
# Checked in this order on the customer's last turns: the first that is said decides.
RESOLUTION_ORDER = ("complaint", "unresolved", "resolved")


class OutcomeConfigError(ValueError):
    pass


@lru_cache(maxsize=8)
def load_outcome_config(path: str) -> dict:
    """The settings with every pattern list compiled to one regex; errors name the file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise OutcomeConfigError(f"{path}: cannot read the outcome settings: {err}") from None

    def compiled(key: str, patterns) -> re.Pattern:
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise OutcomeConfigError(f"{path}: `{key}` must be a list of regular expressions")
        try:
            return re.compile("|".join(f"(?:{p})" for p in patterns))
        except re.error as err:
            raise OutcomeConfigError(f"{path}: `{key}` has an invalid regular expression: {err}") from None

    try:
        again = data["said_again"]
        return {
            "end_turns": int(data["end_turns"]),
            "resolution": {kind: compiled(kind, data[kind]) for kind in RESOLUTION_ORDER},
            "reactions": {kind: compiled(f"reactions.{kind}", patterns)
                          for kind, patterns in data["reactions"].items()},
            "repeat_kinds": [str(k) for k in data["repeat_kinds"]],
            "similarity": float(again["similarity"]),
            "min_chars": int(again["min_chars"]),
            "look_back": int(again["look_back"]),
            "confirming": compiled("confirming", [data["confirming"]]),
            "check_question": compiled("check_question", [data["check_question"]]),
            "which_question": compiled("which_question", [data["which_question"]]),
        }
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise OutcomeConfigError(f"{path}: missing or malformed setting {err}") from None


def _signal(kind: str, turns: list[Turn], note: str = "", text: str | None = None) -> OutcomeSignal:
    return OutcomeSignal(kind=kind, turn_ids=[t.id for t in turns],
                         text=text if text is not None else " / ".join(t.text for t in turns), note=note)


def _said_again(call: Call, settings: dict) -> list[OutcomeSignal]:
    """Customer turns (or a sentence of them) that restate one of the customer's
    turns (or a sentence of it) from before the agent's last reply. Sentences
    too, not only whole turns: a question asked again inside a longer turn is
    still asked again, and the answer must not depend on where a recording's
    turns were cut."""
    found = []
    # Customer turns with their comparable parts (split once per turn): those the
    # agent has since replied to, and those since the agent last spoke.
    earlier: list[tuple[Turn, list[str]]] = []
    pending: list[tuple[Turn, list[str]]] = []
    for turn in call.turns:
        if turn.role == "agent":
            earlier = (earlier + pending)[-settings["look_back"]:]
            pending = []
            continue
        if turn.role != "customer":
            continue
        said = _sentences(turn.text, settings["min_chars"])
        pending.append((turn, said))
        if settings["confirming"].search(turn.text):
            continue  # a yes to the agent's restatement
        for before, before_said in reversed(earlier):
            share = max((overlap(a, b) for a in said for b in before_said), default=0.0)
            if share >= settings["similarity"]:
                found.append(_signal("customer_repeat", [turn], f"says again turn {before.id} ({share:.0%} alike)",
                                     turn.text))
                break
    return found


def _sentences(text: str, min_chars: int) -> list[str]:
    """The parts of a turn worth comparing, the whole turn and each of its
    sentences: at least `min_chars` spoken characters and not mostly digits (a
    number read out again is no repeat)."""
    kept = []
    sentences = _SENTENCE.findall(text)
    for sentence in [text] + (sentences if len(sentences) > 1 else []):
        spoken = spoken_text(sentence)
        if len(spoken) >= min_chars and sum(ch.isdigit() for ch in spoken) * 2 <= len(spoken):
            kept.append(sentence)
    return kept


def _checks_denied(call: Call, settings: dict) -> list[OutcomeSignal]:
    """Customer answers to an agent's check ("…，对吧？") that do not start with a yes."""
    found = []
    for agent, answer in zip(call.turns, call.turns[1:]):
        if agent.role == "agent" and answer.role == "customer" \
                and settings["check_question"].search(agent.text.strip()) \
                and not settings["confirming"].search(answer.text):
            found.append(_signal("customer_correction", [answer], f"no yes to the check in turn {agent.id}",
                                 answer.text))
    return found


def _asks_which(call: Call, settings: dict) -> list[OutcomeSignal]:
    """Customer questions "A还是B？" where A and B (two characters or more next
    to 还是) are both in the agent's turn just before: the explanation gave
    both, so the customer cannot tell which."""
    found = []
    for agent, question in zip(call.turns, call.turns[1:]):
        if agent.role != "agent" or question.role != "customer":
            continue
        for match in settings["which_question"].finditer(question.text):
            # "到底是一粒还是两粒": the options are the words next to 还是
            first, second = match.group("first"), match.group("second")
            if any(first[-n:] in agent.text for n in range(2, len(first) + 1)) \
                    and any(second[:n] in agent.text for n in range(2, len(second) + 1)):
                found.append(_signal("customer_confused", [question],
                                     f"asks which of turn {agent.id}'s answers holds", match.group(0)))
                break
    return found


def _phrases(customer: list[Turn], kind: str, pattern: re.Pattern) -> list[OutcomeSignal]:
    out = []
    for turn in customer:
        match = pattern.search(turn.text)
        if match:
            out.append(_signal(kind, [turn], "said", match.group(0)))
    return out


SENTIMENT_KINDS = ("calmer", "angrier", "ended_negative")


def read_sentiment_change(call: Call) -> Call:
    """The sentiment part of the outcome, from the turns' sentiment: the customer's
    first and last turn, calmer / angrier, ended_negative. Run again after
    reviewers change a turn's sentiment (pipeline.review.verdicts.reviewed_call)."""
    outcome = call.outcome
    customer = [t for t in call.turns if t.role == "customer"]
    if outcome is None or not customer:
        return call
    outcome.signals = [s for s in outcome.signals if s.kind not in SENTIMENT_KINDS]
    first, last = customer[0], customer[-1]
    outcome.start_sentiment, outcome.end_sentiment = first.sentiment, last.sentiment
    outcome.sentiment_change = None
    found = []
    if first.sentiment and last.sentiment and first is not last:
        change = SENTIMENT_RANK[last.sentiment] - SENTIMENT_RANK[first.sentiment]
        outcome.sentiment_change = "calmer" if change > 0 else "angrier" if change < 0 else "same"
        if change:
            found.append(_signal(outcome.sentiment_change, [first, last],
                                 f"customer {first.sentiment} at the start, {last.sentiment} at the end"))
    if last.sentiment == "negative":
        found.append(_signal("ended_negative", [last], "the customer's last turn is negative"))
    outcome.signals = found + outcome.signals
    return call


def detect_outcome(call: Call, settings: dict) -> Call:
    """Pipeline stage: the customer's outcome signals (after tagging)."""
    customer = [t for t in call.turns if t.role == "customer"]
    outcome = Outcome()
    call.outcome = outcome
    if not customer:
        return call
    read_sentiment_change(call)
    ending = customer[-settings["end_turns"]:]
    for kind in RESOLUTION_ORDER:
        said = _phrases(ending, kind, settings["resolution"][kind])
        if said:
            outcome.resolution = kind
            outcome.signals.append(said[-1])
            break
    # A complaint threat earlier in the call is kept even when the end sounds resolved.
    ending_ids = {t.id for t in ending}
    outcome.signals += [s for s in _phrases(customer, "complaint", settings["resolution"]["complaint"])
                        if s.turn_ids[0] not in ending_ids]
    reactions = _said_again(call, settings) + _checks_denied(call, settings) + _asks_which(call, settings)
    # The customer's first turn states the problem; it cannot react to the agent
    # (我要的是… there is about the order, not a correction of the agent).
    for kind, pattern in settings["reactions"].items():
        reactions += _phrases(customer[1:], kind, pattern)
    outcome.customer_repeats = len({s.turn_ids[0] for s in reactions if s.kind in settings["repeat_kinds"]})
    outcome.signals += sorted(reactions, key=lambda s: s.turn_ids[0])
    return call
