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


# --- the privacy corpus: every separator and numeral style, in text and in clip audio ---

STYLES = {  # how a digit may be written or recognised
    "ascii": "0123456789",
    "full_width": "０１２３４５６７８９",
    "spoken": "零一二三四五六七八九",
    "spoken_yao_liang": "〇幺两三四五六七八九",
    "financial": "零壹贰叁肆伍陆柒捌玖",
}
SEPARATORS = ["", " ", "  ", "，", "、", ".", "。", "-", "－", "—", "·", "/", "\u3000", ", ", " - "]
NUMBERS = {  # kind -> (digits, how people read it in groups)
    "phone": ("13812345678", (3, 4, 4)),
    "bank_card": ("6222021234567890123", (4, 4, 4, 4, 3)),
    "id_card": ("110101199003071234", (6, 8, 4)),
    "landline": ("01062345678", (3, 8)),
}


def _written(digits: str, groups: tuple[int, ...], style: str, separator: str, mixed: bool = False) -> str:
    """The number in one digit style (or alternating styles digit by digit), its groups joined by `separator`."""
    styles = list(STYLES.values())
    chars = [(styles[i % len(styles)] if mixed else STYLES[style])[int(d)] for i, d in enumerate(digits)]
    out, at = [], 0
    for size in groups:
        out.append("".join(chars[at:at + size]))
        at += size
    return separator.join(out)


CORPUS = [(kind, style, sep, _written(digits, groups, style, sep))
          for kind, (digits, groups) in NUMBERS.items() for style in STYLES for sep in SEPARATORS]
CORPUS += [(kind, "mixed", sep, _written(digits, groups, "", sep, mixed=True))
           for kind, (digits, groups) in NUMBERS.items() for sep in SEPARATORS]
CORPUS += [("id_card", "x", sep, "110101 19900307 123" + x) for sep in ("", " ") for x in "Xx叉"]


@pytest.mark.parametrize("kind, style, separator, number", CORPUS,
                         ids=[f"{k}-{s}-{ascii(sep)}" for k, s, sep, _ in CORPUS])
def test_privacy_corpus_text_is_masked_raw_and_normalised(privacy, kind, style, separator, number):
    from pipeline.normalize import normalize_text

    digit_chars = set(privacy.numbers.digit_of)
    raw = f"好的我的号码是{number}您记好"
    # Raw text: exactly the number is masked, separators between its groups included.
    assert privacy.mask(raw) == f"好的我的号码是{'*' * len(number)}您记好"
    # Normalised text (as every reader stores it): no digit of any style is left.
    masked = privacy.mask(normalize_text(raw))
    assert not digit_chars & set(masked), masked


@pytest.mark.parametrize("text", [
    "退款三百块", "两点半到", "2026年11月16日", "十一月十六号下午三点", "2026-11-16 14:30", "12345.50元",
    "一共1,280,000元", "一两天", "第三四五个", "拨打400-820-8820咨询", "800 820 8820", "订单金额是299。谢谢",
    "我要二三十个", "123456就行", "一二三四五六就行"])
def test_privacy_corpus_amounts_dates_and_times_are_kept(privacy, text):
    from pipeline.normalize import normalize_text

    assert privacy.mask(text) == text
    assert privacy.mask(normalize_text(text)) == normalize_text(text)


# One form per separator and style, spoken as ASR gives it: one word per group.
AUDIO_CASES = [("phone", "spoken", " "), ("phone", "ascii", "，"), ("phone", "ascii", "、"), ("phone", "ascii", "."),
               ("phone", "spoken", "。"), ("phone", "ascii", "-"), ("bank_card", "financial", " "),
               ("id_card", "spoken_yao_liang", "，"), ("phone", "full_width", "·"), ("landline", "spoken", "/")]


