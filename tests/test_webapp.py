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
from pipeline.review.webapp import create_app

CALL = "telecom_bad_interrupt_01"


@pytest.fixture
def app_client(scored_store, tmp_path):
    store_path, audio = scored_store
    store = Store(store_path)
    client = TestClient(create_app(store, load_config(), [audio], tmp_path / "exports"),
                        base_url="http://127.0.0.1:8765")
    return client, store, audio


def test_pages_filters_and_verdicts(app_client):
    client, store, _ = app_client
    page = client.get("/", params={"flag": "interruption"}).text
    assert CALL in page and "bank_good_01" not in page
    assert client.get("/", params={"grade": "优秀"}).text.count('class="call-link"') == \
        len(store.list_calls(grade="优秀"))
    call_page = client.get(f"/calls/{CALL}").text
    assert "machine-only" in call_page and f"/calls/{CALL}/audio" in call_page
    flag = next(f for f in flags_of(store.get_call(CALL), []) if f.label == "interruption")
    assert f'data-key="{flag.key}"' in call_page

    response = client.post(f"/calls/{CALL}/verdicts", json=dict(
        flag_key=flag.key, label=flag.label, turn_id=flag.turn_id, verdict="reject", reason="wrong_speaker",
        note="客户先停了"))
    assert response.status_code == 200
    assert response.json()["human"]["dimensions"]["listening"] > store.get_call(CALL).scores.dimensions["listening"].score
    again = client.get(f"/calls/{CALL}").text
    assert "human-reviewed" in again and "客户先停了" in again
    assert client.get("/rules").status_code == 200 and "listening.interruption" in client.get("/rules").text
    assert client.get("/calibration").status_code == 200

    # Verdicts on flags the call does not have, or unknown reasons, are refused.
    bad = dict(flag_key="tag:rigid:99:0-4", label="rigid", turn_id=99, verdict="reject")
    assert client.post(f"/calls/{CALL}/verdicts", json=bad).status_code == 400
    bad = dict(flag_key=flag.key, label=flag.label, turn_id=flag.turn_id, verdict="reject", reason="bored")
    assert client.post(f"/calls/{CALL}/verdicts", json=bad).status_code == 400
    bad = dict(flag_key="added:nonsense:1", label="nonsense", turn_id=1, verdict="add")
    assert client.post(f"/calls/{CALL}/verdicts", json=bad).status_code == 400
    assert client.get("/calls/no_such_call").status_code == 404


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
    whole = client.get(f"/calls/{CALL}/audio")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    assert whole.content == path.read_bytes()
    part = client.get(f"/calls/{CALL}/audio", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{path.stat().st_size}"
    assert part.content == path.read_bytes()[1000:2000]
    tail = client.get(f"/calls/{CALL}/audio", headers={"Range": "bytes=-44"})
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
        assert client.get(f"/calls/{CALL}/audio").status_code == 403, target


def test_foreign_host_headers_and_cross_origin_posts_are_refused(app_client):
    client, store, _ = app_client
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 400
    flag = next(f for f in flags_of(store.get_call(CALL), []) if f.label == "interruption")
    body = dict(flag_key=flag.key, label=flag.label, turn_id=flag.turn_id, verdict="confirm")
    assert client.post(f"/calls/{CALL}/verdicts", json=body,
                       headers={"Origin": "http://attacker.example"}).status_code == 403
    assert client.post(f"/calls/{CALL}/verdicts", json=body,
                       headers={"Origin": "http://127.0.0.1:8765"}).status_code == 200
    assert store.verdicts(CALL)[-1].verdict == "confirm" and len(store.verdicts(CALL)) == 1


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
    process, url = start_review_server(store_path, audio, "--host", "0.0.0.0")
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
            request = urllib.request.Request(f"{url}/calls/{CALL}/verdicts", data=body.encode(),
                                             headers={"Content-Type": "application/json"})
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
