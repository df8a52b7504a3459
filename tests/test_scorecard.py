"""The scorecard engine: every construct of the rule language, N/A, caps,
exceptions, critical rules, evidence, and errors that name the line."""

import textwrap

import pytest

from pipeline.events import detect_events
from pipeline.scorecard import ScorecardError, load_scorecard, score_call
from pipeline.scoring import Scorer
from pipeline.taggers import tag_call
from tests.conftest import make_call

HEADER = """
name: test
version: "1"
grades: [{grade: 优秀, min: 90}, {grade: 良好, min: 80}, {grade: 合格, min: 70}, {grade: 不合格, min: 0}]
dimensions:
  listening: {label: 倾听, weight: 1}
  expression: {label: 表达, weight: 1}
  empathy: {label: 共情, weight: 1}
rules:
"""


@pytest.fixture(scope="module")
def scorer(config):
    """The rule language is tested over the lexicon tagger, whose hits are
    fixed by its word lists; the BERT tagger has its own tests."""
    return Scorer({**config, "tagger": {**config["tagger"], "kind": "lexicon"}})


def card(tmp_path, rules: str):
    path = tmp_path / "scorecard.yaml"
    path.write_text(HEADER + textwrap.indent(textwrap.dedent(rules), "  "), encoding="utf-8")
    return load_scorecard(path)


def run(scorer, scorecard, call):
    tag_call(call, scorer.tagger)
    detect_events(call, scorer.config)
    return score_call(call, scorecard).scores


def result(scores, rule_id):
    return next(r for d in scores.dimensions.values() for r in d.results if r.rule_id == rule_id)


ANGRY = make_call(("agent", "您好，请问有什么可以帮您？", 0.0, 2.0),
                  ("customer", "你们到底怎么回事！！宽带断了三天了", 2.5, 6.0),
                  ("agent", "您别生气，这是公司规定，要排队", 6.5, 9.0),
                  ("customer", "什么破规定，太过分了", 9.5, 11.0),
                  ("agent", "我不清楚，需要问一下", 11.5, 13.0))


def angry():
    return ANGRY.model_copy(deep=True)


def test_penalty_per_hit_with_cap_and_evidence(tmp_path, scorer):
    sc = card(tmp_path, """
    - {id: r, dimension: expression, type: penalty, points: 30, max_points: 40, when: {tag: [rigid, vague, perfunctory], role: agent}}
    """)
    scores = run(scorer, sc, angry())
    r = result(scores, "r")
    # turn 2 (perfunctory + rigid) and turn 4 (vague): two occurrences, 60 capped at 40
    assert r.status == "deduct" and r.points == -40
    assert scores.dimensions["expression"].score == 60
    ev = r.evidence[0]
    assert ev.turn_ids == [2] and ev.speaker == "agent" and ev.start == 6.5 and ev.end == 9.0
    assert ev.text in ("您别生气", "这是公司规定")


def test_required_rule_with_position_window(tmp_path, scorer):
    sc = card(tmp_path, """
    - {id: greet, dimension: expression, type: required, points: 5, when: {tag: greeting, role: agent, first_turns: 1}}
    - {id: close, dimension: expression, type: required, points: 7, when: {tag: closing, role: agent, last_turns: 1}}
    """)
    scores = run(scorer, sc, angry())
    assert result(scores, "greet").status == "pass"
    close = result(scores, "close")
    assert close.status == "deduct" and close.points == -7
    assert close.evidence[0].turn_ids == [4]  # the window searched: the last agent turn


def test_time_windows(tmp_path, scorer):
    sc = card(tmp_path, """
    - {id: early, dimension: expression, type: penalty, points: 5, when: {tag: vague, first_seconds: 10}}
    - {id: late, dimension: expression, type: penalty, points: 5, when: {tag: vague, last_seconds: 3}}
    """)
    scores = run(scorer, sc, angry())
    assert result(scores, "early").status == "pass"
    assert result(scores, "late").status == "deduct"


