"""End to end in real headless Chromium (Debian `chromium`, driven by Playwright):
open the app on a scored sample batch, filter to a flagged call, click a flag and
check the player jumped there, reject a flag, reload and see the verdict kept,
export corrections and load them with `datasets`.

Set CALLQA_UPDATE_SCREENSHOT=1 to refresh docs/review-call.png from this run.
"""

from __future__ import annotations

import os
import shutil
import signal

import pytest

from tests.conftest import REPO, start_review_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]
CALL = "telecom_bad_interrupt_01"
CONTEXT = 3.0  # review.context_seconds in configs/pipeline.yaml


@pytest.fixture
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium not installed (apt-get install chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.mark.slow
def test_review_session_end_to_end(browser, scored_store, tmp_path):
    from datasets import load_from_disk

    store_path, audio = scored_store
    server, url = start_review_server(store_path, audio)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))

        # Filter the batch to calls with an interruption and open ours.
        page.goto(url + "/")
        page.select_option("#filter-flag", "interruption")
        page.click("#apply-filters")
        page.wait_for_url("**flag=interruption**")
        listed = page.locator("a.call-link").all_inner_texts()
        assert CALL in listed and "bank_good_01" not in listed
        page.click(f"a.call-link:text('{CALL}')")
        page.wait_for_selector("#flag-list")

        # Click the first interruption flag: the player jumps there, a few seconds early.
        flag = page.locator("li.flag[data-label='interruption']").first
        start = float(flag.get_attribute("data-start"))
        flag.click()
        page.wait_for_function("document.getElementById('player').readyState >= 1")
        page.wait_for_function("Math.abs(document.getElementById('player').currentTime - %f) < 1.0"
                               % max(0.0, start - CONTEXT))
        assert "current" in (flag.get_attribute("class") or "")
        # ...and stops once the flagged moment and a few seconds after it have played.
        end = float(flag.get_attribute("data-end"))
        page.wait_for_function("document.getElementById('player').paused", timeout=30_000)
        stopped = page.evaluate("document.getElementById('player').currentTime")
        assert end + CONTEXT - 0.05 <= stopped <= end + CONTEXT + 1.0

        # Keys step through problem flags and judge them; the player follows.
        page.keyboard.press("n")
        second = page.locator("li.flag.current")
        second_key = second.get_attribute("data-key")
        assert second_key != flag.get_attribute("data-key")
        page.keyboard.press("c")
        page.wait_for_function(f"document.querySelector(\"li.flag[data-key='{second_key}']\").classList.contains('judged-confirm')")
        page.keyboard.press("p")
        assert page.locator("li.flag.current").get_attribute("data-key") == flag.get_attribute("data-key")

        # Reject it (wrong speaker) with a note, and reject a wrong tag for the training export.
        page.select_option("#reject-reason", "wrong_speaker")
        page.fill("#note", "客户已经说完了")
        page.click("#reject-flag")
        page.wait_for_function("document.getElementById('review-status').textContent === 'human-reviewed'")
        wrong = page.locator("li.flag:not(.problem)").first  # a good-practice tag
        wrong_label, wrong_turn, wrong_key = (wrong.get_attribute(a) for a in ("data-label", "data-turn", "data-key"))
        wrong.click()
        page.select_option("#reject-reason", "wrong_tag")
        page.click("#reject-flag")
        page.wait_for_function(f"document.querySelector(\"li.flag[data-key='{wrong_key}']\").textContent.includes('wrong tag')")

        # Reload: the verdicts come back from the store.
        page.reload()
        kept = page.locator(f"li.flag[data-key='{flag.get_attribute('data-key')}']")
        assert "judged-reject" in kept.get_attribute("class")
        assert "reject (wrong speaker): 客户已经说完了" in kept.inner_text()
        assert page.inner_text("#review-status") == "human-reviewed"
        assert page.inner_text("#human-total") != "–"
        kept.click()
        page.wait_for_function("document.getElementById('player').readyState >= 1")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(tmp_path / "review-call.png"))
        if os.environ.get("CALLQA_UPDATE_SCREENSHOT"):
            shutil.copy(tmp_path / "review-call.png", REPO / "docs" / "review-call.png")

        # Export corrections from the list page and read them back with datasets.
        page.goto(url + "/")
        page.click("#export-corrections")
        page.wait_for_function("document.getElementById('export-result').dataset.path !== undefined")
        exported = page.get_attribute("#export-result", "data-path")
        dataset = load_from_disk(exported)
        rows = {row["source"]: row for row in dataset}
        row = rows[f"review:{CALL}:{wrong_turn}"]
        assert wrong_label not in row["labels"] and row["role"] in ("agent", "customer")
        assert errors == []
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def test_call_report_plays_the_recording_from_a_flag(browser, scorer, tmp_path):
    """The static per-call HTML report: clicking a flagged turn's reason seeks the
    audio element to that turn."""
    import json

    from pipeline.model import AudioInfo, Call, Turn
    from pipeline.report import write_call

    audio = REPO / "tests" / "data" / "audio" / "call_b_stereo_8k_ulaw.wav"
    truth = json.loads(audio.with_suffix(".json").read_text(encoding="utf-8"))
    call = Call(id="report_audio", turns=[Turn(id=i, role=t["role"], text=t["text"], start=t["start"], end=t["end"])
                                          for i, t in enumerate(truth["turns"])],
                audio=AudioInfo(path=str(audio)))
    scorer.score(call)
    write_call(call, tmp_path)
    page = browser.new_page()
    page.goto((tmp_path / "calls" / "report_audio.html").as_uri())
    page.wait_for_function("document.getElementById('player').readyState >= 1")
    flagged_ids = [int(i.removeprefix("turn-")) for i in page.eval_on_selector_all("tr.flagged", "rows => rows.map(r => r.id)")]
    flagged = next(t for t in call.turns if t.id in flagged_ids and t.start > 1)
    page.click(f"#turn-{flagged.id} td.reasons .reason")
    current = page.evaluate("document.getElementById('player').currentTime")
    assert abs(current - flagged.start) < 0.3


@pytest.mark.slow
def test_odd_call_ids_open_and_take_verdicts_in_the_browser(browser, sample_calls, tmp_path):
    """Ids with "/", "#", "?", "%", spaces and percent escapes: clicking each in the list
    opens that call (not "AB" for "%41%42"), and a verdict given there lands on it."""
    from pipeline.review.store import Store

    odd_ids = ["team/1", "team_1", "a#1", "q?x=1&y=2", "100%", "with space", "%41%42", "AB", "日本/东京 #3"]
    call = next(c for c, _ in sample_calls if c.id == CALL)
    store_path = tmp_path / "odd.db"
    store = Store(store_path)
    for call_id in odd_ids:
        store.save_call(call.model_copy(update={"id": call_id}), "sha", "cfg")
    server, url = start_review_server(store_path, tmp_path)
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        for call_id in odd_ids:
            page.goto(url + "/")
            page.get_by_role("link", name=call_id, exact=True).click()
            page.wait_for_selector("#flag-list")
            assert page.inner_text("h1") == f"通话 {call_id}"
            flag = page.locator("li.flag[data-label='interruption']").first
            flag.click()
            page.keyboard.press("c")
            page.wait_for_function("document.querySelector('li.flag.current').classList.contains('judged-confirm')")
        for call_id in odd_ids:
            assert [v.verdict for v in store.verdicts(call_id)] == ["confirm"], call_id
        page.goto(url + "/")  # the list shows each call's stored review result
        assert page.locator("a.call-link").count() == len(odd_ids)
        assert errors == []
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
