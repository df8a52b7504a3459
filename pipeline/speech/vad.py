"""Where someone is speaking: Silero VAD (the ONNX model inside faster-whisper).

Regions are (start, end) in seconds. They drive three things: which audio goes
to ASR (never silence, so no hallucinated text there), the turn times (Whisper
can stamp the first word after a long pause seconds early; the VAD cannot), and
the overlap of the two channels' speech (interruptions).
"""

from __future__ import annotations

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
        window = int(0.1 * SAMPLE_RATE)
        segment = samples[int(lo * SAMPLE_RATE) : int(hi * SAMPLE_RATE)]
        frames = segment[: len(segment) // window * window].reshape(-1, window)
        cut = lo + (int(np.argmin((frames**2).mean(axis=1))) + 0.5) * 0.1
        result.extend(split_long_regions(samples, [(start, cut), (cut, end)], max_seconds))
    return result