def test_any_all_none_at_least(tmp_path, scorer):
    sc = card(tmp_path, """
    - {id: all_yes, dimension: expression, type: penalty, per: call, points: 1, when: {all: [{tag: rigid}, {tag: vague}]}}
    - {id: all_no, dimension: expression, type: penalty, per: call, points: 1, when: {all: [{tag: rigid}, {tag: impatient}]}}
    - {id: none_yes, dimension: expression, type: penalty, per: call, points: 1, when: {none: [{tag: empathy}, {tag: apology}], role: agent}}
    - {id: n_of_yes, dimension: expression, type: penalty, per: call, points: 1, when: {at_least: 3, of: [{tag: rigid}, {tag: vague}, {tag: perfunctory}, {tag: impatient}]}}
    - {id: n_of_no, dimension: expression, type: penalty, per: call, points: 1, when: {at_least: 4, of: [{tag: rigid}, {tag: vague}, {tag: perfunctory}, {tag: impatient}]}}
    """)
    scores = run(scorer, sc, angry())
    status = {r: result(scores, r).status for r in ("all_yes", "all_no", "none_yes", "n_of_yes", "n_of_no")}
    assert status == {"all_yes": "deduct", "all_no": "pass", "none_yes": "deduct",
                      "n_of_yes": "deduct", "n_of_no": "pass"}
    # "none" points at the agent turns it searched
    assert result(scores, "none_yes").evidence[0].turn_ids == [0, 2, 4]


def test_regex_with_exclusion_and_proximity(tmp_path, scorer):
    sc = card(tmp_path, """
    - {id: policy_bare, dimension: expression, type: penalty, points: 5, when: {regex: '规定', role: agent, not_near: {phrase: [可以帮您, 帮您申请]}, within_chars: 8}}
    - {id: policy_excl, dimension: expression, type: penalty, points: 5, when: {regex: '规定', exclude: '可以帮您', role: agent}}
    - {id: policy_near, dimension: expression, type: bonus, points: 5, when: {phrase: 公司政策, near: {phrase: 可以帮您}, within_chars: 8}}
    """)
    helpful = make_call(("agent", "根据公司政策规定，我们可以帮您申请退款"))
    bare = make_call(("agent", "这是公司规定"))
    assert result(run(scorer, sc, helpful), "policy_bare").status == "pass"
    assert result(run(scorer, sc, helpful), "policy_excl").status == "pass"
    assert result(run(scorer, sc, helpful), "policy_near").status == "bonus"
    assert result(run(scorer, sc, bare), "policy_bare").status == "deduct"
    assert result(run(scorer, sc, bare), "policy_excl").status == "deduct"


def test_role_scope(tmp_path, scorer):
    sc = card(tmp_path, """
    - {id: agent_says, dimension: expression, type: penalty, points: 5, when: {phrase: 规定, role: agent}}
    - {id: customer_says, dimension: expression, type: penalty, points: 5, when: {phrase: 规定, role: customer}}
    - {id: both_say, dimension: expression, type: penalty, points: 1, when: {phrase: 规定, role: both}}
    """)
    scores = run(scorer, sc, angry())
    assert [e.turn_ids for e in result(scores, "agent_says").evidence] == [[2]]
    assert [e.turn_ids for e in result(scores, "customer_says").evidence] == [[3]]
    assert result(scores, "both_say").points == -2


def test_anchored_response_and_na_without_occasion(tmp_path, scorer):
    sc = card(tmp_path, """
    - id: respond
      dimension: empathy
      type: response
      points: 10
      trigger: {tag: sentiment.negative, role: customer}
      expect: {tag: [empathy, apology], role: agent}
      within_turns: 1
    """)
    scores = run(scorer, sc, angry())
    r = result(scores, "respond")
    assert r.status == "deduct" and r.points == -20
    assert [e.turn_ids for e in r.evidence] == [[1], [3]]
    answered = make_call(("customer", "你们到底怎么回事！！"), ("agent", "非常抱歉，我理解您的心情"))
    assert result(run(scorer, sc, answered), "respond").status == "pass"
    late = make_call(("customer", "你们到底怎么回事！！"), ("agent", "请讲"), ("customer", "嗯"),
                     ("agent", "非常抱歉"))
    assert result(run(scorer, sc, late), "respond").status == "deduct"
    calm = make_call(("customer", "我想查一下话费"), ("agent", "好的，请稍等"))
    calm_scores = run(scorer, sc, calm)
    assert result(calm_scores, "respond").status == "na"
    assert calm_scores.dimensions["empathy"].score is None
    assert not calm_scores.dimensions["empathy"].applicable


def test_na_dimension_is_left_out_of_the_total(tmp_path, scorer):
    sc = card(tmp_path, """
    - {id: rigid, dimension: expression, type: penalty, points: 40, when: {tag: rigid}}
    - {id: emp, dimension: empathy, type: required, points: 50, when: {tag: empathy}, applies_when: {tag: sentiment.negative, role: customer}}
    """)
    calm = make_call(("customer", "我想改套餐"), ("agent", "这是公司规定"))
    scores = run(scorer, sc, calm)
    # listening has no rules (N/A), empathy has no occasion (N/A): total = expression
    assert scores.total == 60 and scores.grade == "不合格"


def test_after_anchor_and_not_after(tmp_path, scorer):
    sc = card(tmp_path, """
    - id: escalation
      dimension: empathy
      type: penalty
      points: 10
      when: {tag: sentiment.negative, role: customer, after: {tag: perfunctory, role: agent}, within_turns: 1}
    - id: silent_hold
      dimension: expression
      type: penalty
      points: 5
      when: {event: silence, role: agent, not_after: {phrase: 请稍等, role: agent}, within_turns: 1}
    """)
    scores = run(scorer, sc, angry())
    assert {tuple(e.turn_ids) for e in result(scores, "escalation").evidence} == {(3,)}
    assert result(scores, "escalation").points == -10  # two hits in one turn are one occurrence
    held = make_call(("customer", "帮我查一下", 0, 2), ("agent", "好的，请稍等", 2.5, 4), ("agent", "查到了", 15, 16))
    unannounced = make_call(("customer", "帮我查一下", 0, 2), ("agent", "好的", 2.5, 4), ("agent", "查到了", 15, 16))
    assert result(run(scorer, sc, held), "silent_hold").status == "pass"
    assert result(run(scorer, sc, unannounced), "silent_hold").status == "deduct"


def test_event_value_bounds_and_exception(tmp_path, scorer):
    sc = card(tmp_path, """
    - id: fast
      dimension: expression
      type: penalty
      per: call
      points: 8
      when: {event: speech_rate, role: agent, min_value: 300}
      unless: {phrase: [快点说, 赶时间], role: customer}
    """)
    fast_turns = [("agent", "一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十", 0.0, 5.0),
                  ("agent", "一二三四五六七八九十一二三四五六七八九十", 5.5, 9.0)]
    rushed = make_call(*fast_turns)
    r = result(run(scorer, sc, rushed), "fast")
    assert r.status == "deduct" and r.points == -8 and "speech_rate" in r.evidence[0].text
    hurried = make_call(("customer", "我赶时间，你快点说", 0.0, 0.0), *fast_turns)
    hurried.turns[0].end = 0.0
    assert result(run(scorer, sc, hurried), "fast").status == "excepted"


def test_critical_rule_fails_the_call(tmp_path, scorer):
    sc = card(tmp_path, """
    - {id: abuse, dimension: expression, type: penalty, severity: critical, points: 1, when: {phrase: 神经病, role: agent}}
    """)
    scores = run(scorer, sc, make_call(("customer", "你们怎么回事"), ("agent", "你神经病吧")))
    assert scores.critical_failed and scores.total == 0 and scores.grade == "不合格"
    assert scores.dimensions["expression"].score == 99  # the dimension still shows its own score


