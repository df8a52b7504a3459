"""The review app over HTTP: pages, verdicts, audio with range requests, and its
safety: path traversal, files outside the audio roots, foreign Host headers and
cross-origin posts refused; localhost only unless told otherwise; a review and
a scoring run writing the same store at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import REPO, SAMPLE_CALLS, start_review_server
from pipeline.config import load_config
from pipeline.model import AudioInfo
from pipeline.review.verdicts import flags_of
from pipeline.review.store import Store
from pipeline.review.webapp import create_app, url_id

CALL = "telecom_bad_interrupt_01"
BASE = "http://127.0.0.1:8765"


@pytest.fixture
def app_client(scored_store, tmp_path):
    store_path, audio = scored_store
    store = Store(store_path)
    client = TestClient(create_app(store, load_config(), [audio], tmp_path / "exports"),
                        base_url=BASE, headers={"Origin": BASE})
    return client, store, audio


def test_pages_filters_and_verdicts(app_client):
    client, store, _ = app_client
    page = client.get("/", params={"flag": "interruption"}).text
    assert CALL in page and "bank_good_01" not in page
    assert client.get("/", params={"grade": "优秀"}).text.count('class="call-link"') == \
        len(store.list_calls(grade="优秀"))
    # The customer outcome is a column of the list and a filter.
    unresolved = client.get("/", params={"outcome": "unresolved"}).text
    assert unresolved.count('class="call-link"') == len(store.list_calls(outcome="unresolved")) > 0
    assert unresolved.count('<td class="outcome">unresolved') == unresolved.count('class="call-link"')
    call_page = client.get(f"/calls/{CALL}").text
    assert "machine-only" in call_page and f"/audio/{CALL}" in call_page
    outcome = store.get_call(CALL).outcome
    assert 'id="outcome"' in call_page and f'res-{outcome.resolution}' in call_page  # the customer outcome
    flag = next(f for f in flags_of(store.get_call(CALL), []) if f.label == "interruption")
    assert f'data-key="{flag.key}"' in call_page

    # Every interruption rejected: the reviewed listening score rises (one alone may stay under a cap).
    for other in flags_of(store.get_call(CALL), []):
        if other.label == "interruption":
            response = client.post(f"/verdicts/{CALL}", json=dict(
                flag_key=other.key, label=other.label, turn_id=other.turn_id, verdict="reject",
                reason="wrong_speaker", note="客户先停了"))
            assert response.status_code == 200
    assert response.json()["human"]["dimensions"]["listening"] > store.get_call(CALL).scores.dimensions["listening"].score
    again = client.get(f"/calls/{CALL}").text
    assert "human-reviewed" in again and "客户先停了" in again
    assert client.get("/rules").status_code == 200 and "listening.interruption" in client.get("/rules").text
    assert client.get("/calibration").status_code == 200

    assert client.get("/calls/no_such_call").status_code == 404


def test_verdicts_that_do_not_match_their_flag_are_refused(app_client):
    """Each is a 422 with a message naming the problem, and nothing is stored (a
    mismatched label or turn would skew rule precision)."""
    client, store, _ = app_client
    call = store.get_call(CALL)
    flag = next(f for f in flags_of(call, []) if f.label == "interruption")
    other_turn = next(t.id for t in call.turns if t.id != flag.turn_id)
    good = dict(flag_key=flag.key, label=flag.label, turn_id=flag.turn_id, verdict="confirm")
    max_note = load_config()["review"]["max_note_chars"]
    for change, message in [
        (dict(flag_key="tag:rigid:99:0-4", label="rigid", turn_id=99), "turn 99"),
        (dict(flag_key="tag:rigid:1:0-4", label="rigid", turn_id=1), "no flag"),
        (dict(label="rigid"), "not 'rigid'"),
        (dict(turn_id=other_turn), f"on turn {other_turn}"),
        (dict(turn_id=2**70), "less than or equal"),
        (dict(turn_id=-1), "greater than or equal"),
        (dict(verdict="reject", reason="bored"), "reason must be"),
        (dict(verdict="maybe"), "verdict must be"),
        (dict(note="很长" * max_note), f"longer than {max_note}"),
        (dict(reviewer="x" * 1000), "at most 100"),
        (dict(flag_key="added:nonsense:1", label="nonsense", turn_id=1, verdict="add"), "known label"),
        (dict(flag_key="added:rigid:2", label="rigid", turn_id=1, verdict="add"), "added:<label>:<turn>"),
    ]:
        response = client.post(f"/verdicts/{CALL}", json={**good, **change})
        assert response.status_code == 422, change
        assert message in str(response.json()["detail"]), (change, response.json())
    assert store.verdicts(CALL) == []
    assert client.post(f"/verdicts/{CALL}", json=good).status_code == 200


def test_pages_load_nothing_from_the_internet(app_client):
    import re

    client, _, _ = app_client
    for url in ["/", f"/calls/{CALL}", "/rules", "/calibration", "/static/review.js", "/static/review.css"]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?https?:""", response.text), url


