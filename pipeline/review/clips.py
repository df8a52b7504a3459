"""Clip export for offline review sessions: each flagged moment as a short audio file.

    callqa clips --store out/callqa.db --out clips/ [--week 2026-W47 --agent A017 ...]

For every problem flag with times in a call with audio, writes
clips/<call>_<nn>_<label>.wav (<call> is report.safe_name of the id, unique for
every id; the moment plus `clip_padding` seconds either side), and clips/index.csv
and clips/index.html listing call, agent, flag, time, reviewer verdict and the
transcript of the clip's turns. Personal data is
masked in the transcript and silenced in the audio unless `privacy` is None.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf
from jinja2 import Environment, PackageLoader, select_autoescape
from tqdm import tqdm

from pipeline.report import ROLE_LABELS, clock, safe_name, write_atomic, write_csv
from pipeline.review.privacy import Privacy
from pipeline.review.store import CallSummary, Store
from pipeline.review.verdicts import flags_of

templates = Environment(loader=PackageLoader("pipeline.review", "templates"), autoescape=select_autoescape())


@dataclass
class ClipRow:
    call_id: str
    agent_id: str
    flag: str
    at: str  # mm:ss of the flag in the call
    clip_start: float  # where the clip begins in the call, seconds
    clip_seconds: float
    file: str
    verdict: str
    transcript: str


def export_clips(store: Store, calls: list[CallSummary], out_dir: Path, padding: float,
                 privacy: Privacy | None) -> tuple[list[ClipRow], list[str]]:
    """Write the clips and the index; returns the rows and one line per call skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[ClipRow] = []
    skipped: list[str] = []
    for summary in tqdm(calls, desc="clips", unit="call", disable=len(calls) < 2):
        call = store.get_call(summary.id)
        if call.audio is None or not Path(call.audio.path).is_file():
            skipped.append(f"{call.id}: no audio file")
            continue
        flags = [f for f in flags_of(call, store.verdicts(call.id)) if f.problem and f.start is not None]
        if not flags:
            continue
        try:
            audio = sf.SoundFile(call.audio.path)
        except (sf.LibsndfileError, RuntimeError) as err:
            skipped.append(f"{call.id}: cannot read {call.audio.path}: {err}")
            continue
        with audio:
            rate, frames = audio.samplerate, audio.frames
            for number, flag in enumerate(flags, 1):
                start = max(0.0, flag.start - padding)
                end = min(frames / rate, (flag.end if flag.end is not None else flag.start) + padding)
                audio.seek(int(start * rate))
                samples = audio.read(int((end - start) * rate), always_2d=True)
                turns = [t for t in call.turns if t.start is not None and t.start < end and t.end > start]
                if privacy is not None:
                    for turn in turns:
                        for a, b in privacy.silence_spans(turn):
                            lo, hi = max(0, int((a - start) * rate)), max(0, int((b - start) * rate))
                            samples[lo:hi] = 0
                name = f"{safe_name(call.id)}_{number:02d}_{safe_name(flag.label)}.wav"
                tmp = out_dir / f".{name}.tmp{os.getpid()}"
                sf.write(tmp, samples, rate, subtype="PCM_16", format="WAV")
                os.replace(tmp, out_dir / name)
                transcript = "\n".join(
                    f"[{clock(t.start)}] {ROLE_LABELS[t.role]}: {privacy.mask(t.text) if privacy else t.text}"
                    for t in turns)
                verdict = flag.verdict.verdict + (f" ({flag.verdict.reason})" if flag.verdict.reason else "") \
                    if flag.verdict else ""
                rows.append(ClipRow(call.id, call.agent_id or "", flag.label, clock(flag.start),
                                    round(start, 2), round(end - start, 2), name, verdict, transcript))
    header = list(ClipRow.__dataclass_fields__)
    write_csv(out_dir / "index.csv", header, [asdict(r) for r in rows])
    write_atomic(out_dir / "index.html", templates.get_template("clips.html").render(rows=rows, skipped=skipped))
    return rows, skipped
