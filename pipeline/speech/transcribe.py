"""A call recording -> a `Call` with timed, speaker-attributed turns.

Stereo (one speaker per channel): each channel's speech regions come from the
VAD, each region is recognised on its own, and the agent is the configured
channel unless the wording strongly says otherwise. Turn times are the channels'
speech activity, so the events stage (pipeline/events.py) finds who talked over
whom even where ASR drops a word. Mono: the speech regions are split between two speakers by voice
(pipeline/speech/diarize.py) and the agent is decided from wording and who speaks first.

The model only ever sees one speech region at a time (at most
`max_utterance_seconds`), so a call of hours is processed piece by piece.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from pipeline.speech import roles
from pipeline.speech.asr import Recognizer, load_recognizer, recognize
from pipeline.speech.audio import SAMPLE_RATE, Audio, load_audio
from pipeline.speech.diarize import SpeakerRegion, diarize
from pipeline.model import AudioInfo, Call, Turn, Word
from pipeline.speech.vad import merge_regions, speech_regions, split_long_regions

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "speech.yaml"
# Two channels this similar are one signal written twice: treat the call as mono.
SAME_SIGNAL_CORRELATION = 0.99


def load_speech_config(path: str | Path | None = None) -> dict:
    """The `speech:` section of configs/speech.yaml, with a user file's keys merged over it."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))["speech"]
    if path is not None:
        user = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        config = _merge(config, user.get("speech", {}))
    return config


def transcribe_file(
    path: str | Path,
    config: dict | None = None,
    recognizer: Recognizer | None = None,
    agent_channel: int | None = None,
) -> Call:
    """Recognise a call recording. `agent_channel` overrides the config for this call."""
    config = config or load_speech_config()
    recognizer = recognizer or load_recognizer(config)
    audio = load_audio(path)
    warnings: list[str] = []
    stereo = audio.channels >= 2
    if audio.channels > 2:
        warnings.append(f"{audio.channels} channels: only the first two are used")
    if stereo and _same_signal(audio.samples[0], audio.samples[1]):
        warnings.append("both channels carry the same signal: processed as mono")
        stereo = False
    if stereo:
        channel = config["agent_channel"] if agent_channel is None else agent_channel
        turns, decision = _stereo(audio, channel, config, recognizer, warnings)
        versions = {"vad": "silero-vad-v6"}
    else:
        turns, decision = _mono(audio, config, recognizer, warnings)
        warnings.append("mono recording: talking at once cannot be measured, interruptions are not reported")
        versions = {"vad": "silero-vad-v6", "diarization": "resemblyzer-0.1.4+kmeans"}
    versions["asr"] = recognizer.name
    if not turns:
        warnings.append("no speech recognised in the recording")
    return Call(
        id=Path(path).stem,
        source=str(path),
        turns=turns,
        audio=AudioInfo(
            path=str(path),
            sample_rate=audio.source_sample_rate,
            channels=audio.channels,
            duration=round(audio.duration, 3),
            agent_channel=int(decision.agent.removeprefix("ch")) if stereo else None,
            role_confidence=round(decision.confidence, 3),
            sha256=audio.sha256,
            overlaps_measurable=stereo,
        ),
        warnings=warnings,
        versions=versions,
    )


def _stereo(audio: Audio, agent_channel: int, config: dict, recognizer: Recognizer, warnings: list[str]):
    if agent_channel not in (0, 1):
        raise ValueError(f"{audio.path}: agent_channel must be 0 or 1 for a stereo call, not {agent_channel}")
    activity = [speech_regions(audio.samples[c], config["vad"]) for c in (0, 1)]
    pieces = [
        (c, start, end, f"ch{c}")
        for c in (0, 1)
        for start, end in split_long_regions(
            audio.samples[c], merge_regions(activity[c], config["turn_merge_gap"]), config["max_utterance_seconds"]
        )
    ]
    turns = _recognize_pieces(audio, pieces, config, recognizer, warnings)

    configured = f"ch{agent_channel}"
    first_start = {f"ch{c}": activity[c][0][0] for c in (0, 1) if activity[c]}
    first = min(first_start, key=first_start.get) if first_start else configured
    decision = roles.decide_agent(
        {f"ch{c}": [t.text for t in turns if t.channel == c] for c in (0, 1)},
        first,
        config["roles"],
        prior={configured: config["roles"]["configured_channel_prior"]},
    )
    if decision.agent != configured and decision.confidence < config["stereo_swap_confidence"]:
        warnings.append(
            f"wording suggests channel {decision.agent[2:]} is the agent (confidence {decision.confidence:.2f}); "
            f"kept the configured channel {agent_channel}"
        )
        decision = roles.RoleDecision(configured, 1 - decision.confidence, decision.evidence)
    elif decision.agent != configured:
        warnings.append(
            f"configured agent channel {agent_channel} swapped: the wording says channel {decision.agent[2:]} "
            f"is the agent (confidence {decision.confidence:.2f})"
        )
    for turn in turns:
        turn.role = "agent" if turn.speaker == decision.agent else "customer"
    return turns, decision