def test_bonus_never_wins_back_a_violation(tmp_path, scorer):
    """Bonuses lift a dimension from its base toward 100; deductions come after,
    so a violation costs its full points whatever good practice surrounds it."""
    path = tmp_path / "scorecard.yaml"
    path.write_text(HEADER.replace("listening: {label: 倾听, weight: 1}",
                                   "listening: {label: 倾听, weight: 1, base: 90}") + textwrap.indent(textwrap.dedent("""
    - {id: good, dimension: listening, type: bonus, points: 5, max_points: 15, when: {tag: backchannel}}
    - {id: bad, dimension: listening, type: penalty, points: 10, when: {tag: vague}}
    """), "  "), encoding="utf-8")
    sc = load_scorecard(path)
    listening = lambda *turns: run(scorer, sc, make_call(*turns)).dimensions["listening"].score
    assert listening(("agent", "嗯，我在听")) == 95
    assert listening(("agent", "嗯，我在听"), ("agent", "我不清楚")) == 85  # not 95: the bonus does not cancel it
    assert listening(("agent", "好的"), ("agent", "嗯"), ("agent", "嗯，我在听")) == 100  # capped
    assert listening(("agent", "我不清楚")) == 80


@pytest.mark.parametrize("rules, line, message", [
    ("- {id: a, dimension: listen, type: penalty, points: 5, when: {tag: rigid}}\n", 10, "`dimension` must be one of"),
    ("- {id: a, dimension: listening, type: minus, points: 5, when: {tag: rigid}}\n", 10, "`type` must be one of"),
    ("- {id: a, dimension: listening, type: penalty, points: -5, when: {tag: rigid}}\n", 10, "`points` must be a non-negative"),
    ("- {id: a, dimension: listening, type: penalty, points: 5}\n", 10, "needs `when`"),
    ("- {id: a, dimension: listening, type: penalty, points: 5, when: {tag: rigid}}\n"
     "- id: b\n  dimension: listening\n  type: penalty\n  points: 5\n  when:\n    regex: '(unclosed'\n", 16, "not a valid regular expression"),
    ("- id: b\n  dimension: listening\n  type: penalty\n  points: 5\n  when:\n    tagg: rigid\n", 15, "unknown key 'tagg'"),
    ("- id: b\n  dimension: listening\n  type: penalty\n  points: 5\n  when: {tag: rigid, phrase: x}\n", 14, "exactly one of"),
    ("- id: b\n  dimension: listening\n  type: penalty\n  points: 5\n  when: {at_least: 2}\n", 14, "needs an `of:`"),
    ("- {id: a, dimension: listening, type: penalty, points: 5, when: {tag: rigid}}\n"
     "- {id: a, dimension: listening, type: penalty, points: 5, when: {tag: rigid}}\n", 11, "duplicate rule id"),
    ("- {id: a, dimension: listening, type: penalty, points: 5, when: {tag: rigid}\n", 10, "starts at line 10"),
])
def test_malformed_scorecard_names_line_and_problem(tmp_path, rules, line, message):
    path = tmp_path / "scorecard.yaml"
    path.write_text(HEADER + textwrap.indent(rules, "  "), encoding="utf-8")
    with pytest.raises(ScorecardError) as err:
        load_scorecard(path)
    assert message in str(err.value)
    assert f"line {line}" in str(err.value) or f"{path}:{line}" in str(err.value)


def test_bundled_scorecard_loads(config):
    from pipeline.config import config_path

    sc = load_scorecard(config_path(config, config["scorecard"]))
    assert set(sc.dimensions) == {"listening", "expression", "empathy", "proactive"}
    assert [g.name for g in sc.grades] == ["优秀", "良好", "合格", "不合格"]
    assert sc.grade_for(90) == "优秀" and sc.grade_for(89.9) == "良好" and sc.grade_for(69.9) == "不合格"


# --- the condition language added for the shipped scorecard ---------------------

def test_followed_by_restates_max_chars_and_outcome(tmp_path, scorer):
    from pipeline.outcome import detect_outcome, load_outcome_config
    from pipeline.config import config_path

    sc = card(tmp_path, """
    - {id: reacted, dimension: listening, type: penalty, points: 5, when: {tag: vague, role: agent, followed_by: {phrase: 什么意思, role: customer}, within_turns: 1}}
    - {id: echo, dimension: listening, type: bonus, points: 5, when: {restates: {share: 0.5, min_shared: 3}, role: agent}}
    - {id: short, dimension: expression, type: penalty, points: 5, when: {tag: backchannel, role: agent, max_chars: 3}}
    - {id: pushback, dimension: empathy, type: penalty, points: 5, when: {outcome: customer_correction}}
    """)
    call = make_call(("customer", "我想把套餐换成五十八元的"), ("agent", "您是想换成五十八元的套餐"),
                     ("customer", "不是，我说的是流量包"), ("agent", "嗯"),
                     ("agent", "应该可以吧"), ("customer", "什么意思？"))
    tag_call(call, scorer.tagger)
    detect_events(call, scorer.config)
    detect_outcome(call, load_outcome_config(str(config_path(scorer.config, scorer.config["outcome"]))))
    scores = score_call(call, sc).scores
    assert [e.turn_ids for e in result(scores, "reacted").evidence] == [[4]]
    assert [e.turn_ids for e in result(scores, "echo").evidence] == [[1]]
    assert [e.turn_ids for e in result(scores, "short").evidence] == [[3]]
    assert [e.turn_ids for e in result(scores, "pushback").evidence] == [[2]]


def test_response_within_replies_skips_bare_backchannels(tmp_path, scorer):
    sc = card(tmp_path, """
    - id: respond
      dimension: empathy
      type: response
      points: 10
      trigger: {phrase: 气死我了, role: customer}
      expect: {tag: apology, role: agent}
      within_replies: 1
      replies_by: agent
      skip: {tag: backchannel, role: agent, max_chars: 4}
    """)
    later = make_call(("customer", "气死我了"), ("agent", "嗯"), ("agent", "非常抱歉"))
    assert result(run(scorer, sc, later), "respond").status == "pass"
    missed = make_call(("customer", "气死我了"), ("agent", "请报一下订单号"), ("agent", "非常抱歉"))
    assert result(run(scorer, sc, missed), "respond").status == "deduct"


def test_patterns_are_checked_at_their_line(tmp_path):
    path = tmp_path / "scorecard.yaml"
    path.write_text(HEADER.replace("rules:\n", "patterns:\n  broken: {tagg: rigid}\nrules:\n")
                    + "  - {id: a, dimension: listening, type: penalty, points: 5, when: {tag: rigid}}\n",
                    encoding="utf-8")
    with pytest.raises(ScorecardError, match="pattern 'broken', line 10: unknown key 'tagg'"):
        load_scorecard(path)


# --- the shipped scorecard on hand-written calls (not from data/scorecard_dev) ---

@pytest.fixture(scope="module")
def shipped(scorer):
    def score(*turns):
        return scorer.score(make_call(*turns))
    return score


def dim(call, name):
    return call.scores.dimensions[name].score


def test_one_behaviour_changed_never_ties(shipped):
    plain = shipped(("customer", "我的电动车充电器坏了，插上去灯不亮"), ("agent", "好的，麻烦报一下订单号"),
                    ("customer", "八八六二"), ("agent", "查到了，给您补寄一个新的充电器"))
    restated = shipped(("customer", "我的电动车充电器坏了，插上去灯不亮"),
                       ("agent", "充电器插上去灯不亮，麻烦报一下订单号"),
                       ("customer", "八八六二"), ("agent", "查到了，给您补寄一个新的充电器"))
    assert dim(restated, "listening") > dim(plain, "listening")


def test_a_short_call_is_scored_and_only_a_wrong_number_is_na(shipped):
    short = shipped(("agent", "您好"), ("customer", "我想问一下游泳馆周一开不开门"), ("agent", "周一闭馆，周二早上九点开"))
    assert short.scores.dimensions["proactive"].applicable
    wrong = shipped(("agent", "您好，燃气公司"), ("customer", "啊，不好意思，我打错了"), ("agent", "没关系，再见"))
    assert not wrong.scores.dimensions["proactive"].applicable


