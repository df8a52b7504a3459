"""Timing events measured from turn times (the `events:` section of the config).

Kinds produced, each with its time span and turns:
- interruption      the agent talks over the customer (Alibaba 抢话)
- customer_overlap  the customer talks over the agent (a frustration signal)
- silence           a gap with nobody speaking; `role` is who spoke next, i.e.
                    who kept the other waiting
- speech_rate       字/分钟 per role over the call; evidence = the fastest turns
- talk_ratio        the agent's share of speaking time
- first_response    seconds until the agent first answers

Calls without times get no events. Calls from stereo audio arrive with
interruption / customer_overlap events measured from per-channel speech
activity; those are kept, not recomputed from turn times.
"""

from __future__ import annotations

from pipeline.model import Call, Event, Turn
from pipeline.normalize import count_spoken_chars

OVERLAP_KINDS = ("interruption", "customer_overlap")
_SENTENCE_END = ("。", "？", "！", "?", "!", "…")
_LOOKBACK_TURNS = 12


def detect_events(call: Call, config: dict) -> Call:
    """Pipeline stage: add timing events to the call."""
    if not call.has_times:
        return call
    settings = config["events"]
    turns = sorted(call.turns, key=lambda t: (t.start, t.end))
    kept = [e for e in call.events if e.kind in OVERLAP_KINDS]
    events = kept if kept else _overlaps(call, turns, settings)
    events += _silences(turns, _silence_threshold(settings["silence"]))
    events += _speech_rates(turns, settings["speech_rate"])
    events += _talk_ratio(turns)
    events += _first_response(turns)
    call.events = sorted(events, key=lambda e: (e.start or 0.0, e.kind))
    return call


def _substantive_chars(call: Call, turn: Turn) -> int:
    """Spoken characters left once backchannel words (嗯, 好的) are taken out."""
    text = turn.text
    for tag in call.tags_for(turn.id):
        if tag.label == "backchannel":
            text = text[: tag.char_start] + text[tag.char_end :]
    return count_spoken_chars(text)


def _overlaps(call: Call, turns: list[Turn], settings: dict) -> list[Event]:
    events = []
    agent_rules, customer_rules = settings["interruption"], settings["customer_overlap"]
    for i, later in enumerate(turns):
        # Only recent turns can still be running; the window keeps 3-hour calls linear.
        for earlier in turns[max(0, i - _LOOKBACK_TURNS) : i]:
            if earlier.role == later.role or earlier.role == "unknown" or later.role == "unknown":
                continue
            overlap = min(earlier.end, later.end) - later.start
            if overlap <= 0:
                continue
            rules = agent_rules if later.role == "agent" else customer_rules
            kind = "interruption" if later.role == "agent" else "customer_overlap"
            if overlap < rules["min_overlap"]:
                continue
            if _substantive_chars(call, later) < agent_rules["min_chars"]:
                continue  # a backchannel over someone is listening, not interrupting
            if later.start - earlier.start < agent_rules["delay_time"]:
                continue  # both started together: nobody cut in
            events.append(Event(
                kind=kind, role=later.role, start=later.start, end=later.start + overlap,
                turn_ids=[earlier.id, later.id], value=round(overlap, 2),
                detail=f"{later.role} started {overlap:.1f} s before the {earlier.role} finished",
            ))
    events += _cut_ins(call, turns, agent_rules)
    return events


def _cut_ins(call: Call, turns: list[Turn], rules: dict) -> list[Event]:
    """Agent starts right after a customer turn that stopped mid-sentence and the
    customer then carries on: the customer was cut off without any overlap."""
    events = []
    for before, agent, after in zip(turns, turns[1:], turns[2:]):
        if (before.role, agent.role, after.role) != ("customer", "agent", "customer"):
            continue
        gap = agent.start - before.end
        stopped_mid_sentence = not before.text.rstrip().endswith(_SENTENCE_END)
        if 0 <= gap <= rules["cut_in_max_gap"] and stopped_mid_sentence \
                and _substantive_chars(call, agent) >= rules["min_chars"]:
            events.append(Event(
                kind="interruption", role="agent", start=agent.start, end=agent.start,
                turn_ids=[before.id, agent.id], value=0.0,
                detail=f"agent cut in {gap:.1f} s after the customer stopped mid-sentence",
            ))
    return events


def _silence_threshold(settings: dict) -> float:
    if settings.get("threshold") is not None:
        return float(settings["threshold"])
    return float(settings["presets"][settings["preset"]])


def _silences(turns: list[Turn], threshold: float) -> list[Event]:
    events = []
    speech_end = turns[0].end
    last = turns[0]
    for turn in turns[1:]:
        gap = turn.start - speech_end
        if gap >= threshold:
            events.append(Event(
                kind="silence", role=turn.role, start=speech_end, end=turn.start,
                turn_ids=[last.id, turn.id], value=round(gap, 2),
                detail=f"{gap:.1f} s of silence before the {turn.role} spoke",
            ))
        if turn.end >= speech_end:
            speech_end, last = turn.end, turn
    return events


def _rate(turn: Turn) -> float:
    return count_spoken_chars(turn.text) / turn.duration * 60 if turn.duration else 0.0


def _speech_rates(turns: list[Turn], settings: dict) -> list[Event]:
    events = []
    for role in ("agent", "customer"):
        own = [t for t in turns if t.role == role and t.duration]
        seconds = sum(t.duration for t in own)
        if seconds < settings["min_speech_seconds"]:
            continue
        chars = sum(count_spoken_chars(t.text) for t in own)
        fastest = sorted(own, key=_rate, reverse=True)[: settings["evidence_turns"]]
        events.append(Event(
            kind="speech_rate", role=role, start=own[0].start, end=own[-1].end,
            turn_ids=sorted(t.id for t in fastest), value=round(chars / seconds * 60, 1),
            detail=f"{chars} 字 in {seconds:.1f} s of speech",
        ))
    return events


def _talk_ratio(turns: list[Turn]) -> list[Event]:
    agent = sum(t.duration or 0 for t in turns if t.role == "agent")
    customer = sum(t.duration or 0 for t in turns if t.role == "customer")
    if agent + customer == 0:
        return []
    return [Event(kind="talk_ratio", role="agent", start=turns[0].start, end=turns[-1].end,
                  value=round(agent / (agent + customer), 3),
                  detail=f"agent {agent:.0f} s, customer {customer:.0f} s")]


def _first_response(turns: list[Turn]) -> list[Event]:
    first_agent = next((t for t in turns if t.role == "agent"), None)
    if first_agent is None:
        return []
    customer_before = [t for t in turns if t.role == "customer" and t.start < first_agent.start]
    since = customer_before[0].end if customer_before else 0.0
    wait = max(0.0, first_agent.start - since)
    return [Event(kind="first_response", role="agent", start=since, end=first_agent.start,
                  turn_ids=[t.id for t in customer_before[:1]] + [first_agent.id],
                  value=round(wait, 2), detail=f"agent first spoke after {wait:.1f} s")]