def _mono(audio: Audio, config: dict, recognizer: Recognizer, warnings: list[str]):
    samples = audio.samples.mean(axis=0)
    regions = speech_regions(samples, config["vad"])
    speakers = diarize(samples, regions, config["diarization"])
    pieces = [
        (None, s, e, speaker)
        for start, end, speaker in _merge_same_speaker(speakers, config["turn_merge_gap"])
        for s, e in split_long_regions(samples, [(start, end)], config["max_utterance_seconds"])
    ]
    turns = _recognize_pieces(audio, pieces, config, recognizer, warnings, mono=samples)
    labels = sorted({speaker for *_, speaker in pieces})
    decision = roles.decide_agent(
        {label: [t.text for t in turns if t.speaker == label] for label in labels},
        speakers[0].speaker if speakers else "S0",
        config["roles"],
    )
    for turn in turns:
        turn.role = "agent" if turn.speaker == decision.agent else "customer"
    if decision.confidence < 0.6:
        warnings.append(f"agent/customer assignment uncertain (confidence {decision.confidence:.2f})")
    return turns, decision


def _merge_same_speaker(regions: list[SpeakerRegion], max_gap: float) -> list[tuple[float, float, str]]:
    merged: list[tuple[float, float, str]] = []
    for region in regions:
        if merged and merged[-1][2] == region.speaker and region.start - merged[-1][1] < max_gap:
            merged[-1] = (merged[-1][0], region.end, region.speaker)
        else:
            merged.append((region.start, region.end, region.speaker))
    return merged


def _recognize_pieces(
    audio: Audio,
    pieces: list[tuple[int | None, float, float, str]],
    config: dict,
    recognizer: Recognizer,
    warnings: list[str],
    mono: np.ndarray | None = None,
) -> list[Turn]:
    """ASR on each (channel, start, end, speaker) piece; one Turn per recognised segment."""
    pad = config["asr_context_pad"]
    turns: list[Turn] = []
    for channel, start, end, speaker in tqdm(sorted(pieces, key=lambda p: p[1]), desc=Path(audio.path).name, unit="turn", leave=False,
                                            disable=not config["progress"]):
        signal = mono if channel is None else audio.samples[channel]
        offset = max(0.0, start - pad)
        clip = signal[int(offset * SAMPLE_RATE) : int((end + pad) * SAMPLE_RATE)]
        segments, segment_warnings = recognize(recognizer, clip, config)
        warnings.extend(f"{speaker} {w}" for w in segment_warnings)
        for i, segment in enumerate(segments):
            # Times are clipped to the VAD region, and the region's own edges are the
            # turn's edges: Whisper can stamp the first word after a pause early, and
            # its word ends fall short; the speech activity is measured.
            def clip_time(t: float) -> float:
                return round(min(max(offset + t, start), end), 3)

            words = [Word(text=w.text, start=clip_time(w.start), end=clip_time(w.end), probability=w.probability) for w in segment.words]
            turns.append(
                Turn(
                    id=0,
                    role="unknown",
                    text=segment.text,
                    start=round(start, 3) if i == 0 else clip_time(segment.start),
                    end=round(end, 3) if i == len(segments) - 1 else clip_time(segment.end),
                    speaker=speaker,
                    channel=channel,
                    asr_confidence=round(segment.confidence, 3),
                    low_confidence=segment.low_confidence,
                    words=words,
                )
            )
    turns.sort(key=lambda t: (t.start, t.channel or 0))
    for i, turn in enumerate(turns):
        turn.id = i
    return turns


def _same_signal(left: np.ndarray, right: np.ndarray) -> bool:
    left, right = left[::8], right[::8]  # every 8th sample is plenty, and keeps hour-long calls cheap
    if not left.any() or not right.any():
        return False
    return float(np.corrcoef(left, right)[0, 1]) > SAME_SIGNAL_CORRELATION


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged
