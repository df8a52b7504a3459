"""Speech recognition: one speaker's stretch of 16 kHz audio -> Simplified-Chinese segments.

Two backends run the same Whisper weights behind one interface (`load_recognizer`
picks one from the `speech:` config): faster-whisper (CTranslate2, int8 on CPU)
and openai-whisper (the reference PyTorch implementation). `recognize` wraps either
with the guards Whisper's users found necessary:

- output is converted to Simplified Chinese (Whisper often writes Traditional);
- hallucinated subtitle credits ("字幕由…提供") are dropped, with a warning;
- repeated-phrase loops are cut back to one occurrence;
- if the initial prompt is read back instead of the speech, the audio is decoded
  again without it;
- unreliable segments are marked `low_confidence`, never silently dropped.
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Protocol

import numpy as np
from opencc import OpenCC

from pipeline.speech import whisper_models
from pipeline.speech.audio import SAMPLE_RATE
from pipeline.model import Word

PUNCTUATION = re.compile(r"[\s\u3000-\u303f\uff00-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65,.!?;:'\"()\[\]{}<>…—-]+")
WHISPER_WINDOW_SECONDS = 30
_t2s = OpenCC("t2s")


@dataclass
class Segment:
    """A stretch of recognised text; times in seconds from the start of the audio given."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[Word] = field(default_factory=list)
    low_confidence: bool = False

    @property
    def confidence(self) -> float:
        if self.words and all(w.probability is not None for w in self.words):
            return float(np.mean([w.probability for w in self.words]))
        return float(np.exp(self.avg_logprob))


class Recognizer(Protocol):
    name: str  # backend and model, recorded in Call.versions

    def transcribe(self, samples: np.ndarray, initial_prompt: str | None) -> list[Segment]: ...


class FasterWhisperRecognizer:
    def __init__(self, model: str, config: dict):
        import ctranslate2
        from faster_whisper import WhisperModel

        # Before any decode: each decoding thread seeds its sampler once, on first use.
        ctranslate2.set_random_seed(config["sampling_seed"])
        self.name = f"faster-whisper:{model}:{config['compute_type']}"
        self.config = config
        self.model = WhisperModel(
            model, device=config["device"], compute_type=config["compute_type"], cpu_threads=config["cpu_threads"]
        )

    def transcribe(self, samples: np.ndarray, initial_prompt: str | None) -> list[Segment]:
        one_window = _fits_one_window(samples)
        segments, _ = self.model.transcribe(
            samples,
            language=self.config["language"],
            beam_size=self.config["beam_size"],
            initial_prompt=initial_prompt,
            word_timestamps=self.config["word_timestamps"],
            condition_on_previous_text=False,  # a loop in one window must not feed the next
            compression_ratio_threshold=self.config["guards"]["compression_ratio_above"],
            vad_filter=False,  # the caller hands over speech only
            without_timestamps=one_window,
        )
        if one_window:
            segments = itertools.islice(segments, 1)  # the generator never decodes the tail again
        return [
            Segment(
                start=s.start,
                end=s.end,
                text=s.text.strip(),
                avg_logprob=s.avg_logprob,
                no_speech_prob=s.no_speech_prob,
                compression_ratio=s.compression_ratio,
                words=[Word(text=w.word.strip(), start=w.start, end=w.end, probability=w.probability) for w in s.words or []],
            )
            for s in segments
        ]


class OpenAIWhisperRecognizer:
    def __init__(self, model: str, config: dict):
        import torch
        import whisper

        torch.set_num_threads(config["cpu_threads"])
        torch.manual_seed(config["sampling_seed"])  # temperature fallback samples
        self.name = f"openai-whisper:{model}"
        self.config = config
        self.model = whisper.load_model(model, device=config["device"])

    def transcribe(self, samples: np.ndarray, initial_prompt: str | None) -> list[Segment]:
        import whisper

        one_window = _fits_one_window(samples)
        result = whisper.transcribe(
            self.model,
            samples,
            language=self.config["language"],
            beam_size=self.config["beam_size"],
            best_of=self.config["beam_size"],
            initial_prompt=initial_prompt,
            word_timestamps=self.config["word_timestamps"],
            condition_on_previous_text=False,
            compression_ratio_threshold=self.config["guards"]["compression_ratio_above"],
            fp16=False,
            verbose=None,
            without_timestamps=one_window,
            # With a threshold longer than the window, openai-whisper moves on to the
            # next window instead of decoding the tail after the last word again.
            hallucination_silence_threshold=WHISPER_WINDOW_SECONDS if one_window else None,
        )
        return [
            Segment(
                start=s["start"],
                end=s["end"],
                text=s["text"].strip(),
                avg_logprob=s["avg_logprob"],
                no_speech_prob=s["no_speech_prob"],
                compression_ratio=s["compression_ratio"],
                words=[
                    Word(text=w["word"].strip(), start=w["start"], end=w["end"], probability=w["probability"])
                    for w in s.get("words", [])
                ],
            )
            for s in result["segments"][: 1 if one_window else None]
        ]


