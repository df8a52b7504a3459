import copy
import textwrap

import pytest

from pipeline.events import detect_events
from pipeline.taggers import tag_call
from tests.conftest import make_call


def events_of(scorer, call, config=None):
    tag_call(call, scorer.tagger)
    detect_events(call, config or scorer.config)
    return call.events


def kinds(events, kind):
    return [e for e in events if e.kind == kind]


def test_agent_talking_over_the_customer_is_an_interruption(scorer):
    call = make_call(("customer", "我家宽带每天晚上都特别卡，白天还好，我想问是不是", 0.0, 6.0),
                     ("agent", "您先重启一下光猫试试看吧", 4.8, 8.0))
    [event] = kinds(events_of(scorer, call), "interruption")
    assert event.role == "agent" and event.turn_ids == [0, 1]
    assert event.start == pytest.approx(4.8) and event.end == pytest.approx(6.0)
    assert event.value == pytest.approx(1.2)


def test_backchannel_over_the_customer_is_not_an_interruption(scorer):
    call = make_call(("customer", "我家宽带每天晚上都特别卡，白天还好", 0.0, 6.0),
                     ("agent", "嗯嗯，好的", 3.0, 3.6),
                     ("agent", "我帮您查一下线路", 6.5, 8.0))
    assert not kinds(events_of(scorer, call), "interruption")


def test_short_overlap_and_simultaneous_start_are_not_interruptions(scorer):
    short = make_call(("customer", "我要查一下我的话费余额", 0.0, 3.0),
                      ("agent", "好的我这边帮您查询", 2.8, 5.0))  # 0.2 s < min_overlap
    together = make_call(("customer", "喂你好我要查一下话费", 0.0, 3.0),
                         ("agent", "您好这里是客服中心", 0.3, 3.0))  # within delay_time
    assert not kinds(events_of(scorer, short), "interruption")
    assert not kinds(events_of(scorer, together), "interruption")


def test_cut_in_mid_sentence_without_overlap(scorer):
    call = make_call(("customer", "我上个月的账单里有一笔", 0.0, 3.0),
                     ("agent", "那个是增值业务费用", 3.1, 5.0),
                     ("customer", "不是，我是说有一笔我没用过的流量费", 5.3, 8.0))
    [event] = kinds(events_of(scorer, call), "interruption")
    assert event.turn_ids == [0, 1] and "cut in" in event.detail


def test_customer_over_agent_is_reported_separately(scorer):
    call = make_call(("agent", "根据您的套餐，本月超出的流量按每兆三毛计算", 0.0, 5.0),
                     ("customer", "你别念了，我就问能不能退", 3.5, 6.0))
    events = events_of(scorer, call)
    assert not kinds(events, "interruption")
    [event] = kinds(events, "customer_overlap")
    assert event.role == "customer" and event.value == pytest.approx(1.5)


@pytest.mark.parametrize("preset, found", [("strict", 2), ("standard", 1), ("lenient", 0)])
def test_silence_presets(scorer, preset, found):
    config = copy.deepcopy(scorer.config)
    config["events"]["silence"]["preset"] = preset
    call = make_call(("customer", "帮我查下订单", 0.0, 2.0),
                     ("agent", "好的", 6.0, 7.0),        # 4 s gap
                     ("agent", "查到了，明天送达", 14.0, 16.0))  # 7 s gap
    silences = kinds(events_of(scorer, call, config), "silence")
    assert len(silences) == found
    if found:
        assert silences[-1].role == "agent" and silences[-1].start == 7.0 and silences[-1].end == 14.0


def test_speech_rate_is_characters_over_speaking_time(scorer):
    call = make_call(("agent", "一二三四五六七八九十", 0.0, 2.0),    # 10 字 in 2 s
                     ("customer", "好", 2.5, 3.0),
                     ("agent", "一二三四五，六七八九十。", 3.5, 6.5))  # 10 字 in 3 s, punctuation not counted
    [rate] = [e for e in kinds(events_of(scorer, call), "speech_rate") if e.role == "agent"]
    assert rate.value == pytest.approx(20 / 5 * 60)
    assert rate.turn_ids[0] == 0  # fastest turn first in time order, kept as evidence


def test_talk_ratio_and_first_response(scorer):
    call = make_call(("customer", "喂，有人吗，我要问一下退款", 0.0, 4.0),
                     ("agent", "您好，请讲", 6.0, 8.0),
                     ("customer", "我的退款还没到", 8.5, 10.5))
    events = events_of(scorer, call)
    [ratio] = kinds(events, "talk_ratio")
    assert ratio.value == pytest.approx(2 / 8, abs=1e-3)
    [first] = kinds(events, "first_response")
    assert first.value == pytest.approx(2.0) and first.start == 4.0 and first.end == 6.0


