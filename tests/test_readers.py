import json

import pytest

from pipeline.readers import ReadError, RoleMap, read_calls


@pytest.fixture(scope="module")
def roles(config):
    return RoleMap(config["roles"])


def write(tmp_path, name, content, encoding="utf-8"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding=encoding)
    return path


def test_json_transcript_with_times_and_metadata(tmp_path, roles):
    path = write(tmp_path, "c.json", json.dumps({
        "id": "c1", "agent_id": "A001", "team": "一组", "turns": [
            {"role": "坐席", "text": "您好", "start": 0, "end": 1.5},
            {"speaker": "customer", "text": "你好", "start": 1.6, "end": 2.0}]}, ensure_ascii=False))
    [call] = read_calls(path, roles)
    assert call.id == "c1" and call.agent_id == "A001" and call.team == "一组"
    assert [t.role for t in call.turns] == ["agent", "customer"]
    assert call.turns[1].start == 1.6 and call.has_times


@pytest.mark.parametrize("text", [
    "坐席：您好，请问有什么可以帮您？\n客户：我的快递没到\n",
    "坐席:您好,请问有什么可以帮您?\n客户:我的快递没到\n",
    "A: 您好，请问有什么可以帮您？\nB: 我的快递没到\n",
    "agent: 您好，请问有什么可以帮您？\nCustomer: 我的快递没到\n",
])
def test_plain_text_dialogue_in_every_labelling(tmp_path, roles, text):
    [call] = read_calls(write(tmp_path, "d.txt", text), roles)
    assert [t.role for t in call.turns] == ["agent", "customer"]
    assert call.turns[0].text == "您好，请问有什么可以帮您？"
    assert not call.has_times


def test_unlabelled_line_continues_the_turn_above(tmp_path, roles):
    [call] = read_calls(write(tmp_path, "d.txt", "坐席：您好，\n请问有什么可以帮您？\n\n客户：查话费\n"), roles)
    assert len(call.turns) == 2 and call.turns[0].text == "您好，请问有什么可以帮您？"


def test_traditional_characters_and_missing_punctuation_are_normalised(tmp_path, roles):
    [call] = read_calls(write(tmp_path, "d.txt", "客服：這是公司規定 沒辦法\n客戶：我要投訴\n"), roles)
    assert call.turns[0].text == "这是公司规定，没办法"
    assert call.turns[1].text == "我要投诉"


def test_csv_with_several_calls_and_chinese_role_names(tmp_path, roles):
    path = write(tmp_path, "x.csv", "call_id,turn,role,text,start,end\n"
                 "a,0,坐席,您好,0,1\na,1,客户,查快递,1.2,2\nb,0,坐席,您好,0,1\n")
    calls = read_calls(path, roles)
    assert [c.id for c in calls] == ["a", "b"]
    assert [t.role for t in calls[0].turns] == ["agent", "customer"]
    assert calls[0].turns[1].end == 2.0


def test_gb18030_export_is_read(tmp_path, roles):
    path = write(tmp_path, "g.txt", "坐席：您好\n客户：查话费\n", encoding="gb18030")
    [call] = read_calls(path, roles)
    assert call.turns[1].text == "查话费"


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", b"", "empty"),
    ("blank.json", b"  \n", "empty"),
    ("bin.txt", bytes(range(256)) * 8, "not UTF-8"),
    ("bad.json", '{"turns": [{"role": "agent", "text": "x"}'.encode(), "malformed JSON at line 1"),
    ("noturns.json", b'{"id": "x"}', "list of `turns`"),
    ("who.txt", "主持人：大家好\n".encode(), "unknown speaker label '主持人'"),
    ("who.csv", "role,text\n经理,你好\n".encode(), "x.csv:2" if False else "unknown speaker label '经理'"),
    ("cols.csv", "a,b\n1,2\n".encode(), "needs a role"),
    ("time.json", json.dumps({"turns": [{"role": "agent", "text": "x", "start": 5, "end": 2}]}).encode(), "ends (2.0) before it starts"),
    ("x.docx", b"PK..", "unsupported file type"),
])
def test_bad_input_gets_a_clear_error_naming_the_file(tmp_path, roles, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(ReadError) as err:
        read_calls(path, roles)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_unknown_label_error_names_the_line(tmp_path, roles):
    path = write(tmp_path, "d.txt", "坐席：您好\n客户：你好\n主持人：插一句\n")
    with pytest.raises(ReadError, match=r"d.txt:3"):
        read_calls(path, roles)