@pytest.mark.parametrize("insight", [
    "这个型号没货了，不过同系列的蓝色款有现货，我可以帮您换成那个",          # alternative
    "已经给您登记了，维修师傅明天上午十点前会打电话跟您约时间",             # next step and when
    "已经解绑了，以后换手机前先在设置里退出账号，就不会再被锁住",            # prevention
    "已经改好了，顺便提醒一下，您的会员下周也要到期，要不要一起续上",        # related need
])
def test_each_kind_of_proactive_service_counts(shipped, insight):
    base = [("customer", "我想问一下我那个事情现在怎么样了"), ("agent", "好的，我帮您看一下")]
    answered = shipped(*base, ("agent", "已经处理好了"))
    proactive = shipped(*base, ("agent", insight))
    generic = shipped(*base, ("agent", "已经处理好了，还有什么可以帮您？"))
    assert dim(proactive, "proactive") > dim(generic, "proactive") > dim(answered, "proactive")


def test_customer_reaction_costs_listening(shipped):
    heard = shipped(("customer", "我要取消明天下午三点的预约"), ("agent", "好的，明天下午三点的预约已经取消了"),
                    ("customer", "好的谢谢"))
    repeated = shipped(("customer", "我要取消明天下午三点的预约"), ("agent", "好的，给您改到后天下午三点"),
                       ("customer", "我刚才说了是取消，不是改期"), ("agent", "好的，已经取消了"))
    said_again = shipped(("customer", "我要取消明天下午三点的预约"), ("agent", "请问您是哪个门店的会员"),
                         ("customer", "我要取消明天下午三点的那个预约"), ("agent", "好的，已经取消了"))
    assert dim(repeated, "listening") < 80 and dim(said_again, "listening") < dim(heard, "listening")
    assert repeated.outcome.customer_repeats == 1 and said_again.outcome.customer_repeats == 1


def test_a_question_asked_again_inside_a_longer_turn_is_a_repeat(shipped):
    """The same question within a longer turn counts as asked again, wherever a
    recording cut the turns: the customer's first turn alone or with more after it."""
    question = "那大概要等多久才能处理好？"
    later = [("agent", "我已经帮您提交了工单"), ("customer", question + "我订的机票航班也取消了，到现在没人通知我。")]
    alone = shipped(("customer", question), ("agent", "嗯"), ("customer", "我的信用卡被冻结了，现在急着用钱。"), *later)
    within = shipped(("customer", question + "我的信用卡被冻结了，现在急着用钱。"), *later)
    new_question = shipped(("customer", question + "我的信用卡被冻结了，现在急着用钱。"), later[0],
                           ("customer", "那冻结期间的利息怎么算？我订的机票航班也取消了，到现在没人通知我。"))
    assert alone.outcome.customer_repeats == within.outcome.customer_repeats == 1
    assert new_question.outcome.customer_repeats == 0


def test_interruption_the_customer_reacts_to_weighs_more(shipped):
    turns = [("customer", "我家的空调外机一直在滴水，滴到楼下邻居的窗台上了", 0.0, 6.0),
             ("agent", "那您先把空调关掉吧，我们安排师傅", 4.5, 8.0)]
    ignored = shipped(*turns, ("customer", "好的", 8.5, 9.0))
    reacted = shipped(*turns, ("customer", "你让我说完，邻居已经找上门了", 8.5, 11.0))
    assert ignored.scores.dimensions["listening"].score < 80
    assert dim(reacted, "listening") < dim(ignored, "listening")
    # The reaction is charged once (interruption_reacted), not again as pushback.
    charged = {r.rule_id: r.status for r in reacted.scores.dimensions["listening"].results}
    assert charged["listening.interruption_reacted"] == "deduct"
    assert charged["listening.customer_pushback"] != "deduct"
    assert "customer_cut_off" in {s.kind for s in reacted.outcome.signals}


def test_empathy_one_exchange_later_counts(shipped):
    emotion = ("customer", "我都打了三次电话了，到现在还没人上门，太过分了！")
    late = shipped(emotion, ("agent", "嗯"), ("agent", "请报一下您的手机号"), ("customer", "一三九零零"),
                   ("agent", "让您跑了这么多趟，实在抱歉，我马上帮您加急派单"))
    never = shipped(emotion, ("agent", "嗯"), ("agent", "请报一下您的手机号"), ("customer", "一三九零零"),
                    ("agent", "我马上帮您加急派单"))
    assert result(late.scores, "empathy.respond_to_emotion").status == "pass"
    assert dim(late, "empathy") > dim(never, "empathy")


