"""The speech stage as `callqa score` runs it, against bare faster-whisper in the same run.

    PYTHONPATH=. python benchmarks/bench_speech.py [--clips N] [--minutes 5] [--skip-call]

1. Real single-speaker clips (../shared/real/speech, not shipped) scored as mono calls
   through Scorer.transcribe, the code path of `callqa score`: CER of the call's
   turns against the reference, next to bare faster-whisper base int8 beam 5 (no
   VAD, no prompt, no guards) on the same clip, one after the other so both see the
   same machine load. Prints both CERs, their ratio and the time ratio.
2. A stereo call of `--minutes` (generated call C tiled): wall time of the speech
   stage against bare faster-whisper on each whole channel, and against faster-whisper's
   BatchedInferencePipeline (its own VAD, batch 8); peak memory; calls per hour.
3. The events stage on 20,000 turns.
CER normalisation: pipeline/speech/cer.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT.parent / "shared" / "real" / "speech"
CALL = ROOT / "tests" / "data" / "audio" / "call_c_stereo_16k.flac"


def bare_text(model, samples: np.ndarray, config: dict) -> str:
    segments, _ = model.transcribe(samples, language=config["language"], beam_size=config["beam_size"])
    return "".join(s.text for s in segments)


def clips_as_mono_calls(scorer, model, config: dict, limit: int | None) -> None:
    from pipeline.speech.audio import load_audio
    from pipeline.speech.cer import cer

    clips = [json.loads(line) for line in (SPEECH / "manifest.jsonl").read_text(encoding="utf-8").splitlines()][:limit]
    totals = {"callqa": [0, 0, 0.0], "bare": [0, 0, 0.0]}
    for clip in clips:
        path = SPEECH / clip["file"]
        started = time.perf_counter()
        call = scorer.transcribe(path)
        callqa_seconds = time.perf_counter() - started
        hypothesis = "".join(t.text for t in sorted(call.turns, key=lambda t: t.start))
        started = time.perf_counter()
        bare = bare_text(model, load_audio(path).samples.mean(axis=0), config)
        bare_seconds = time.perf_counter() - started
        for name, text, seconds in (("callqa", hypothesis, callqa_seconds), ("bare", bare, bare_seconds)):
            edits, length = cer(text, clip["text"])
            totals[name][0] += edits
            totals[name][1] += length
            totals[name][2] += seconds
    (ce, cn, ct), (be, bn, bt) = totals["callqa"], totals["bare"]
    print(f"{len(clips)} real clips as mono calls: CER callqa {ce / cn:.1%}, bare faster-whisper {be / bn:.1%}, "
          f"ratio {ce / cn / (be / bn):.3f}; time callqa {ct:.1f} s, bare {bt:.1f} s, ratio {ct / bt:.2f}")


def long_stereo_call(scorer, model, config: dict, minutes: float) -> None:
    from faster_whisper import BatchedInferencePipeline

    from pipeline.speech.audio import load_audio

    audio = load_audio(CALL)
    repeats = int(np.ceil(minutes * 60 / audio.duration))
    samples = np.tile(audio.samples, repeats)[:, : int(minutes * 60 * 16000)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long_call.flac"
        soundfile.write(path, samples.T, 16000)
        started = time.perf_counter()
        call = scorer.transcribe(path, agent_channel=0)
        callqa_seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    for channel in samples:
        bare_text(model, channel, config)
    bare_seconds = time.perf_counter() - started
    batched = BatchedInferencePipeline(model)
    started = time.perf_counter()
    for channel in samples:
        segments, _ = batched.transcribe(channel, language=config["language"], beam_size=config["beam_size"], batch_size=8)
        list(segments)
    batched_seconds = time.perf_counter() - started
    print(f"{minutes:g}-minute stereo call ({len(call.turns)} turns): speech stage {callqa_seconds:.1f} s, "
          f"bare faster-whisper {bare_seconds:.1f} s (ratio {callqa_seconds / bare_seconds:.2f}), "
          f"batched pipeline {batched_seconds:.1f} s; peak memory {peak:.0f} MiB; "
          f"{3600 / callqa_seconds:.1f} calls/hour on this machine")


def many_turns(config: dict, count: int = 20_000) -> None:
    from pipeline.events import detect_events
    from pipeline.model import Call, Turn

    turns = []
    for i in range(count // 2):
        start = i * 10.0
        turns.append(Turn(id=2 * i, role="customer", text="我想问一下这个账单是怎么回事", start=start, end=start + 5.0))
        turns.append(Turn(id=2 * i + 1, role="agent", text="我帮您查一下这个账单", start=start + (4.0 if i % 5 == 0 else 5.5),
                          end=start + 8.0))
    call = Call(id="many", turns=turns)
    started = time.perf_counter()
    detect_events(call, config)
    print(f"events stage on {count} turns: {time.perf_counter() - started:.2f} s, "
          f"{sum(e.kind == 'interruption' for e in call.events)} interruptions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=None, help="first N real clips only")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--skip-clips", action="store_true")
    parser.add_argument("--skip-call", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper import WhisperModel

    from pipeline.config import load_config
    from pipeline.scoring import Scorer
    from pipeline.speech import whisper_models

    config = load_config()
    many_turns(config)
    scorer = Scorer(config, speech_overrides={"progress": False})
    speech = scorer.speech_config()
    model_dir = whisper_models.packaged_ct2_model("whisper-base", whisper_models.cache_dir(speech.get("cache_dir", "")))
    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=speech["cpu_threads"])
    if not args.skip_clips:
        if SPEECH.is_dir():
            clips_as_mono_calls(scorer, model, speech, args.clips)
        else:
            print(f"{SPEECH}: real speech clips not found, skipped")
    if not args.skip_call:
        long_stereo_call(scorer, model, speech, args.minutes)


if __name__ == "__main__":
    main()
