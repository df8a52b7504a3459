"""Timing events measured from turn times (the `events:` section of the config).

Kinds produced, each with its time span and turns:
- interruption      the agent talks over the customer (Alibaba 抢话)
- customer_overlap  the customer talks over the agent (a frustration signal)
- silence           a gap with nobody speaking; `role` is who spoke next, i.e.
                    who kept the other waiting
- speech_rate       字/分钟 per role over the call; evidence = the fastest turns
- talk_ratio        the agent's share of speaking time
- first_response    seconds until the agent first answers
- overlaps_not_measurable  the call's audio cannot show two people talking at once
                    (a mono mix) and `interruption.mono_takeover` is off: no
                    interruption / customer_overlap is reported, and rules on them
                    should be N/A rather than "never interrupted"

Overlaps are decided per turn: a turn talks over the other party when it starts
while the other party's turn is still in progress. A turn in progress runs over
short pauses (a comma pause), so a customer resuming after 0.3 s does not make
the agent's cut-in look like "both started together", and one cut-in is one event.
In a mono mix the turns never overlap (speaker separation gives one speaker at a
time), so talking at once is read from how the speaker changed: the other party
starting with no pause at all (`mono_takeover_max_gap`; the speech stage has moved
every speaker change to a pause where there was one) took over while the first was
still speaking. Its length cannot be measured: those events carry no value, and
start `mono_takeover_lead` (one embedding hop) before the voice change, which lies
where the first voice gave way rather than where the second began.
Calls without times get no events. All passes are linear in the number of turns.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.model import Call, Event, Turn
from pipeline.normalize import count_spoken_chars

OVERLAP_KINDS = ("interruption", "customer_overlap")
NOT_MEASURABLE = "overlaps_not_measurable"
_SENTENCE_END = ("。", "？", "！", "?", "!", "…")
# Where the recogniser marks a sentence going on (a comma, not a full stop).
_CLAUSE_BREAK = ("，", ",", "、", "；", ";", "：", ":")


def detect_events(call: Call, config: dict) -> Call:
    """Pipeline stage: add timing events to the call."""
    if not call.has_times:
        return call
    settings = config["events"]
    turns = sorted(call.turns, key=lambda t: (t.start, t.end))
    if call.audio is not None and call.audio.overlaps_measurable is False:
        if settings["interruption"]["mono_takeover"]:
            events = _takeovers(turns, _substantive_by_turn(call, turns), settings)
        else:
            events = [Event(kind=NOT_MEASURABLE, start=turns[0].start, end=turns[-1].end,
                            turn_ids=sorted({turns[0].id, turns[-1].id}),
                            detail="one mixed channel: talking at once cannot be measured")]
    else:
        events = _overlaps(call, turns, settings)
    events += _silences(turns, _silence_threshold(settings["silence"]))
    events += _speech_rates(turns, settings["speech_rate"])
    events += _talk_ratio(turns)
    events += _first_response(turns)
    call.events = sorted(events, key=lambda e: (e.start or 0.0, e.kind))
    return call


def _substantive_chars(turn: Turn, backchannel_spans: dict[int, list[tuple[int, int]]]) -> int:
    """Spoken characters left once backchannel words (嗯, 好的) are taken out."""
    text = turn.text
    for start, end in sorted(backchannel_spans.get(turn.id, []), reverse=True):
        text = text[:start] + text[end:]
    return count_spoken_chars(text)


@dataclass
class _InProgress:
    """One party's talk from a turn's start until a pause longer than `pause_within_turn`."""

    start: float
    end: float
    turns: list[Turn]

    def turn_at(self, time: float) -> Turn:
        """The turn of this stretch that was running (or had just paused) at `time`."""
        return max((t for t in self.turns if t.start < time), key=lambda t: t.start, default=self.turns[0])


def _stretches(turns: list[Turn], pause: float) -> list[_InProgress]:
    stretches: list[_InProgress] = []
    for turn in turns:
        if stretches and turn.start - stretches[-1].end < pause:
            stretches[-1].end = max(stretches[-1].end, turn.end)
            stretches[-1].turns.append(turn)
        else:
            stretches.append(_InProgress(turn.start, turn.end, [turn]))
    return stretches


def _substantive_by_turn(call: Call, turns: list[Turn]) -> dict[int, int]:
    """Spoken characters per turn once backchannel words are taken out: a backchannel
    (嗯, 好的) is listening, it neither talks over nor is talked over."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for tag in call.tags:
        if tag.label == "backchannel":
            spans.setdefault(tag.turn_id, []).append((tag.char_start, tag.char_end))
    return {t.id: _substantive_chars(t, spans) for t in turns}


def _overlaps(call: Call, turns: list[Turn], settings: dict) -> list[Event]:
    substantive = _substantive_by_turn(call, turns)
    timing = settings["interruption"]
    by_role = {role: [t for t in turns if t.role == role and substantive[t.id] >= settings[kind]["min_chars"]]
               for role, kind in (("agent", "interruption"), ("customer", "customer_overlap"))}
    events = _talking_over(by_role["agent"], by_role["customer"], settings["interruption"], timing, "interruption")
    events += _talking_over(by_role["customer"], by_role["agent"], settings["customer_overlap"], timing,
                            "customer_overlap")
    flagged = {e.turn_ids[-1] for e in events}
    events += [e for e in _cut_ins(turns, substantive, timing) if e.turn_ids[-1] not in flagged]
    return events