def test_calls_without_times_get_no_timing_events(scorer):
    call = make_call(("customer", "我要投诉"), ("agent", "您好"))
    assert events_of(scorer, call) == []


def test_customer_resuming_after_a_comma_pause_is_one_turn_talked_over(scorer):
    """The customer pauses 0.3 s, resumes, and the agent starts 0.5 s later: the
    customer's turn began 3.8 s before the agent, so this is a cut-in, found once."""
    call = make_call(("customer", "我上个月的账单里有一笔流量费，", 0.0, 3.0),
                     ("customer", "我根本没用过那么多流量", 3.3, 7.0),
                     ("agent", "那个是您开通的增值业务", 3.8, 7.5))
    [event] = kinds(events_of(scorer, call), "interruption")
    assert event.turn_ids == [1, 2] and event.start == pytest.approx(3.8)
    assert event.value == pytest.approx(3.2)
    assert not kinds(call.events, "customer_overlap")


def test_one_event_per_agent_turn_over_a_customer_turn_in_pieces(scorer):
    """A customer turn recognised in three pieces, the agent talking over all of them: one event."""
    call = make_call(("customer", "我家宽带每天晚上都特别卡，", 0.0, 3.0),
                     ("customer", "白天还好，", 3.2, 5.0),
                     ("customer", "你们能不能派人来看看", 5.4, 8.0),
                     ("agent", "您先重启一下光猫试试看吧，不行的话我再帮您报修", 2.0, 9.0))
    [event] = kinds(events_of(scorer, call), "interruption")
    assert event.turn_ids == [0, 3] and event.value == pytest.approx(6.0)


def test_customer_carrying_on_while_the_agent_talks_over_her_is_not_her_overlap(scorer):
    call = make_call(("customer", "我买的冰箱昨天送到了，但是门关不上", 0.0, 6.0),
                     ("agent", "您先检查一下冰箱是不是放平了", 4.5, 9.0),
                     ("customer", "而且还有很大的噪音，晚上根本睡不着", 6.8, 10.0))
    events = events_of(scorer, call)
    [event] = kinds(events, "interruption")
    assert event.turn_ids == [0, 1]
    assert not kinds(events, "customer_overlap")


def test_backchannel_turns_under_the_other_party_are_no_overlap(scorer):
    call = make_call(("agent", "根据您的套餐，本月超出的流量按每兆三毛计算", 0.0, 5.0),
                     ("customer", "嗯", 2.0, 2.3),
                     ("customer", "好", 3.5, 3.8),
                     ("agent", "好的好的", 6.0, 6.2),
                     ("customer", "那我这个月要交多少钱呢，能不能帮我算一下", 5.5, 9.0),
                     ("agent", "嗯", 7.0, 7.3))
    events = events_of(scorer, call)
    assert not kinds(events, "interruption") and not kinds(events, "customer_overlap")


def mono(call):
    from pipeline.model import AudioInfo

    call.audio = AudioInfo(path="call.wav", channels=1, overlaps_measurable=False)
    return call


def test_mono_takeover_without_a_pause_is_talking_over(scorer):
    """Mono turns never overlap: the other party starting with no pause after someone
    who had been talking is taking over; a reply after a pause is not, nor is a short 嗯."""
    call = mono(make_call(("customer", "我家宽带每天晚上都特别卡，白天还好，我想问是不是", 0.0, 4.8),
                          ("agent", "您先重启一下光猫试试看吧", 4.8, 8.0),
                          ("customer", "重启过了，没有用，还是一样卡", 8.4, 11.0),
                          ("agent", "好的", 11.0, 11.4),
                          ("agent", "那我帮您派一个师傅上门看看吧", 12.0, 15.0),
                          ("customer", "那要等多久才能来", 15.0, 17.0)))
    events = events_of(scorer, call)
    [interruption] = kinds(events, "interruption")
    # The voice change (4.8 s) is where the customer gave way; the two began about a hop before.
    assert interruption.turn_ids == [0, 1] and interruption.start == 4.3 and interruption.end == 4.8
    assert interruption.value is None
    assert "cannot be measured" in interruption.detail
    [customer] = kinds(events, "customer_overlap")
    assert customer.turn_ids == [4, 5]
    assert not kinds(events, "overlaps_not_measurable")


