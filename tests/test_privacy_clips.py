"""Personal data masking, and clip export with the masked speech silenced."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from pipeline.review.clips import export_clips
from pipeline.config import load_config
from pipeline.model import Turn, Word
from pipeline.review.privacy import load_privacy
from pipeline.review.store import Store


@pytest.fixture(scope="module")
def privacy():
    return load_privacy(load_config())


@pytest.mark.parametrize("text, kind, secret", [
    ("我的手机号是13812345678，谢谢", "phone", "13812345678"),
    ("手机是一三八 一二三四 五六七八", "phone", "一三八 一二三四 五六七八"),
    ("+86 139-1234-5678", "phone", "139-1234-5678"),
    ("座机010-62345678", "phone", "010-62345678"),
    ("身份证号110101199003071234", "id_card", "110101199003071234"),
    ("身份证11010119900307123X对吧", "id_card", "11010119900307123X"),
    ("卡号6222 0212 3456 7890 123", "bank_card", "6222 0212 3456 7890 123"),
    ("尾号是6222021234567890", "bank_card", "6222021234567890"),
    ("我住在北京市朝阳区建国路88号3栋2单元501室", "address", "朝阳区建国路88号3栋2单元501"),
    ("送到杭州市西湖区文三路一百二十号", "address", "文三路一百二十号"),
    ("地址是阳光花园5栋1单元302", "address", "阳光花园5栋1单元302"),
])
def test_personal_data_is_masked(privacy, text, kind, secret):
    masked = privacy.mask(text)
    assert len(masked) == len(text)
    assert secret not in masked and "*" * 6 in masked
    assert kind in {k for _, _, k in privacy.find(text)}


@pytest.mark.parametrize("text", ["您好，很高兴为您服务，一两天就到", "我在朝阳区", "拨打400-820-8820咨询",
                                  "预计两小时内给您回复", "退款三百元"])
def test_ordinary_speech_is_left_alone(privacy, text):
    assert privacy.mask(text) == text


def test_silence_spans_use_word_times_or_proportions(privacy):
    words = [Word(text=w, start=s, end=s + 0.5) for w, s in
             [("我的", 10.0), ("手机", 10.5), ("是", 11.0), ("13812345678", 11.5), ("谢谢", 14.0)]]
    with_words = Turn(id=0, role="customer", text="我的手机是13812345678谢谢", start=10.0, end=14.5, words=words)
    [(start, end)] = privacy.silence_spans(with_words)
    assert start == pytest.approx(11.5 - privacy.silence_pad) and end == pytest.approx(12.0 + privacy.silence_pad)
    plain = Turn(id=0, role="customer", text="好的请您记一下号码：13812345678好的好的好的好的好的",
                 start=0.0, end=31.0)
    [(start, end)] = privacy.silence_spans(plain)  # characters 10..21 of 31
    assert start == pytest.approx(10.0 - privacy.silence_pad) and end == pytest.approx(21.0 + privacy.silence_pad)
    # Words that miss part of the number (ASR wrote it differently) do not shrink the silence.
    partial = plain.model_copy(update={"words": [Word(text="138", start=10.0, end=11.0)]})
    assert privacy.silence_spans(partial) == privacy.silence_spans(plain)


def test_clips_are_padded_flag_moments_with_personal_data_silenced(scored_store, tmp_path):
    store_path, audio = scored_store
    store = Store(store_path)
    call = store.get_call("telecom_bad_interrupt_01")
    # The customer ends the interrupted turn reading out a phone number, inside the first clip.
    turn = call.turns[1]
    turn.text = turn.text + "，我手机号是13812345678"
    store.save_call(call, "sha", "cfg")
    calls = store.list_calls(flag="interruption")
    rows, skipped = export_clips(store, calls, tmp_path / "clips", padding=2.0, privacy=load_privacy(load_config()))
    assert not skipped
    ours = [r for r in rows if r.call_id == call.id]
    assert [r.flag for r in ours if r.flag == "interruption"] and all(r.file.endswith(".wav") for r in ours)
    first = next(r for r in ours if r.flag == "interruption")
    samples, rate = sf.read(tmp_path / "clips" / first.file)
    event = next(e for e in call.events if e.kind == "interruption")
    assert len(samples) / rate == pytest.approx(first.clip_seconds, abs=0.01)
    assert first.clip_start == pytest.approx(event.start - 2.0, abs=0.01)
    assert "13812345678" not in first.transcript and "***********" in first.transcript
    # The clip is the call's audio, except the masked characters' share of the turn is silent.
    original, _ = sf.read(call.audio.path)
    expected = original[int(first.clip_start * rate):][:len(samples)]
    span = load_privacy(load_config()).silence_spans(call.turns[1])[0]
    silent = np.zeros(len(samples), dtype=bool)
    silent[int((span[0] - first.clip_start) * rate): int((span[1] - first.clip_start) * rate)] = True
    assert 0.5 * rate < silent.sum() < len(samples) - rate
    assert np.abs(samples[silent]).max() == 0 and np.abs(expected[silent]).max() > 0.1
    assert np.abs(samples[~silent] - expected[~silent]).max() < 1e-3
    with open(tmp_path / "clips" / "index.csv", encoding="utf-8-sig") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    assert first.file in (tmp_path / "clips" / "index.html").read_text(encoding="utf-8")

    ours_only = [s for s in calls if s.id == call.id]
    unmasked, _ = export_clips(store, ours_only, tmp_path / "raw", padding=2.0, privacy=None)
    assert "13812345678" in unmasked[0].transcript


def test_real_spoken_phone_numbers_masked_and_real_chat_left_alone(privacy):
    import json

    from tests.conftest import REAL_DATA

    if not REAL_DATA.is_dir():
        pytest.skip("real data folder ../shared/real not present")
    spoken = [json.loads(line)["text"] for line in open(REAL_DATA / "speech" / "manifest.jsonl", encoding="utf-8")]
    numbers = [t for t in spoken if len(t) == 11 and t.startswith("一")]
    assert len(numbers) >= 5  # AISHELL's digit strings: mobile numbers read digit by digit
    assert all(privacy.mask(t) == "*" * 11 for t in numbers)
    turns = [turn["text"] for line in open(REAL_DATA / "dialogues" / "jddc2019_sample.jsonl", encoding="utf-8")
             for turn in json.loads(line)["turns"]]
    assert sum(1 for t in turns if privacy.find(t)) <= 0.005 * len(turns)
