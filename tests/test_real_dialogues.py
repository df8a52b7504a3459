"""Robustness on real JD.com customer-service chats (JDDC 2019, research data in
../shared/real; never shipped). Chat text has no times, placeholders such as
[订单x], order cards and typos: every session must score, and what the tagger
finds must be plausible."""

import json
from collections import Counter

import pytest

from pipeline.model import Call, Turn
from pipeline.normalize import normalize_text
from tests.conftest import REAL_DATA

JDDC = REAL_DATA / "dialogues" / "jddc2019_sample.jsonl"
pytestmark = pytest.mark.skipif(not JDDC.exists(), reason="real data folder not present")


@pytest.fixture(scope="module")
def jddc_calls(scorer):
    calls = []
    for line in JDDC.read_text(encoding="utf-8").splitlines():
        session = json.loads(line)
        turns = [Turn(id=i, role=t["role"], text=normalize_text(t["text"]))
                 for i, t in enumerate(session["turns"])]
        calls.append(scorer.score(Call(id=session["id"], turns=turns)))
    return calls


def test_every_session_scores(jddc_calls):
    assert len(jddc_calls) == 300
    assert all(c.scores is not None and 0 <= c.scores.total <= 100 for c in jddc_calls)


def test_tag_rates_are_plausible_for_real_agents(jddc_calls):
    agent_turns = sum(1 for c in jddc_calls for t in c.turns if t.role == "agent")
    turns_with = Counter()
    for c in jddc_calls:
        for label in {(t.turn_id, t.label) for t in c.tags}:
            turns_with[label[1]] += 1
    # JD agents are polite and close properly in most sessions...
    assert turns_with["polite"] / agent_turns > 0.15
    assert sum(1 for c in jddc_calls if any(t.label == "proactive" for t in c.tags)) / 300 > 0.3
    # ...and brush-offs are rare: a lexicon firing on a large share of turns is broken.
    for label in ("rigid", "impatient", "perfunctory"):
        assert turns_with[label] / agent_turns < 0.03, label


def test_grades_spread_over_the_bands(jddc_calls):
    grades = Counter(c.scores.grade for c in jddc_calls)
    assert len(grades) >= 3
    assert grades["优秀"] < 300
