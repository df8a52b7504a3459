"""A call recording -> a `Call` with timed, speaker-attributed turns.

Stereo (one speaker per channel): each channel's speech regions come from the
VAD and form its turns (pipeline/speech/vad.py: channel_turns), backchannels
under the other party included; the channel's speech is decoded in windows and
its words go to the turn their time falls in. The agent is the configured channel
unless the wording strongly says otherwise. Turn times are the channels' speech
activity, so the events stage (pipeline/events.py) finds who talked over whom even
where ASR drops a word. Mono: each VAD region is decoded whole, its words split
between the speakers found by voice (pipeline/speech/diarize.py: one or two), and
the agent is decided from wording and who speaks first. How long two people talked
at once cannot be measured in a mix (call.audio.overlaps_measurable is false); each
speaker change is moved to the pause it happened in, and where there was none the
events stage reads it as one taking over from the other.

The model never sees more than `max_utterance_seconds` of speech at a time, so a
call of hours is processed piece by piece.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np
import yaml

from pipeline.speech import roles
from pipeline.speech.asr import PUNCTUATION, HeardWord, Recognizer, load_recognizer, recognize, recognize_regions
from pipeline.speech.audio import SAMPLE_RATE, Audio, load_audio
from pipeline.speech.diarize import SpeakerRegion, diarize, snap_to_pauses
from pipeline.model import AudioInfo, Call, Turn, Word
from pipeline.speech.vad import TurnSpan, channel_turns, quiet_pauses, speech_regions, split_long_regions

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
        warnings.append("mono recording: how long two people talked at once cannot be measured; "
                        "talking over is read from speaker changes without a pause")
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
    turns = []
    for c in (0, 1):
        spans = channel_turns(activity[c], activity[1 - c], config["turn_merge_gap"], config["backchannel"],
                              speaker=f"ch{c}")
        signal = audio.samples[c]
        # Backchannels are recognised alone (see _backchannel_text), not in the windows.
        backchannels = {(span.start, span.end) for span in spans if span.backchannel}
        speech = [region for region in activity[c] if region not in backchannels]
        regions = split_long_regions(signal, speech, config["max_utterance_seconds"])
        heard, asr_warnings = recognize_regions(recognizer, signal, regions, config,
                                                progress=_progress(audio, config, f"ch{c}"))
        warnings += [f"ch{c} {w}" for w in asr_warnings]
        turns += _turns(spans, heard, signal, config, recognizer, channel=c)
    _number(turns)

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
    settings = config["diarization"]
    speakers = diarize(samples, regions, settings)
    pauses = [pause for region in regions
              for pause in quiet_pauses(samples, region, settings["pause_seconds"], settings["pause_level"])]
    speakers = snap_to_pauses(speakers, pauses, settings["pause_reach_seconds"])
    spans = _merge_same_speaker(speakers, config["turn_merge_gap"])
    pieces = split_long_regions(samples, regions, config["max_utterance_seconds"])
    # Not packed: Whisper given several people's turns in one window tends to stop after one.
    heard, asr_warnings = recognize_regions(recognizer, samples, pieces, config, pack=False,
                                            progress=_progress(audio, config, "mono"))
    warnings += asr_warnings
    turns = _turns(spans, heard, samples, config, recognizer, channel=None)
    _number(turns)
    labels = sorted({span.speaker for span in spans})
    decision = roles.decide_agent(
        {label: [t.text for t in turns if t.speaker == label] for label in labels},
        speakers[0].speaker if speakers else "S0",
        config["roles"],
    )
    for turn in turns:
        turn.role = "agent" if turn.speaker == decision.agent else "customer"
    if len(labels) > 1 and decision.confidence < 0.6:
        warnings.append(f"agent/customer assignment uncertain (confidence {decision.confidence:.2f})")
    return turns, decision


def _merge_same_speaker(regions: list[SpeakerRegion], max_gap: float) -> list[TurnSpan]:
    merged: list[TurnSpan] = []
    for region in regions:
        if merged and merged[-1].speaker == region.speaker and region.start - merged[-1].end < max_gap:
            merged[-1].end = region.end
        else:
            merged.append(TurnSpan(region.start, region.end, speaker=region.speaker))
    return merged


def _progress(audio: Audio, config: dict, part: str) -> str | None:
    """The progress bar's label, or None for no bar."""
    return f"{Path(audio.path).name} {part}" if config["progress"] else None


def _turns(spans: list[TurnSpan], heard: list[HeardWord], signal: np.ndarray, config: dict,
           recognizer: Recognizer, channel: int | None) -> list[Turn]:
    """Words into the turns whose time they fall in (the nearest turn when between two).

    Turn edges are the speech activity's: Whisper can stamp the first word after a
    pause early and its word ends fall short. A turn no word fell into is dropped;
    backchannels are recognised on their own.
    """
    talk = [span for span in spans if not span.backchannel]
    starts = [span.start for span in talk]
    words: list[list[HeardWord]] = [[] for _ in talk]
    for item in heard:
        middle = (item.word.start + item.word.end) / 2
        i = bisect.bisect_right(starts, middle) - 1
        if i < 0 or (i + 1 < len(talk) and middle - talk[i].end > talk[i + 1].start - middle):
            i = min(i + 1, len(talk) - 1)
        words[i].append(item)
    turns = [_backchannel_turn(signal, span, config, recognizer, channel) for span in spans if span.backchannel]
    for span, own in zip(talk, words):
        if not own:
            continue
        probabilities = [item.word.probability for item in own if item.word.probability is not None]
        turns.append(Turn(
            id=0, role="unknown", text="".join(item.word.text for item in own),
            start=round(span.start, 3), end=round(span.end, 3), speaker=span.speaker, channel=channel,
            asr_confidence=round(float(np.mean(probabilities)), 3) if probabilities else None,
            low_confidence=any(item.low_confidence for item in own),
            words=[Word(text=item.word.text, start=min(max(item.word.start, span.start), span.end),
                        end=min(max(item.word.end, span.start), span.end), probability=item.word.probability)
                   for item in own],
        ))
    return turns


def _backchannel_turn(signal: np.ndarray, span: TurnSpan, config: dict, recognizer: Recognizer,
                      channel: int | None) -> Turn:
    """A short response under the other party, recognised by Whisper without the initial
    prompt (with it, Whisper returns nothing for 嗯). Its text is kept when it is sure and
    one of the listening `words` (嗯 / 好 / 对…); otherwise the turn reads `placeholder`
    (嗯), marked low-confidence: the audio already shows a short response under the
    other party, and a 0.3 s clip is too short for Whisper to say more."""
    settings = config["backchannel"]
    pad = config["asr_context_pad"]
    clip = signal[int(max(0.0, span.start - pad) * SAMPLE_RATE) : int((span.end + pad) * SAMPLE_RATE)]
    segments, _ = recognize(recognizer, clip, {**config, "initial_prompt": ""})
    text = "".join(s.text for s in segments).strip()
    words = [w for s in segments for w in s.words if w.probability is not None]
    confidence = float(np.mean([w.probability for w in words])) if words else 0.0
    spoken = PUNCTUATION.sub("", text)
    sure = spoken in settings["words"] and confidence >= settings["min_probability"]
    return Turn(id=0, role="unknown", text=text if sure else settings["placeholder"],
                start=round(span.start, 3), end=round(span.end, 3), speaker=span.speaker, channel=channel,
                asr_confidence=round(confidence, 3) if sure else None, low_confidence=not sure)


def _number(turns: list[Turn]) -> None:
    turns.sort(key=lambda t: (t.start, t.channel or 0))
    for i, turn in enumerate(turns):
        turn.id = i


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