def test_privacy_corpus_clip_audio_is_silent_over_every_number(tmp_path, config):
    """A call whose customer reads a number in each style, one word per group (and a turn
    with no word times): in the exported clip every masked word is digital silence and
    the speech around it is not."""
    from pipeline.config import config_path
    from pipeline.model import AudioInfo, Call, Tag
    from pipeline.normalize import normalize_text
    from pipeline.scorecard import load_scorecard, score_call
    from tests.conftest import write_call_audio

    privacy = load_privacy(config)
    rate, turns, number_words = 8000, [Turn(id=0, role="agent", text="这是公司规定，没办法", start=0.0, end=2.0)], []
    clock = 2.5
    for kind, style, separator in AUDIO_CASES:
        digits, groups = NUMBERS[kind]
        pieces = _written(digits, groups, style, separator).split(separator)
        words = [Word(text="我的号码是", start=clock, end=clock + 1.0)]
        for piece in pieces:
            words.append(Word(text=piece, start=words[-1].end + 0.3, end=words[-1].end + 0.3 + 0.12 * len(piece)))
            number_words.append(words[-1])
        words.append(Word(text="您记好", start=words[-1].end + 0.5, end=words[-1].end + 1.5))
        text = normalize_text("我的号码是" + separator.join(pieces) + " 您记好")
        turns.append(Turn(id=len(turns), role="customer", text=text, start=clock, end=words[-1].end, words=words))
        clock = words[-1].end + 1.0
    # No word times: silenced in proportion to the characters' place in the turn.
    plain = normalize_text("号码一三八 一二三四 五六七八")
    turns.append(Turn(id=len(turns), role="customer", text=plain, start=clock, end=clock + len(plain) * 0.25))
    call = Call(id="privacy/corpus", turns=turns,
                tags=[Tag(label="rigid", turn_id=0, char_start=0, char_end=6, text="这是公司规定", source="test")])
    call.audio = AudioInfo(path=str(write_call_audio(call, tmp_path / "corpus.wav", rate)), sample_rate=rate)
    score_call(call, load_scorecard(config_path(config, config["scorecard"])))
    store = Store(tmp_path / "callqa.db")
    store.save_call(call, "sha", "cfg")

    [row], skipped = export_clips(store, store.list_calls(), tmp_path / "clips", padding=clock + 60, privacy=privacy)
    assert not skipped and row.clip_start == 0
    for turn in turns[1:]:
        line = row.transcript.split("\n")[turn.id].split(": ", 1)[1]  # after "[mm:ss] 客户: "
        assert not set(privacy.numbers.digit_of) & set(line), line
    samples, _ = sf.read(tmp_path / "clips" / row.file)
    original, _ = sf.read(call.audio.path)

    def part(audio, start, end):
        return audio[int(start * rate):int(end * rate)]

    for word in number_words:  # every group of digits is silent
        assert np.abs(part(samples, word.start, word.end)).max() == 0, word
        assert np.abs(part(original, word.start, word.end)).max() > 0.1
    for turn in turns[1:-1]:  # the words around the number are not
        first, last = turn.words[0], turn.words[-1]
        assert np.abs(part(samples, first.start, first.end - privacy.silence_pad - 0.01)).max() > 0.1
        assert np.abs(part(samples, last.start + privacy.silence_pad + 0.01, last.end)).max() > 0.1
    last = turns[-1]
    at, end = plain.index("一"), len(plain)
    share = (last.end - last.start) / len(plain)
    assert np.abs(part(samples, last.start + at * share, last.start + end * share)).max() == 0
    assert np.abs(part(samples, last.start, last.start + at * share - privacy.silence_pad - 0.01)).max() > 0.1


def test_clips_of_ids_that_share_a_file_name_do_not_overwrite_each_other(tmp_path, config):
    from pipeline.config import config_path
    from pipeline.model import AudioInfo, Call, Tag
    from pipeline.scorecard import load_scorecard, score_call
    from tests.conftest import write_call_audio

    store = Store(tmp_path / "callqa.db")
    scorecard = load_scorecard(config_path(config, config["scorecard"]))
    for tone, call_id in enumerate(["team/1", "team_1"]):
        turns = [Turn(id=0, role="agent", text="这是公司规定", start=0.0, end=1.0 + tone)]
        call = Call(id=call_id, turns=turns, tags=[Tag(label="rigid", turn_id=0, char_start=0, char_end=6,
                                                        text="这是公司规定", source="test")])
        call.audio = AudioInfo(path=str(write_call_audio(call, tmp_path / f"{tone}.wav")))
        store.save_call(score_call(call, scorecard), "sha", "cfg")
    rows, _ = export_clips(store, store.list_calls(), tmp_path / "clips", padding=0.5, privacy=None)
    assert len({r.file for r in rows}) == 2
    assert len(list((tmp_path / "clips").glob("*.wav"))) == 2