def test_a_calm_report_does_not_demand_empathy(shipped):
    calm = shipped(("customer", "你好，我家门口的路灯坏了，麻烦你们派人看一下"),
                   ("agent", "好的，请问具体在哪条路"), ("customer", "文化路和人民路路口"),
                   ("agent", "已经派单了，两天内修好"))
    assert not calm.scores.dimensions["empathy"].applicable


def test_soothing_with_help_is_not_a_brush_off(shipped):
    emotion = ("customer", "卡被吞了，我急死了，明天还要用钱！")
    helped = shipped(emotion, ("agent", "您别着急，我马上帮您联系网点把卡取出来"))
    promised = shipped(emotion, ("agent", "您先别着急，网点今天下午三点前给您回电话安排取卡"))
    brushed = shipped(emotion, ("agent", "您别着急"))
    assert dim(helped, "empathy") > dim(brushed, "empathy")
    # A committed next step with a time is help too: no perfunctory deduction.
    status = {r.rule_id: r.status for r in promised.scores.dimensions["empathy"].results}
    assert status["empathy.perfunctory"] != "deduct" and dim(promised, "empathy") > dim(brushed, "empathy")


def test_outcome_signals_and_json_round_trip(shipped):
    from pipeline.model import Call

    solved = shipped(("customer", "我的快递三天了还没到，我很生气！"), ("agent", "非常抱歉，我马上帮您催件，今天下午送到"),
                     ("customer", "好的，谢谢"))
    o = solved.outcome
    assert o.resolution == "resolved" and o.start_sentiment == "negative"
    angry = shipped(("customer", "我想退货"), ("agent", "这个不能退"), ("customer", "那我去12315投诉你们"))
    assert angry.outcome.resolution == "complaint"
    again = Call.from_json(solved.to_json())
    assert again == solved and again.outcome.signals == o.signals
    old = solved.model_dump(mode="json")
    del old["outcome"]
    assert Call.model_validate(old).outcome is None  # calls stored before outcome signals still load


def test_a_mono_takeover_costs_listening_like_a_stereo_interruption(scorer):
    """Mono: the agent starting with no pause while the customer was mid-story is the
    same 抢话 deduction; the same words after a pause are not."""
    from pipeline.model import AudioInfo

    def mono_call(agent_start):
        call = make_call(("customer", "我上个月的话费多扣了五十块钱，我想问一下", 0.0, 4.0),
                         ("agent", "好的您稍等我帮您查一下这个月的账单", agent_start, agent_start + 3.5),
                         ("customer", "好", agent_start + 4.0, agent_start + 4.5),
                         ("agent", "查到了，多扣的五十元今天退回", agent_start + 5.0, agent_start + 7.5))
        call.audio = AudioInfo(path="call.wav", channels=1, overlaps_measurable=False)
        return scorer.score(call)

    took_over, waited = mono_call(4.0), mono_call(4.6)
    status = {r.rule_id: r.status for r in took_over.scores.dimensions["listening"].results}
    assert status["listening.interruption"] == "deduct"
    assert not [e for e in waited.events if e.kind == "interruption"]
    assert took_over.scores.dimensions["listening"].score < waited.scores.dimensions["listening"].score


def test_restating_the_need_beats_checking_a_detail_and_a_corrected_check_earns_nothing(shipped):
    need = ("customer", "我想把每个月自动扣的电费，从我这张卡改到我爱人的卡上扣")
    restated = shipped(need, ("agent", "您是想把电费代扣从这张卡改到您爱人的卡上，对吗？"), ("customer", "对"),
                       ("agent", "好的，已经帮您改好了"))
    detail = shipped(need, ("agent", "我跟您确认一下，您的手机号是一三九开头的吗？"), ("customer", "对"),
                     ("agent", "好的，已经帮您改好了"))
    corrected = shipped(need, ("agent", "您是想把电费代扣取消掉，对吗？"), ("customer", "我没说要取消，是换一张卡扣"),
                        ("agent", "好的，已经帮您改好了"))
    assert dim(restated, "listening") > dim(detail, "listening") > dim(corrected, "listening")
    assert result(corrected.scores, "listening.confirmation").status == "pass"  # no bonus for a wrong check