def _talking_over(talkers: list[Turn], others: list[Turn], rules: dict, timing: dict, kind: str) -> list[Event]:
    """One event per turn of `talkers` that starts while an `others` turn is in progress:
    a sweep over both lists in time order."""
    stretches = _stretches(others, timing["pause_within_turn"])
    events: list[Event] = []
    current = 0
    previous: Turn | None = None
    for turn in talkers:
        while current < len(stretches) and stretches[current].end <= turn.start:
            current += 1
        own_previous, previous = previous, turn
        if current == len(stretches) or stretches[current].start >= turn.start:
            continue
        other = stretches[current]
        if turn.start - other.start < timing["delay_time"]:
            continue  # both started together: nobody cut in
        if (own_previous is not None and own_previous.start < other.start
                and own_previous.end > other.start - timing["pause_within_turn"]
                and turn.start - own_previous.end <= timing["carry_on_gap"]):
            continue  # carrying on her own words after being talked over
        overlap = min(other.end, turn.end) - turn.start
        if overlap < rules["min_overlap"]:
            continue
        interrupted = other.turn_at(turn.start)
        events.append(Event(
            kind=kind, role=turn.role, start=turn.start, end=turn.start + overlap,
            turn_ids=[interrupted.id, turn.id], value=round(overlap, 2),
            detail=f"{turn.role} started {overlap:.1f} s before the {interrupted.role} finished",
        ))
    return events


def _cut_ins(turns: list[Turn], substantive: dict[int, int], rules: dict) -> list[Event]:
    """Agent starts right after a customer turn that stopped mid-sentence and the
    customer then carries on: the customer was cut off without any overlap."""
    events = []
    for before, agent, after in zip(turns, turns[1:], turns[2:]):
        if (before.role, agent.role, after.role) != ("customer", "agent", "customer"):
            continue
        gap = agent.start - before.end
        stopped_mid_sentence = not before.text.rstrip().endswith(_SENTENCE_END)
        if 0 <= gap <= rules["cut_in_max_gap"] and stopped_mid_sentence \
                and substantive[agent.id] >= rules["min_chars"]:
            events.append(Event(
                kind="interruption", role="agent", start=agent.start, end=agent.start,
                turn_ids=[before.id, agent.id], value=0.0,
                detail=f"agent cut in {gap:.1f} s after the customer stopped mid-sentence",
            ))
    return events


def _takeovers(turns: list[Turn], substantive: dict[int, int], settings: dict) -> list[Event]:
    """Mono: the other party starts with no pause after someone who has been talking
    for at least `delay_time`, or the agent starts within `cut_in_max_gap` of a customer
    turn that the recogniser heard going on (it ends at a comma: her next words are
    under the agent's, lost or given to him). Someone taken over who takes the word
    straight back within `carry_on_gap` is carrying on with her own sentence, not
    talking over in turn."""
    timing = settings["interruption"]
    kinds = {"agent": "interruption", "customer": "customer_overlap"}
    events: list[Event] = []
    talking_since = turns[0].start  # when the current speaker's stretch of talk began
    taken_over: Turn | None = None  # the turn that just took over, if any
    for before, turn in zip(turns, turns[1:]):
        gap = turn.start - before.end
        if turn.role == before.role:
            if gap >= timing["pause_within_turn"]:
                talking_since = turn.start
            continue
        previous_stretch, talking_since = talking_since, turn.start
        no_pause = gap <= timing["mono_takeover_max_gap"]
        cut_in_at_comma = (turn.role == "agent" and gap <= timing["cut_in_max_gap"]
                           and before.text.rstrip().endswith(_CLAUSE_BREAK))
        if turn.role not in kinds or before.role not in kinds or not (no_pause or cut_in_at_comma):
            continue
        if taken_over is before and turn.start - before.start <= timing["carry_on_gap"]:
            continue  # carrying on under the one who took over
        if (turn.start - previous_stretch < timing["delay_time"]
                or not _says_something(turn, substantive, settings[kinds[turn.role]]["min_chars"], timing)
                or not _says_something(before, substantive, settings[kinds[before.role]]["min_chars"], timing)):
            continue
        kind = kinds[turn.role]
        taken_over = turn
        # A takeover's voice change lies where the first voice gave way, after the two
        # began at once: the event starts one embedding hop before it. A cut-in at a
        # comma pause starts at the pause.
        start = max(before.start, turn.start - timing["mono_takeover_lead"]) if no_pause else turn.start
        events.append(Event(
            kind=kind, role=turn.role, start=round(start, 3), end=turn.start, turn_ids=[before.id, turn.id],
            detail=(f"{turn.role} took over from the {before.role} with no pause" if no_pause
                    else f"agent cut in at the customer's comma pause ({gap:.1f} s)")
                   + " (mono recording: how long both spoke cannot be measured)",
        ))
    return events


def _says_something(turn: Turn, substantive: dict[int, int], min_chars: int, timing: dict) -> bool:
    """More than a backchannel: enough words, or (mono, where the words of two people
    talking at once are often lost) enough time."""
    return substantive[turn.id] >= min_chars or (turn.duration or 0.0) >= timing["mono_takeover_min_seconds"]


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
