"""Where someone is speaking: Silero VAD (the ONNX model inside faster-whisper).

Regions are (start, end) in seconds. They drive three things: which audio goes
to ASR (never silence, so no hallucinated text there), the turn times (Whisper
can stamp the first word after a long pause seconds early; the VAD cannot), and
the overlap of the two channels' speech (interruptions).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from pipeline.speech.audio import SAMPLE_RATE

Region = tuple[float, float]


def speech_regions(samples: np.ndarray, vad_config: dict) -> list[Region]:
    """Speech regions of one channel (16 kHz float32)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        threshold=vad_config["threshold"],
        min_speech_duration_ms=vad_config["min_speech_ms"],
        min_silence_duration_ms=vad_config["min_silence_ms"],
        speech_pad_ms=vad_config["pad_ms"],
    )
    stamps = get_speech_timestamps(samples, options, sampling_rate=SAMPLE_RATE)
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def merge_regions(regions: list[Region], max_gap: float) -> list[Region]:
    """Join regions separated by less than max_gap seconds (pauses inside one turn)."""
    merged: list[Region] = []
    for start, end in sorted(regions):
        if merged and start - merged[-1][1] < max_gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def split_long_regions(samples: np.ndarray, regions: list[Region], max_seconds: float) -> list[Region]:
    """Cut regions longer than max_seconds at their quietest 100 ms, recursively."""
    result: list[Region] = []
    for start, end in regions:
        if end - start <= max_seconds:
            result.append((start, end))
            continue
        # Look for the quietest point in the middle half so both parts stay long enough.
        lo, hi = start + (end - start) / 4, end - (end - start) / 4
        cut = lo + (int(np.argmin(frame_power(samples, (lo, hi), 0.1))) + 0.5) * 0.1
        result.extend(split_long_regions(samples, [(start, cut), (cut, end)], max_seconds))
    return result


@dataclass
class TurnSpan:
    """One speaker's turn on a stereo channel: speech regions joined across short pauses."""

    start: float
    end: float
    backchannel: bool = False  # a short response (嗯, 好) while the other party talks
    speaker: str = ""


def channel_turns(own: list[Region], other: list[Region], max_gap: float, backchannel: dict,
                  speaker: str = "") -> list[TurnSpan]:
    """Turns of one channel, given both channels' speech regions (each sorted, non-overlapping).

    Regions closer than max_gap join, unless the other party finished speaking in
    between (they took a turn: what follows is a reply) or one of them is a
    backchannel: at most backchannel["max_seconds"] long, wholly inside the other
    party's talk (her regions joined across pauses shorter than max_gap: a listener's
    嗯 often lands in the speaker's comma pause), with backchannel["min_silence"] of
    own silence after it (the first words of a cut-in are followed by more) and before
    it, unless the other party took the floor during the speaker's last words, kept
    as a turn of its own so it never becomes part of a sentence nor hides when that
    sentence started.
    """
    backchannel_seconds = backchannel["max_seconds"]
    other_starts = [start for start, _ in other]
    other_ends = [end for _, end in other]
    other_talk = merge_regions(other, max_gap)
    talk_starts = [start for start, _ in other_talk]

    def talk_at(time: float) -> Region | None:
        """The other party's talk (regions joined across short pauses) begun by `time`."""
        i = bisect.bisect_right(talk_starts, time) - 1
        return other_talk[i] if i >= 0 else None

    def under_other(start: float, end: float) -> bool:
        talk = talk_at(start)
        return talk is not None and talk[0] < start and talk[1] > end

    def took_the_floor(previous: Region, start: float) -> bool:
        """The other party's talk running at `start` began after this speaker's previous
        region did: she has the floor, this speaker is the listener."""
        talk = talk_at(start)
        return talk is not None and talk[0] > previous[0]

    def other_finished(after: float, silent_from: float, until: float) -> bool:
        """The other party stopped speaking after `after`: more than a backchannel, or
        in the pause itself (they had the floor while this speaker was silent)."""
        i = bisect.bisect_right(other_ends, after)
        while i < len(other_ends) and other_ends[i] <= until:
            if other_ends[i] - other_starts[i] > backchannel_seconds or other_ends[i] > silent_from:
                return True
            i += 1
        return False

    turns: list[TurnSpan] = []
    last_region_start = 0.0
    for i, (start, end) in enumerate(own):
        alone = (i == 0 or start - own[i - 1][1] >= backchannel["min_silence"]
                 or took_the_floor(own[i - 1], start)) and (
            i + 1 == len(own) or own[i + 1][0] - end >= backchannel["min_silence"])
        is_backchannel = end - start <= backchannel_seconds and alone and under_other(start, end)
        joins = (turns and not is_backchannel and not turns[-1].backchannel and start - turns[-1].end < max_gap
                 and not other_finished(last_region_start, turns[-1].end, start))
        if joins:
            turns[-1].end = max(turns[-1].end, end)
        else:
            turns.append(TurnSpan(start, end, is_backchannel, speaker))
        last_region_start = start
    return turns


def quiet_pauses(samples: np.ndarray, region: Region, min_seconds: float, level: float) -> list[Region]:
    """Pauses inside one speech region: runs of 20 ms frames quieter than `level` times
    the region's median frame loudness, at least `min_seconds` long. Finer than the
    speech detector, whose probability lingers after a word: a 0.18 s gap between
    two speakers is clear in the energy and merged into one region by Silero."""
    frame = 0.02
    loudness = np.sqrt(frame_power(samples, region, frame))
    if not len(loudness):
        return []
    quiet = loudness < level * np.median(loudness)
    pauses = []
    run_start = None
    for i, is_quiet in enumerate([*quiet, False]):
        if is_quiet and run_start is None:
            run_start = i
        elif not is_quiet and run_start is not None:
            if (i - run_start) * frame >= min_seconds:
                pauses.append((region[0] + run_start * frame, region[0] + i * frame))
            run_start = None
    return pauses


def frame_power(samples: np.ndarray, span: Region, frame_seconds: float) -> np.ndarray:
    """Mean square of each whole frame of `frame_seconds` in the span (a trailing part frame is left out)."""
    frame = int(frame_seconds * SAMPLE_RATE)
    audio = samples[int(span[0] * SAMPLE_RATE) : int(span[1] * SAMPLE_RATE)]
    return (audio[: len(audio) // frame * frame].reshape(-1, frame) ** 2).mean(axis=1)
