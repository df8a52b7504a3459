"""ASR accuracy and speed on real Mandarin speech, for each backend in one run.

    PYTHONPATH=. python benchmarks/bench_asr.py [--backends faster-whisper openai-whisper]
        [--limit N] [--telephone] [--calls] [--config my-speech.yaml]

Clips: ../shared/real/speech (103 read/broadcast utterances with reference
transcripts; not shipped with the project). CER normalisation (pipeline/speech/cer.py):
Traditional -> Simplified, punctuation removed, Arabic numbers rewritten as
Chinese digit by digit or read as a number, whichever matches the reference.
Digit-string clips (references made only of Chinese digits) are reported apart.

--telephone simulates a phone line: each clip is resampled to 8 kHz and stored as
G.711 mu-law WAV before recognition (no real 8 kHz Mandarin with transcripts is public).
--calls also runs the whole speech stage (VAD, diarization, ASR, roles) on the
generated calls in tests/data/audio and prints calls per hour.

Each backend runs in its own process so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT.parent / "shared" / "real" / "speech"
CALLS = ROOT / "tests" / "data" / "audio"


def run_backend(backend: str, clips: list[dict], telephone: bool, calls: bool, config_path: Path | None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pipeline.speech.asr import load_recognizer, recognize
    from pipeline.speech.audio import load_audio, resample
    from pipeline.speech.transcribe import load_speech_config, transcribe_file

    config = load_speech_config(config_path)
    config["backend"] = backend
    recognizer = load_recognizer(config)
    recognize(recognizer, np.zeros(16000, dtype=np.float32) + 1e-3, config)  # warm-up (JIT, caches)
    texts, audio_seconds, wall = [], 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            path = SPEECH / clip["file"]
            if telephone:
                audio = load_audio(path)
                path = Path(tmp) / "phone.wav"
                soundfile.write(path, resample(audio.samples[0], 16000, 8000), 8000, subtype="ULAW")
            samples = load_audio(path).samples.mean(axis=0)
            started = time.perf_counter()
            segments, _ = recognize(recognizer, samples, config)
            wall += time.perf_counter() - started
            audio_seconds += len(samples) / 16000
            texts.append("".join(s.text for s in segments))
    result = {"backend": recognizer.name, "texts": texts, "audio_seconds": audio_seconds, "wall": wall}
    if calls:
        call_files = sorted(CALLS.glob("*.wav"))
        started = time.perf_counter()
        transcribed = [transcribe_file(f, config, recognizer, json.loads(f.with_suffix(".json").read_text())["agent_channel"]) for f in call_files]
        result["calls"] = {
            "count": len(call_files),
            "audio_seconds": sum(c.audio.duration for c in transcribed),
            "wall": time.perf_counter() - started,
            # Per role, texts in time order, for the CER against the script.
            "texts": [{role: "".join(t.text for t in c.turns if t.role == role) for role in ("agent", "customer")} for c in transcribed],
            "files": [f.name for f in call_files],
        }
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    from pipeline.speech.cer import CHINESE_DIGIT_CHARS, cer, normalize

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["faster-whisper", "openai-whisper"])
    parser.add_argument("--limit", type=int, default=None, help="first N clips only")
    parser.add_argument("--telephone", action="store_true", help="8 kHz G.711 mu-law simulation")
    parser.add_argument("--calls", action="store_true", help="also time the full speech stage on the test calls")
    parser.add_argument("--config", type=Path, help="a YAML file whose speech: keys override configs/speech.yaml")
    parser.add_argument("--save", type=Path, help="write per-clip hypotheses as JSON here")
    args = parser.parse_args()
    if not SPEECH.is_dir():
        raise SystemExit(f"{SPEECH}: real speech clips not found")
    clips = [json.loads(line) for line in (SPEECH / "manifest.jsonl").read_text(encoding="utf-8").splitlines()][: args.limit]
    is_digits = [set(normalize(c["text"])) <= CHINESE_DIGIT_CHARS for c in clips]

    context = multiprocessing.get_context("spawn")
    results = {}
    for backend in args.backends:
        with context.Pool(1) as pool:
            results[backend] = pool.apply(run_backend, (backend, clips, args.telephone, args.calls, args.config))

    condition = "8 kHz G.711 mu-law (simulated)" if args.telephone else "16 kHz as recorded"
    print(f"{len(clips)} clips, {results[args.backends[0]]['audio_seconds']:.0f} s of audio, {condition}")
    print(f"{'backend':<58} {'CER':>6} {'CER-nodigits':>12} {'CER-digits':>10} {'RTF':>6} {'audio s/s':>9} {'peak MiB':>8}")
    for backend, r in results.items():
        scores = [cer(hyp, clip["text"]) for hyp, clip in zip(r["texts"], clips)]

        def rate(selected: list[bool]) -> str:
            edits = sum(e for (e, _), keep in zip(scores, selected) if keep)
            length = sum(n for (_, n), keep in zip(scores, selected) if keep)
            return f"{edits / length:.1%}" if length else "-"

        print(
            f"{r['backend']:<58} {rate([True] * len(clips)):>6} {rate([not d for d in is_digits]):>12} "
            f"{rate(is_digits):>10} {r['wall'] / r['audio_seconds']:>6.3f} {r['audio_seconds'] / r['wall']:>9.1f} "
            f"{r['peak_rss_mib']:>8.0f}"
        )
        if "calls" in r:
            c = r["calls"]
            for name, texts in zip(c["files"], c["texts"]):
                script = json.loads((CALLS / name).with_suffix(".json").read_text(encoding="utf-8"))["turns"]
                pairs = [cer(texts[role], "".join(t["text"] for t in script if t["role"] == role)) for role in ("agent", "customer")]
                print(f"  {name}: CER {sum(e for e, _ in pairs) / sum(n for _, n in pairs):.1%}")
            print(
                f"  end to end on {c['count']} generated calls ({c['audio_seconds']:.0f} s): RTF {c['wall'] / c['audio_seconds']:.3f}, "
                f"{3600 / (c['wall'] / c['count']):.0f} calls/hour at their length, "
                f"{3600 / (300 * c['wall'] / c['audio_seconds']):.1f} calls/hour for 5-minute calls"
            )
    if len(results) == 2:
        first, second = (results[b]["texts"] for b in args.backends)
        pairs = [cer(a, b) for a, b in zip(first, second)]
        identical = sum(normalize(a) == normalize(b) for a, b in zip(first, second))
        print(
            f"{args.backends[0]} vs {args.backends[1]}: CER between their outputs {sum(e for e, _ in pairs) / max(1, sum(n for _, n in pairs)):.1%}, "
            f"identical text on {identical}/{len(clips)} clips"
        )
    if args.save:
        args.save.write_text(
            json.dumps({b: {"name": r["backend"], "texts": r["texts"]} for b, r in results.items()}, ensure_ascii=False, indent=1),
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
