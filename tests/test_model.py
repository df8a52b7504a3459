import json

from pipeline.model import AudioInfo, Call, Word
from tests.conftest import make_call


def test_scored_call_round_trips_through_json_without_loss(scorer):
    call = make_call(("agent", "您好，很高兴为您服务", 0.0, 2.0),
                     ("customer", "你们到底怎么回事！！我的宽带又断了", 2.2, 6.0),
                     ("agent", "您别生气，这是公司规定", 5.0, 8.0))
    call.turns[0].words = [Word(text="您好", start=0.0, end=0.5, probability=0.93)]
    call.audio = AudioInfo(path="x.wav", sample_rate=8000, channels=2, agent_channel=0,
                           role_confidence=0.9, sha256="ab")
    scorer.score(call)
    assert call.tags and call.events and call.scores
    text = call.to_json()
    again = Call.from_json(text)
    assert again == call
    assert json.loads(again.to_json()) == json.loads(text)


def test_unknown_fields_are_rejected():
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError):
        Call.model_validate({"id": "x", "turns": [], "scroes": {}})