def test_a_short_remark_between_two_parts_of_the_story_counts_as_listening(shipped):
    story = ("customer", "我早上停车的时候，后面一辆车直接撞上来了……")
    rest = ("customer", "对方说他全责，我们已经拍了照片")
    reply = ("agent", "好的，我先帮您登记报案")
    remarked = shipped(story, ("agent", "哦，被后车追尾了。"), rest, reply)
    silent = shipped(story, rest, reply)
    assert dim(remarked, "listening") > dim(silent, "listening")


def test_a_rule_in_the_customers_favour_or_with_a_way_forward_is_not_rigid(scorer):
    def expression(agent_text):
        call = scorer.score(make_call(("agent", "您好"), ("customer", "航班取消了，改签要钱吗？"), ("agent", agent_text)))
        return result(call.scores, "expression.rigid")
    # the lexicon tags 按规定/规定 rigid; what follows decides
    assert expression("按规定不能改签，这是公司规定").status == "deduct"
    assert expression("按规定航班取消改签是免费的，不收任何费用").status == "pass"
    assert expression("这是公司规定，您可以先办退票再买明天的票").status == "pass"


def test_stock_phrases_and_an_answer_the_customer_calls_useless_cost_expression(shipped):
    issue = ("customer", "宽带又断了，这个月第三次了")
    concrete = shipped(issue, ("agent", "我马上帮您派单，师傅今天下午三点前上门"), ("customer", "好"))
    stock = shipped(issue, ("agent", "给您带来不便敬请谅解，我们会不断改进完善"), ("customer", "好"))
    rejected = shipped(issue, ("agent", "给您带来不便敬请谅解，我们会不断改进完善"),
                       ("customer", "总是抱歉，说了等于没说"))
    assert dim(concrete, "expression") > dim(stock, "expression") > dim(rejected, "expression")
    assert result(rejected.scores, "expression.answer_rejected").status == "deduct"


def test_asking_which_of_the_agents_own_answers_holds_is_confusion(shipped):
    question = ("customer", "这个药一天吃几次？")
    clear = shipped(question, ("agent", "一天三次，每次一粒，饭后吃"), ("customer", "好的"))
    muddled = shipped(question, ("agent", "一天三次，每次两粒，一粒也行，饭后吃"), ("customer", "是一粒还是两粒？"))
    assert [s.kind for s in muddled.outcome.signals].count("customer_confused") == 1
    assert dim(muddled, "expression") < dim(clear, "expression")
    choice = shipped(("customer", "我想订明天的票"), ("agent", "有上午八点和下午两点两班"), ("customer", "饭前还是饭后？"))
    assert "customer_confused" not in [s.kind for s in choice.outcome.signals]  # not about what the agent said


def test_a_customer_who_says_they_will_leave_is_unresolved(shipped):
    call = shipped(("customer", "你们的信号太差了"), ("agent", "给您带来不便请见谅"),
                   ("customer", "谢谢回复，我不打算再用你们的号了，准备注销"))
    assert call.outcome.resolution == "unresolved"


def test_an_apology_for_something_else_does_not_answer_a_feeling_shown_after_it(shipped):
    turns = [("customer", "外卖送到十九号楼去了，我在九号楼"), ("agent", "不好意思，我马上联系骑手送到九号楼"),
             ("customer", "我饿得不行了，真烦人！")]
    ignored = shipped(*turns, ("agent", "请您耐心等待"), ("customer", "好吧"))
    named = shipped(*turns, ("agent", "饿着肚子等确实着急，我让骑手十分钟内送到"), ("customer", "好吧"))
    assert result(ignored.scores, "empathy.respond_to_emotion").status == "deduct"
    assert result(named.scores, "empathy.respond_to_emotion").status == "pass"