def _fits_one_window(samples: np.ndarray) -> bool:
    """Audio that fits Whisper's 30 s window is decoded whole, as one segment.

    Both implementations then decode the audio after the last word again as a new
    window, and on that fraction of a second of near-silence Whisper hallucinates
    ("字幕…", "请按赏订阅"): only the first segment is kept, and the tail is not
    decoded at all. Word times still come from the cross-attention alignment.
    """
    return len(samples) <= WHISPER_WINDOW_SECONDS * 16000


def load_recognizer(config: dict) -> Recognizer:
    """The backend named in the `speech:` config, on the configured model."""
    model = config["model"]
    cache = whisper_models.cache_dir(config.get("cache_dir", ""))
    if model.startswith(whisper_models.PACKAGED_PREFIX):
        model = str(whisper_models.packaged_ct2_model(model.removeprefix(whisper_models.PACKAGED_PREFIX), cache))
    if config["backend"] == "faster-whisper":
        return FasterWhisperRecognizer(model, config)
    if config["backend"] == "openai-whisper":
        if (Path(model) / "model.bin").exists():  # a CTranslate2 folder: convert it
            recognizer = OpenAIWhisperRecognizer(str(whisper_models.openai_whisper_checkpoint(Path(model))), config)
            _set_alignment_heads(recognizer.model, Path(model))
            return recognizer
        return OpenAIWhisperRecognizer(model, config)
    raise ValueError(f"speech.backend must be 'faster-whisper' or 'openai-whisper', not {config['backend']!r}")


def _set_alignment_heads(model, ct2_dir: Path) -> None:
    """The word-timing attention heads, as the CTranslate2 config lists them."""
    import json

    import torch

    heads = json.loads((ct2_dir / "config.json").read_text())["alignment_heads"]
    mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
    for layer, head in heads:
        mask[layer, head] = True
    model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)


def recognize(recognizer: Recognizer, samples: np.ndarray, config: dict) -> tuple[list[Segment], list[str]]:
    """Guarded recognition of one speaker's audio: (segments, warnings)."""
    prompt = config["initial_prompt"] or None
    segments = _to_simplified(recognizer.transcribe(samples, prompt))
    if prompt and any(_echoes_prompt(s.text, prompt, config["prompt_echo_similarity"]) for s in segments):
        segments = _to_simplified(recognizer.transcribe(samples, None))
    guards = config["guards"]
    hallucination = re.compile("|".join(f"(?:{p})" for p in guards["hallucination_patterns"]))
    kept, warnings = [], []
    for segment in segments:
        if not PUNCTUATION.sub("", segment.text):
            continue
        if hallucination.search(segment.text):
            warnings.append(f"dropped Whisper hallucination {segment.text!r} at {segment.start:.1f}s")
            continue
        text = cut_loops(segment.text, guards["loop_max_phrase_chars"], guards["loop_max_repeats"])
        if text != segment.text:
            warnings.append(f"cut a repeated-phrase loop at {segment.start:.1f}s: {segment.text[:40]!r}...")
            segment.words = _words_within(segment.words, len(text))
            segment.text = text
            segment.low_confidence = True
        thresholds = config["low_confidence"]
        if (
            segment.avg_logprob < thresholds["avg_logprob_below"]
            or segment.no_speech_prob > thresholds["no_speech_prob_above"]
            or segment.compression_ratio > guards["compression_ratio_above"]
        ):
            segment.low_confidence = True
        kept.append(segment)
    return kept, warnings


def cut_loops(text: str, max_phrase_chars: int, max_repeats: int) -> str:
    """Collapse a phrase repeated more than max_repeats times in a row to one occurrence."""
    loop = re.compile(r"(.{1,%d}?)\1{%d,}" % (max_phrase_chars, max_repeats))
    return loop.sub(r"\1", text)