def test_mono_customer_carrying_on_is_not_her_overlap(scorer):
    call = mono(make_call(("customer", "我的订单三天了还没发货，客服一直说在处理", 0.0, 4.0),
                          ("agent", "非常抱歉我马上帮您催一下", 4.0, 5.0),
                          ("customer", "而且电话也一直打不通", 5.0, 7.0)))
    events = events_of(scorer, call)
    assert len(kinds(events, "interruption")) == 1 and not kinds(events, "customer_overlap")


def test_mono_agent_starting_in_the_customers_comma_pause_cut_her_off(scorer):
    """The customer pauses at a comma and goes on, under the agent: the mix keeps the
    pause, not her next words, but the recogniser ends her turn at the comma. The same
    quick start after a full stop is a reply, and the customer's quick start after the
    agent's comma is not charged (her words may simply follow his)."""
    def call(customer_text, agent_start):
        return mono(make_call(("customer", customer_text, 0.0, 5.0),
                              ("agent", "我已经帮您提交了维修工单，师傅明天上午会联系您，", agent_start, 9.0),
                              ("customer", "好的，那你们一定要尽快处理。", 9.1, 12.0),
                              ("agent", "明天上午十点之前师傅一定到", 12.1, 14.0)))
    events = events_of(scorer, call("我昨天收到的快递里面东西是坏的，包装都压扁了，", 5.1))
    [cut] = kinds(events, "interruption")
    assert cut.turn_ids == [0, 1] and "comma pause" in cut.detail
    assert not kinds(events, "customer_overlap")
    assert not kinds(events_of(scorer, call("我昨天收到的快递里面东西是坏的，包装都压扁了。", 5.1)), "interruption")
    assert not kinds(events_of(scorer, call("我昨天收到的快递里面东西是坏的，包装都压扁了，", 5.4)), "interruption")


def test_mono_takeover_whose_words_were_lost_in_the_mix_still_counts(scorer):
    """Two voices at once often leave Whisper with a character or two: a 3 s turn is
    more than a backchannel whatever its text, a 0.4 s 嗯 is not."""
    lost = mono(make_call(("customer", "我昨天收到的快递里面东西是坏的，包装都压扁了", 0.0, 5.0),
                          ("agent", "回", 5.0, 8.0)))
    short = mono(make_call(("customer", "我昨天收到的快递里面东西是坏的，包装都压扁了", 0.0, 5.0),
                           ("agent", "嗯", 5.0, 5.4)))
    assert len(kinds(events_of(scorer, lost), "interruption")) == 1
    assert not kinds(events_of(scorer, short), "interruption")


def test_mono_calls_can_be_marked_not_measurable_instead(tmp_path, scorer):
    """With mono_takeover off a mono mix gets no interruption events but a marker, so a
    rule can be N/A."""
    from pipeline.scorecard import load_scorecard, score_call

    config = copy.deepcopy(scorer.config)
    config["events"]["interruption"]["mono_takeover"] = False
    call = mono(make_call(("customer", "我家宽带每天晚上都特别卡，白天还好，我想问是不是", 0.0, 4.8),
                          ("agent", "您先重启一下光猫试试看吧", 4.8, 8.0)))
    events = events_of(scorer, call, config)
    assert not kinds(events, "interruption")
    [marker] = kinds(events, "overlaps_not_measurable")
    assert marker.start == 0.0 and marker.end == 8.0
    card = tmp_path / "scorecard.yaml"
    card.write_text(textwrap.dedent("""\
        name: t
        version: "1"
        grades: [{grade: 优秀, min: 90}, {grade: 不合格, min: 0}]
        dimensions:
          listening: {label: 倾听, weight: 1}
        rules:
          - id: interruption
            dimension: listening
            description: 打断客户说话
            type: penalty
            points: 10
            when: {event: interruption}
            applies_when: {none: [{event: overlaps_not_measurable}]}
        """), encoding="utf-8")
    scored = score_call(call, load_scorecard(card))
    [result] = scored.scores.dimensions["listening"].results
    assert result.status == "na"


def test_overlaps_are_found_in_one_pass_over_many_turns(scorer):
    """20,000 alternating turns with an agent cut-in every fifth exchange: every one found
    (the sweep over sorted turns; the time is measured in benchmarks/bench_speech.py)."""
    from pipeline.events import detect_events

    turns = []
    for i in range(10_000):
        start = i * 10.0
        cut_in = i % 5 == 0
        turns.append(("customer", "我想问一下这个账单是怎么回事", start, start + 5.0))
        turns.append(("agent", "我帮您查一下这个账单", start + (4.0 if cut_in else 5.5), start + 8.0))
    call = make_call(*turns)
    detect_events(call, scorer.config)
    assert len(kinds(call.events, "interruption")) == 2_000