def test_audio_is_served_with_range_requests(app_client):
    client, store, _ = app_client
    path = Path(store.get_call(CALL).audio.path)
    whole = client.get(f"/audio/{CALL}")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    assert whole.content == path.read_bytes()
    part = client.get(f"/audio/{CALL}", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{path.stat().st_size}"
    assert part.content == path.read_bytes()[1000:2000]
    tail = client.get(f"/audio/{CALL}", headers={"Range": "bytes=-44"})
    assert tail.status_code == 206 and tail.content == path.read_bytes()[-44:]


def test_path_traversal_and_files_outside_the_audio_roots_are_refused(app_client, tmp_path):
    client, store, audio = app_client
    for url in ["/calls/..%2F..%2F..%2Fetc%2Fpasswd/audio", "/calls/../../etc/passwd/audio",
                "/static/..%2F..%2Fstore.py", "/static/../store.py", "/calls/%2e%2e/audio"]:
        response = client.get(url)
        assert response.status_code in (400, 404), url
        assert b"root:" not in response.content and b"sqlalchemy" not in response.content
    outside = tmp_path / "secret.wav"
    outside.write_bytes((audio / f"{CALL}.wav").read_bytes())
    link = audio / "link.wav"
    link.symlink_to(outside)
    for target in ["/etc/passwd", str(audio / ".." / "secret.wav"), str(link)]:
        call = store.get_call(CALL)
        call.audio = AudioInfo(path=target)
        store.save_call(call, "sha", "cfg")
        assert client.get(f"/audio/{CALL}").status_code == 403, target


def test_foreign_host_headers_and_cross_origin_posts_are_refused(app_client, tmp_path):
    client, store, audio = app_client
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 400
    flag = next(f for f in flags_of(store.get_call(CALL), []) if f.label == "interruption")
    body = dict(flag_key=flag.key, label=flag.label, turn_id=flag.turn_id, verdict="confirm")
    assert client.post(f"/verdicts/{CALL}", json=body,
                       headers={"Origin": "http://attacker.example"}).status_code == 403
    assert client.post(f"/verdicts/{CALL}", json=body,
                       headers={"Origin": "", "Referer": "http://attacker.example/page"}).status_code == 403
    # No Origin and no Referer at all (a form or script from elsewhere that strips them): refused too.
    bare = TestClient(client.app, base_url=BASE)
    refused = bare.post(f"/verdicts/{CALL}", json=body)
    assert refused.status_code == 403 and "Origin or Referer" in refused.json()["detail"]
    assert bare.post("/export/corrections").status_code == 403
    assert store.verdicts(CALL) == []
    assert bare.post(f"/verdicts/{CALL}", json=body, headers={"Referer": f"{BASE}/calls/{CALL}"}).status_code == 200
    assert client.post(f"/verdicts/{CALL}", json=body).status_code == 200
    assert [v.verdict for v in store.verdicts(CALL)] == ["confirm", "confirm"]


def test_a_token_guards_every_page_and_is_kept_in_a_cookie(odd_store, tmp_path):
    store = odd_store
    app = create_app(store, load_config(), [tmp_path], tmp_path / "exports", token="s3cret-令牌")
    client = TestClient(app, base_url=BASE, headers={"Origin": BASE}, follow_redirects=False)
    for url in ["/", "/calls/AB", "/audio/AB", "/rules", "/static/review.js", "/?token=wrong"]:
        assert client.get(url).status_code == 401, url
    assert client.post("/verdicts/AB", json={}).status_code == 401
    first = client.get("/", params={"flag": "interruption", "token": "s3cret-令牌"})
    assert first.status_code == 303 and first.headers["location"] == "/?flag=interruption"
    assert "httponly" in first.headers["set-cookie"].lower() and "samesite=strict" in first.headers["set-cookie"].lower()
    # The cookie now opens every page; a script may send the token as a bearer header instead.
    assert client.get("/?flag=interruption").status_code == 200 and "%41%42" in client.get("/").text
    assert client.get("/audio/AB").status_code == 404  # past the token: the call has no audio
    assert "s3cret" not in first.headers["set-cookie"]  # a digest, not the token
    scripted = TestClient(app, base_url=BASE)
    assert scripted.get("/rules", headers={"Authorization": "Bearer s3cret-令牌".encode()}).status_code == 200


def test_audio_is_served_only_from_the_folders_the_run_read(tmp_path, capsys):
    """`callqa review` without --audio-root serves audio from the folders the scored
    inputs came from; a callqa JSON pointing its audio elsewhere gets 403."""
    import shutil

    from pipeline.cli import main
    from pipeline.model import Call, Turn
    from pipeline.review.store import Store
    from tests.conftest import REPO

    inputs, elsewhere = tmp_path / "week", tmp_path / "elsewhere"
    inputs.mkdir(), elsewhere.mkdir()
    recording = REPO / "tests" / "data" / "audio" / "call_b_stereo_8k_ulaw.wav"
    shutil.copy(recording, inputs / "inside.wav")
    shutil.copy(recording, elsewhere / "outside.wav")
    turns = [Turn(id=0, role="agent", text="您好，请问有什么可以帮您", start=0.0, end=2.0),
             Turn(id=1, role="customer", text="我的宽带断了", start=2.5, end=4.0)]
    for name, audio in [("inside", inputs / "inside.wav"), ("outside", elsewhere / "outside.wav")]:
        # callqa's own JSON (it has `tags`), which keeps its audio path.
        call = Call(id=name, turns=turns, audio=AudioInfo(path=str(audio)))
        assert '"tags"' in call.to_json()
        (inputs / f"{name}.json").write_text(call.to_json(), encoding="utf-8")
    assert main(["score", str(inputs), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    store = Store(tmp_path / "out" / "callqa.db")
    assert store.input_dirs() == [inputs.resolve()]
    client = TestClient(create_app(store, load_config(), store.input_dirs(), tmp_path / "exports"), base_url=BASE)
    assert client.get("/audio/inside").status_code == 200
    refused = client.get("/audio/outside")
    assert refused.status_code == 403 and "outside the audio roots" in refused.json()["detail"]


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of sockets listening on `port`, from /proc/net/tcp."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


@pytest.mark.slow
def test_listens_on_localhost_only_unless_told(scored_store):
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("needs Linux /proc/net/tcp")
    store_path, audio = scored_store
    process, url = start_review_server(store_path, audio)
    try:
        port = int(url.rsplit(":", 1)[1])
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    refused = subprocess.run([sys.executable, "-m", "pipeline.cli", "review", "--store", str(store_path),
                              "--host", "0.0.0.0"], cwd=REPO, capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if k != "CALLQA_REVIEW_TOKEN"})
    assert refused.returncode == 2 and "--token" in refused.stderr  # no open door without a token
    process, url = start_review_server(store_path, audio, "--host", "0.0.0.0", "--token", "t0ken")
    try:
        port = int(url.rsplit(":", 1)[1])
        assert _listening_addresses(port) == {"00000000"}  # every address, as asked
        assert "warning: listening on 0.0.0.0" in _read_available(process)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def _read_available(process) -> str:
    os.set_blocking(process.stdout.fileno(), False)
    return process.stdout.read() or ""


@pytest.mark.slow
def test_review_and_scoring_at_the_same_time(scored_store, tmp_path):
    """Reviewers post verdicts while `callqa score` rewrites every call in the same store."""
    import json

    store_path, audio = scored_store
    process, url = start_review_server(store_path, audio)
    store = Store(store_path)
    flags = [f for f in flags_of(store.get_call(CALL), []) if f.problem]
    errors: list[str] = []
    posted = 0

    def review():
        nonlocal posted
        i = 0
        while scoring.poll() is None or i < 10:
            flag = flags[i % len(flags)]
            body = json.dumps(dict(flag_key=flag.key, label=flag.label, turn_id=flag.turn_id,
                                   verdict="confirm" if i % 2 else "reject", reason=None if i % 2 else "wrong_tag"))
            request = urllib.request.Request(f"{url}/verdicts/{CALL}", data=body.encode(),
                                             headers={"Content-Type": "application/json", "Origin": url})
            i += 1
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    assert response.status == 200
                    posted += 1
                urllib.request.urlopen(f"{url}/?flag=interruption", timeout=60).read()
            except Exception as err:  # collected and asserted below
                errors.append(repr(err))

    try:
        scoring = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "score", str(SAMPLE_CALLS), "--out",
                                    str(tmp_path / "run"), "--store", str(store_path), "--quiet"],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        reviewer = threading.Thread(target=review)
        reviewer.start()
        _, scoring_errors = scoring.communicate(timeout=300)
        reviewer.join()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert errors == []
    assert scoring.returncode == 0, scoring_errors[-500:]
    assert len(store.verdicts(CALL)) == posted >= 10
    assert len(store.call_ids()) == 19
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        turns = conn.execute(sa.text("SELECT count(*) FROM turns WHERE call_id = :c"), {"c": CALL}).scalar()
    assert turns == len(store.get_call(CALL).turns)


ODD_IDS = ["team/1", "team_1", "a#1", "q?x=1&y=2", "100%", "with space", "%41%42", "AB", "%2F..%2F", "日本/东京 #3"]


@pytest.fixture
def odd_store(tmp_path, sample_calls):
    """The interrupted sample call stored under ids with reserved URL characters,
    beside look-alikes ("%41%42" and "AB", "team/1" and "team_1")."""
    call = next(c for c, _ in sample_calls if c.id == CALL)
    store = Store(tmp_path / "odd.db")
    for call_id in ODD_IDS:
        store.save_call(call.model_copy(update={"id": call_id}), "sha", "cfg")
    return store


def test_odd_call_ids_are_reachable_and_verdicts_land_on_the_right_call(odd_store, tmp_path):
    import html
    import re

    client = TestClient(create_app(odd_store, load_config(), [tmp_path], tmp_path / "exports"),
                        base_url=BASE, headers={"Origin": BASE})
    links = dict((html.unescape(text), html.unescape(href)) for href, text in
                 re.findall(r'<a class="call-link" href="([^"]+)">([^<]+)</a>', client.get("/").text))
    assert set(links) == set(ODD_IDS)
    for call_id, href in links.items():
        page = client.get(href)
        assert page.status_code == 200, href
        assert f"<h1>通话 {html.escape(call_id)}</h1>" in page.text, href
        # What review.js posts to: /verdicts/ + encodeURIComponent(id).
        flag = next(f for f in flags_of(odd_store.get_call(call_id), []) if f.label == "interruption")
        posted = client.post(f"/verdicts/{url_id(call_id)}", json=dict(
            flag_key=flag.key, label=flag.label, turn_id=flag.turn_id, verdict="confirm", note=call_id))
        assert posted.status_code == 200, call_id
    for call_id in ODD_IDS:  # each verdict on its own call, none on a look-alike
        assert [v.note for v in odd_store.verdicts(call_id)] == [call_id]
    listed = client.get("/").text  # the stored review results show on the list
    assert listed.count('<td class="num">1</td>') >= len(ODD_IDS)
