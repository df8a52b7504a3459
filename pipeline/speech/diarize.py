"""Who speaks when, in a mono recording of two people.

Each VAD speech region is cut into 1.6 s windows (Resemblyzer's partial
utterances, one every `hop_seconds`), each window gets a speaker embedding, and
k-means on the normalised embeddings splits them into two clusters. A region
changes speaker where its windows' labels change, so a reply that follows without
a pause is still separated (to about one hop).

Whether there are two speakers at all (`num_speakers: auto`): k-means always finds
two clusters, and on one voice it cuts the recording by utterance or into an early and
a late part. Two people give two clusters far apart for how spread each one is (the
silhouette of the clustering, cosine distance) and voices that take turns (the speech
regions' majority labels change at least twice, A-B-A). A recording that fails either
test is one speaker: a voicemail, an IVR prompt, an agent-only channel.

Where the voices change inside one speech region, the change is moved to a short
pause near it (`snap_to_pauses`): a reply that follows 0.1-0.25 s after the other
finished is a pause too short to split the region, but it is a pause. A change
with no pause near it is where the two spoke without a break, or at once; the
events stage reads that as one taking over from the other (pipeline/events.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

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
    """Split speech regions of a mono call between its speakers (one or two)."""
    if config["num_speakers"] == 1 or (config["num_speakers"] == "auto" and len(regions) <= config["min_alternations"]):
        # Too few speech regions to alternate A-B-A: one speaker, no embeddings needed.
        return [SpeakerRegion(start, end, "S0") for start, end in regions]
    import torch

    encoder = _voice_encoder()
    # The encoder's small LSTM batches run several times faster on one thread than on
    # two (measured 0.6 s vs 2.8 s for 12 s of speech on the 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _diarize(encoder, samples, regions, config)
    finally:
        torch.set_num_threads(threads)


def _diarize(encoder, samples: np.ndarray, regions: list[Region], config: dict) -> list[SpeakerRegion]:
    from resemblyzer.audio import normalize_volume

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
    one_speaker = [SpeakerRegion(start, end, "S0") for start, end in regions]
    if len(embeddings) < 2:
        return one_speaker
    embeddings = np.array(embeddings)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    region_of_window = [index for index, _ in windows]
    clusters = KMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(embeddings)
    labels = _smooth(clusters, region_of_window)
    if config["num_speakers"] == "auto" and not _two_voices(embeddings, clusters, labels, region_of_window, config):
        return one_speaker

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


def _two_voices(embeddings: np.ndarray, clusters: np.ndarray, labels: np.ndarray,
                region_of_window: list[int], config: dict) -> bool:
    """Are the two clusters two people taking turns (see the module notes)?"""
    if len(set(clusters)) < 2 or silhouette_score(embeddings, clusters, metric="cosine") < config["min_silhouette"]:
        return False
    majority = []
    for index in dict.fromkeys(region_of_window):
        own = labels[[i for i, r in enumerate(region_of_window) if r == index]]
        majority.append(int(np.bincount(own, minlength=2).argmax()))
    alternations = sum(a != b for a, b in zip(majority, majority[1:]))
    return alternations >= config["min_alternations"]


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


def snap_to_pauses(regions: list[SpeakerRegion], pauses: list[Region], reach: float) -> list[SpeakerRegion]:
    """Move each speaker change inside a speech region to the nearest pause (a quiet
    stretch of the region) within `reach` seconds: the voices change at a hop's
    precision, the pause shows where one stopped and the other began."""
    for before, after in zip(regions, regions[1:]):
        if before.end != after.start or before.speaker == after.speaker:
            continue  # a change across a pause the speech regions already show
        def distance(pause: Region) -> float:
            return abs((pause[0] + pause[1]) / 2 - before.end)

        near = [pause for pause in pauses if before.start < pause[0] and pause[1] < after.end and distance(pause) <= reach]
        if near:
            before.end, after.start = min(near, key=distance)
    return regions