def _echoes_prompt(text: str, prompt: str, min_similarity: float) -> bool:
    bare_text, bare_prompt = PUNCTUATION.sub("", text), PUNCTUATION.sub("", prompt)
    if not bare_text:
        return False
    match = SequenceMatcher(None, bare_text, bare_prompt).find_longest_match()
    # Share of the output that is a verbatim piece of the prompt.
    return match.size >= 4 and match.size / len(bare_text) >= min_similarity


def _to_simplified(segments: list[Segment]) -> list[Segment]:
    for segment in segments:
        segment.text = _t2s.convert(segment.text)
        for word in segment.words:
            word.text = _t2s.convert(word.text)
    return segments


def _words_within(words: list[Word], n_chars: int) -> list[Word]:
    kept, length = [], 0
    for word in words:
        if length + len(word.text) > n_chars:
            break
        kept.append(word)
        length += len(word.text)
    return kept


@dataclass
class HeardWord:
    """A recognised word at its time in the recording, and whether its segment was unreliable."""

    word: Word
    low_confidence: bool


def recognize_regions(
    recognizer: Recognizer, signal: np.ndarray, regions: list[tuple[float, float]], config: dict,
    pack: bool = True, progress: str | None = None,
) -> tuple[list[HeardWord], list[str]]:
    """Guarded recognition of the speech regions of one signal, words at recording times.

    Regions (each with `asr_context_pad` of audio either side, never overlapping) are
    decoded whole, never the same audio twice, so no word is duplicated or cut where
    the caller later splits turns. With `pack` (one speaker's channel), regions are
    packed into windows of at most `max_utterance_seconds` with the silence between
    them left out: one Whisper window for many short turns. Each word's time is
    mapped back to the recording; the caller splits the words into turns by time.
    """
    from tqdm import tqdm

    pad, duration = config["asr_context_pad"], len(signal) / SAMPLE_RATE
    ranges: list[tuple[float, float]] = []
    for start, end in regions:
        start, end = max(0.0, start - pad), min(duration, end + pad)
        if ranges and start <= ranges[-1][1] and end - ranges[-1][0] <= config["max_utterance_seconds"]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], end))
        else:
            ranges.append((max(start, ranges[-1][1]) if ranges else start, end))
    heard, warnings = [], []
    bar = tqdm(desc=progress, unit="window", leave=False, disable=progress is None)
    first, resume_at = 0, 0.0
    while first < len(ranges):
        window = []
        for start, end in ranges[first:]:
            start = max(start, resume_at)
            if window and (not pack or sum(e - s for s, e in window) + end - start > config["max_utterance_seconds"]):
                break
            window.append((start, end))
        words, window_warnings = _recognize_window(recognizer, signal, window, config)
        heard += words
        warnings += window_warnings
        first += len(window)
        # Whisper sometimes ends a window early (after one speaker's sentence): the speech
        # after its last word is decoded again as the start of the next window.
        last = max((w.word.end for w in words), default=None)
        if last is not None and sum(max(0.0, e - max(s, last)) for s, e in window) >= config["asr_resume_seconds"]:
            first = next(i for i, (s, e) in enumerate(ranges) if e > last)
            resume_at = last
        bar.update(1)
    bar.close()
    return heard, warnings


def _recognize_window(recognizer: Recognizer, signal: np.ndarray, window: list[tuple[float, float]],
                      config: dict) -> tuple[list[HeardWord], list[str]]:
    """The given ranges of the signal decoded back to back, words at recording times."""
    clip = np.concatenate([signal[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)] for s, e in window])
    packed_starts = list(itertools.accumulate((e - s for s, e in window[:-1]), initial=0.0))

    def to_recording(t: float) -> float:
        i = max(0, bisect.bisect_right(packed_starts, t) - 1)
        return round(min(window[i][0] + t - packed_starts[i], window[i][1]), 3)

    segments, warnings = recognize(recognizer, clip, config)
    heard = []
    for segment in segments:
        for word in segment.words:
            start = to_recording(word.start)
            moved = Word(text=word.text, start=start, end=max(start, to_recording(word.end)), probability=word.probability)
            heard.append(HeardWord(moved, segment.low_confidence))
    return heard, [f"{w} (window from {window[0][0]:.1f}s)" for w in warnings]
