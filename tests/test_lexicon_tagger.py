"""Each lexicon rule: seed wording and paraphrases fire; context cases do not."""

import pytest

from pipeline.normalize import normalize_text
from pipeline.taggers.lexicon import LexiconError, LexiconTagger


@pytest.fixture(scope="module")
def tagger(config):
    return LexiconTagger.from_config(config)


def labels(tagger, text, role="agent"):
    return {h.label for h in tagger.predict([normalize_text(text)], [role])[0]}


POSITIVES = [
    ("greeting", "您好，很高兴为您服务"),
    ("greeting", "您好，工号1024为您服务"),
    ("backchannel", "嗯，我在听"),
    ("backchannel", "好的"),
    ("backchannel", "我明白，您继续说"),
    ("backchannel", "嗯嗯，对，您接着说"),
    ("backchannel", "好的好的，我都记下了"),
    ("confirmation", "您是说宽带每天晚上都断线，对吗？"),
    ("confirmation", "您的问题是退款一直没到账，对吗？"),
    ("confirmation", "我跟您确认一下地址"),
    ("empathy", "您一定很着急吧"),
    ("empathy", "我理解您的心情，换做是我也会很生气"),
    ("empathy", "让您久等了"),
    ("perfunctory", "您别生气"),
    ("perfunctory", "您别激动"),
    ("perfunctory", "您冷静一点"),
    ("rigid", "这是公司规定"),
    ("rigid", "没办法"),
    ("rigid", "规定就是这样"),
    ("rigid", "这个不归我们管"),
    ("polite", "请您稍等"),
    ("polite", "麻烦您提供一下订单号"),
    ("polite", "感谢您"),
    ("polite", "谢谢您的耐心"),
    ("apology", "非常抱歉给您带来不便"),
    ("vague", "我不清楚"),
    ("vague", "需要问一下"),
    ("vague", "应该是吧"),
    ("vague", "可能吧"),
    ("impatient", "你别催了"),
    ("impatient", "我已经说过了"),
    ("impatient", "你听我说"),
    ("proactive", "还有什么可以帮您？"),
    ("proactive", "您是否需要了解我们的新功能？"),
    ("commitment", "我会帮您登记，预计两小时内给您回复"),
    ("commitment", "三个工作日内给您回电"),
    ("closing", "感谢您的来电，祝您生活愉快"),
]


@pytest.mark.parametrize("label, text", POSITIVES)
def test_domain_examples_are_tagged(tagger, label, text):
    assert label in labels(tagger, text)


NEGATIVES = [
    # the document's recommended rewrite of 这是公司规定
    ("rigid", "根据公司政策，我们可以帮您申请退款"),
    ("rigid", "这是公司规定，不过我可以帮您申请补偿"),
    ("rigid", "不是没办法，我帮您想想"),
    # soothing paired with help is recommended
    ("perfunctory", "您别着急，我马上帮您查"),
    ("perfunctory", "您别着急，我会尽全力帮您"),
    # 请 inside 申请 is not a polite word
    ("polite", "您的申请已经提交"),
    # 对 in 对吗 is a question, not a backchannel
    ("backchannel", "您是说宽带断了，对吗？"),
    # a turn that opens with 好的 / 行 and then answers is the answer, not a listening signal
    ("backchannel", "好的，您的快递明天上午会送到"),
    ("backchannel", "行，我这就给您改成下午送"),
    ("backchannel", "行了行了，知道了"),
    # a rule followed by another way forward; soothing followed by help a sentence later
    ("rigid", "超过期限没办法退了，但我可以帮您申请一次免费维修"),
    ("rigid", "我不会跟您说这是公司规定就不管了"),
    ("perfunctory", "您别着急，订单我这边已经看到了，现在马上联系仓库"),
    # asking at the end is proactive, not an opening
    ("greeting", "还有什么可以帮您？"),
    ("vague", "这不是我不清楚，是系统还没更新"),
]


@pytest.mark.parametrize("label, text", NEGATIVES)
def test_context_cases_are_not_tagged(tagger, label, text):
    assert label not in labels(tagger, text)


@pytest.mark.parametrize("text, expected", [
    ("你们到底怎么回事！！我要投诉", "sentiment.negative"),
    ("我都等了半天了，怎么还没到", "sentiment.negative"),
    ("明天就要用，这可怎么办", "sentiment.negative"),
    ("太好了，谢谢你", "sentiment.positive"),
])
def test_customer_sentiment(tagger, text, expected):
    assert expected in labels(tagger, text, role="customer")


@pytest.mark.parametrize("text", [
    "我的退款还没到账，想问一下进度",       # a problem told calmly
    "我上周买的台灯，开关按下去没反应",
    "订单号是三三零六八八二一",             # a number read out
    "要是下周还没发货的话，能退吗？",       # a calm question about a possible problem
    "好，那就先这样，拜拜",                 # closing pleasantry
])
def test_calm_customer_turns_are_not_negative(tagger, text):
    assert "sentiment.negative" not in labels(tagger, text, role="customer")


def test_complaint_threat_is_negative(tagger):
    assert "sentiment.negative" in labels(tagger, "你们再不处理我就打12315", role="customer")


def test_negated_emotion_is_not_negative(tagger):
    assert "sentiment.negative" not in labels(tagger, "我不生气，就是问问", role="customer")
    assert "sentiment.positive" not in labels(tagger, "我很不满意", role="customer")
    assert "sentiment.negative" in labels(tagger, "我很不满意", role="customer")


def test_agent_tags_do_not_fire_on_customer_turns(tagger):
    assert "rigid" not in labels(tagger, "你们这是公司规定吗？", role="customer")


def test_hits_point_at_the_matched_characters(tagger):
    text = normalize_text("好的，这是公司规定")
    [hits] = tagger.predict([text], ["agent"])
    rigid = next(h for h in hits if h.label == "rigid")
    assert text[rigid.char_start:rigid.char_end] == "这是公司规定"


def test_bad_lexicon_file_is_reported_with_its_name(tmp_path):
    (tmp_path / "x.yaml").write_text("label: x\nphrases: [a]\npatterns: ['(unclosed']\n", encoding="utf-8")
    with pytest.raises(LexiconError, match=r"x.yaml: pattern 0"):
        LexiconTagger(tmp_path)
    (tmp_path / "x.yaml").write_text("label: x\nphrase: [a]\n", encoding="utf-8")
    with pytest.raises(LexiconError, match=r"unknown keys \['phrase'\]"):
        LexiconTagger(tmp_path)
