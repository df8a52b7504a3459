"""Who speaks when, in a mono recording of two people.

Each VAD speech region is cut into 1.6 s windows (Resemblyzer's partial
utterances, one every `hop_seconds`), each window gets a speaker embedding, and
k-means on the normalised embeddings splits them into the two speakers. A region
changes speaker where its windows' labels change, so a reply that follows without
a pause is still separated (to about one hop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

from pipeline.speech.audio import SAMPLE_RATE
from pipeline.speech.vad import Region


@dataclass
class SpeakerRegion:
    start: float
    end: float
    speaker: str  # "S0" is whoever speaks first


_encoder = None


def _voice_encoder():
    global _encoder
    if _encoder is None:
        from resemblyzer import VoiceEncoder

        _encoder = VoiceEncoder(device="cpu", verbose=False)
    return _encoder


def diarize(samples: np.ndarray, regions: list[Region], config: dict) -> list[SpeakerRegion]:
    """Split speech regions of a mono call between `num_speakers` speakers."""
    from resemblyzer.audio import normalize_volume

    encoder = _voice_encoder()
    windows = []  # (region index, window centre in seconds)
    embeddings = []
    for index, (start, end) in enumerate(regions):
        wav = samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        wav = normalize_volume(wav, -30, increase_only=True)
        _, partials, slices = encoder.embed_utterance(wav, return_partials=True, rate=1 / config["hop_seconds"])
        for partial, wav_slice in zip(partials, slices):
            centre = (wav_slice.start + min(wav_slice.stop, len(wav))) / 2 / SAMPLE_RATE
            windows.append((index, start + centre))
            embeddings.append(partial)
    if len(embeddings) < config["num_speakers"]:
        return [SpeakerRegion(start, end, "S0") for start, end in regions]
    embeddings = np.array(embeddings)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = KMeans(n_clusters=config["num_speakers"], n_init=10, random_state=0).fit_predict(embeddings)
    labels = _smooth(labels, [index for index, _ in windows])

    result: list[SpeakerRegion] = []
    for index, (start, end) in enumerate(regions):
        own = [(centre, label) for (i, centre), label in zip(windows, labels) if i == index]
        piece_start = start
        for (centre, label), (next_centre, next_label) in zip(own, own[1:]):
            if next_label != label:
                boundary = (centre + next_centre) / 2
                result.append(SpeakerRegion(piece_start, boundary, str(label)))
                piece_start = boundary
        result.append(SpeakerRegion(piece_start, end, str(own[-1][1])))
    return _name_by_first_appearance(result)


def _smooth(labels: np.ndarray, region_of_window: list[int]) -> np.ndarray:
    """A single window that disagrees with both neighbours in its region is noise."""
    smoothed = labels.copy()
    for i in range(1, len(labels) - 1):
        same_region = region_of_window[i - 1] == region_of_window[i] == region_of_window[i + 1]
        if same_region and labels[i - 1] == labels[i + 1] != labels[i]:
            smoothed[i] = labels[i - 1]
    return smoothed


def _name_by_first_appearance(regions: list[SpeakerRegion]) -> list[SpeakerRegion]:
    names: dict[str, str] = {}
    for region in regions:
        region.speaker = names.setdefault(region.speaker, f"S{len(names)}")
    return regions
