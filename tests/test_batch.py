"""`callqa batch`: resuming after a real kill, fault isolation, manifests, the
version key, worker deaths, the Ray engine, and the weekly report."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import psutil
import pytest

from pipeline.batch.runner import run_batch
from pipeline.review.store import Store

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "calls"
SAMPLE_JSON = sorted(SAMPLES.glob("*.json"))
AUDIO = REPO / "tests" / "data" / "audio"


def _copies(folder: Path, copies: int) -> int:
    """`copies` renamed copies of every sample JSON call under folder/; returns the number of calls."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(copies):
        for path in SAMPLE_JSON:
            call = json.loads(path.read_text(encoding="utf-8"))
            call["id"] = f"{path.stem}_{i:03d}"
            (folder / f"{call['id']}.json").write_text(json.dumps(call, ensure_ascii=False), encoding="utf-8")
    return copies * len(SAMPLE_JSON)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "batch", *args, "--quiet"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _call_files(run: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((run / "calls").glob("*.json"))}


def _last_run_log(run: Path) -> str:
    return (run / "batch.log").read_text(encoding="utf-8").rsplit(" run: ", 1)[1]


def _logged(log: str, what: str) -> list[str]:
    return re.findall(rf" INFO {what} (\S+) \(", log)


def _stored(store_path: Path) -> int:
    """Calls in a run's store, read without taking any lock the batch needs."""
    if not store_path.exists():
        return 0
    with closing(sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)) as db:
        try:
            return db.execute("SELECT count(*) FROM calls").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not created yet
            return 0


def _errors(run: Path) -> list[dict]:
    with open(run / "errors.csv", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_killed_run_resumes_and_scores_every_call_once(tmp_path):
    inputs = tmp_path / "calls"
    total = _copies(inputs, 16)
    reference, run = tmp_path / "reference", tmp_path / "run"
    # Resuming does not depend on the tagger: the lexicon keeps three batches of 224 calls
    # to seconds each, and a run still lasts long enough for the kill to land mid-way.
    lexicon = tmp_path / "lexicon.yaml"
    lexicon.write_text("tagger:\n  kind: lexicon\n", encoding="utf-8")
    options = ["--workers", "2", "--config", str(lexicon)]
    subprocess.run(_cli(str(inputs), "--out", str(reference), *options), env=_env(), check=True, cwd=REPO)

    process = subprocess.Popen(_cli(str(inputs), "--out", str(run), *options), env=_env(), cwd=REPO,
                               start_new_session=True)
    store_path = run / "callqa.db"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if _stored(store_path) >= 20:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its workers, mid-write or not
    process.wait()
    done_before = set(Store(store_path).call_ids())
    assert 20 <= len(done_before) < total, "the kill must land while the batch is running"

    resumed = subprocess.run(_cli(str(inputs), "--out", str(run), *options), env=_env(), cwd=REPO)
    assert resumed.returncode == 0
    log = _last_run_log(run)
    skipped, scored = _logged(log, "skipped"), _logged(log, "scored")
    assert sorted(skipped) == sorted(done_before)  # nothing done before the kill is done again
    assert len(scored) == len(set(scored)) == total - len(done_before)
    assert set(skipped).isdisjoint(scored)
    assert len(Store(store_path).call_ids()) == total
    assert _call_files(run) == _call_files(reference)  # identical to a run never interrupted
    assert (run / "scores.csv").read_text(encoding="utf-8") == (reference / "scores.csv").read_text(encoding="utf-8")


def _huge_header_wav(path: Path) -> None:
    """A WAV whose header claims 4 GB of audio that the file does not hold."""
    fmt = struct.pack("<HHIIHH", 1, 2, 8000, 32000, 4, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", 0xFFFFFFC0) + b"\x00\x01" * 800)


def test_process_item_turns_each_failure_into_a_row_naming_the_stage(tmp_path):
    """The stage function both engines run, called directly: it never raises."""
    from pipeline.batch.runner import Item, Stages, process_item

    stages = Stages()
    ok = process_item(Item(str(SAMPLES / "logistics_calls.csv"), done_ids=frozenset({"logistics_good_01"})), stages)
    assert [c.id for c in ok.calls] == ["logistics_bad_interrupt_02"] and ok.skipped == ["logistics_good_01"]
    assert ok.calls[0].scores is not None and set(ok.seconds) == {"read", "tag", "events", "outcome", "score"}
    (tmp_path / "bad.txt").write_text("主持人：大家好\n", encoding="utf-8")
    (tmp_path / "silent.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(20) + b"data\x00\x00\x00\x00")
    for name, stage in (("bad.txt", "read"), ("silent.wav", "transcribe")):
        outcome = process_item(Item(str(tmp_path / name)), stages)
        assert not outcome.calls and [(e.stage, e.path) for e in outcome.errors] == [(stage, str(tmp_path / name))]


@pytest.mark.slow
def test_bad_files_become_error_rows_and_the_batch_carries_on(tmp_path):
    inputs = tmp_path / "calls"
    inputs.mkdir()
    good = ["bank_good_01.json", "ecom_good_02.txt", "logistics_calls.csv"]
    for name in good:
        shutil.copy(SAMPLES / name, inputs / name)
    (inputs / "corrupt.json").write_bytes(os.urandom(3000))
    (inputs / "truncated.json").write_text('{"id": "x", "turns": [{"role": "agent", "te', encoding="utf-8")
    (inputs / "empty.txt").write_text("  \n\n", encoding="utf-8")
    (inputs / "zero.csv").write_bytes(b"")
    (inputs / "not_a_call.json").write_text('{"name": "menu", "items": [1, 2]}', encoding="utf-8")
    (inputs / "report.docx").write_bytes(b"PK\x03\x04" + os.urandom(500))
    (inputs / "huge_header.csv").write_text(",".join(f"column{i}" for i in range(300_000)) + "\n1,2\n",
                                            encoding="utf-8")
    _huge_header_wav(inputs / "huge_header.wav")
    (inputs / "noise.wav").write_bytes(os.urandom(5000))
    (inputs / "sub").mkdir()
    (inputs / "sub" / "unknown_speaker.txt").write_text("主持人：大家好\n客户：你好\n", encoding="utf-8")

    summary = run_batch(inputs, tmp_path / "run", workers=1, progress=False)

    errors = {Path(row["path"]).name: row for row in _errors(tmp_path / "run")}
    assert set(errors) == {"corrupt.json", "truncated.json", "empty.txt", "zero.csv", "not_a_call.json",
                           "report.docx", "huge_header.csv", "huge_header.wav", "noise.wav", "unknown_speaker.txt"}
    assert "malformed JSON" in errors["truncated.json"]["message"]
    assert "empty" in errors["empty.txt"]["message"] and "empty" in errors["zero.csv"]["message"]
    assert "unsupported file type '.docx'" in errors["report.docx"]["message"]
    assert "turns" in errors["not_a_call.json"]["message"]
    assert "'主持人'" in errors["unknown_speaker.txt"]["message"]
    assert "header declares 4294967232 bytes" in errors["huge_header.wav"]["message"]
    assert all(row["stage"] == ("transcribe" if name.endswith(".wav") else "read") for name, row in errors.items())
    assert all(len(row["message"]) <= 501 for row in errors.values())  # a 300,000-column header stays short
    calls = Store(tmp_path / "run" / "callqa.db").call_ids()
    assert summary.scored == len(calls) == 4 and summary.failed == 10  # the CSV holds two calls
    assert (tmp_path / "run" / "report.html").exists()

    again = run_batch(inputs, tmp_path / "run", workers=1, progress=False)
    assert (again.scored, again.skipped, again.failed) == (0, 4, 10)  # bad files are tried again, good ones not


@pytest.mark.slow
def test_cli_exit_codes(tmp_path):
    inputs = tmp_path / "calls"
    inputs.mkdir()
    shutil.copy(SAMPLES / "bank_good_01.json", inputs)
    ok = subprocess.run(_cli(str(inputs), "--out", str(tmp_path / "run"), "--workers", "1"), env=_env(), cwd=REPO,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "1 scored, 0 skipped" in ok.stdout
    (inputs / "empty.json").write_bytes(b"")
    failed = subprocess.run(_cli(str(inputs), "--out", str(tmp_path / "run"), "--workers", "1"), env=_env(),
                            cwd=REPO, capture_output=True, text=True)
    assert failed.returncode == 1 and "0 scored, 1 skipped (already scored), 1 failed" in failed.stdout
    wrong = subprocess.run(_cli(str(inputs), "--out", str(tmp_path / "run2"), "--previous", str(tmp_path)),
                           env=_env(), cwd=REPO, capture_output=True, text=True)
    assert wrong.returncode == 2 and "--previous" in wrong.stderr
    assert not (tmp_path / "run2" / "callqa.db").exists()  # refused before scoring anything


def test_manifest_fields_human_scores_and_bad_rows(tmp_path):
    manifest = tmp_path / "week.csv"
    rows = [
        ["path", "call_id", "agent_id", "team", "date", "channel_layout", "human_total", "human_empathy"],
        [str(SAMPLES / "bank_good_01.json"), "", "B100", "北区", "2026-11-20", "", "95", "90"],
        [str(SAMPLES / "logistics_calls.csv"), "logistics_bad_interrupt_02", "B200", "南区", "2026-11-21",
         "", "60", ""],
        [str(SAMPLES / "ecom_good_02.txt"), "week47_0003", "B200", "南区", "2026-11-21", "agent_left", "", ""],
        [str(SAMPLES / "food_good_01.json"), "", "B100", "北区", "", "agent_upstairs", "", ""],
        ["", "", "B300", "", "", "", "", ""],
        [str(tmp_path / "missing.json"), "", "B300", "", "", "", "", ""],
        [str(SAMPLES / "logistics_calls.csv"), "", "B300", "", "", "", "70", ""],
    ]
    with open(manifest, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)

    summary = run_batch(manifest, tmp_path / "run", workers=1, progress=False)

    store = Store(tmp_path / "run" / "callqa.db")
    assert sorted(store.call_ids()) == ["bank_good_01", "logistics_bad_interrupt_02", "week47_0003"]
    bank = store.get_call("bank_good_01")
    assert (bank.agent_id, bank.team, bank.date) == ("B100", "北区", "2026-11-20")
    assert store.get_call("week47_0003").agent_id == "B200"  # the manifest's id replaces the file name
    assert store.human_scores()["bank_good_01"] == {"total": 95.0, "empathy": 90.0}
    errors = {(row["path"].rsplit(":", 1)[-1] if row["stage"] == "manifest" else Path(row["path"]).name):
              row["message"] for row in _errors(tmp_path / "run")}
    assert "channel_layout 'agent_upstairs'" in errors["5"] and "path is empty" in errors["6"]
    assert "No such file" in errors["missing.json"]
    assert "human scores" in errors["logistics_calls.csv"]  # two calls in the file, one row of scores
    assert summary.failed == 4
    with open(tmp_path / "run" / "report" / "human_agreement.csv", encoding="utf-8-sig") as handle:
        agreement = {row["dimension"]: row for row in csv.DictReader(handle)}
    assert agreement["total"]["calls"] == "2"


@pytest.mark.slow
def test_changed_config_rescores_instead_of_skipping(tmp_path):
    inputs = tmp_path / "calls"
    inputs.mkdir()
    shutil.copy(SAMPLES / "telecom_bad_interrupt_01.json", inputs)
    first = run_batch(inputs, tmp_path / "run", workers=1, progress=False)
    config = tmp_path / "strict.yaml"
    config.write_text("events:\n  silence:\n    preset: strict\n", encoding="utf-8")
    second = run_batch(inputs, tmp_path / "run", workers=1, progress=False, config_path=str(config))
    assert (first.scored, second.scored, second.skipped) == (1, 1, 0)


def test_a_model_retrained_in_place_changes_the_version_key(tmp_path):
    from pipeline.config import load_config
    from pipeline.scoring import config_version

    model = tmp_path / "tagger"
    shutil.copytree(REPO / "models" / "tagger", model)
    config = tmp_path / "bert.yaml"
    config.write_text(f"tagger:\n  kind: bert\n  bert_model: {model}\n", encoding="utf-8")
    before = config_version(load_config(config))
    settings = json.loads((model / "tagger.json").read_text(encoding="utf-8"))
    settings["thresholds"]["rigid"] = 0.95
    (model / "tagger.json").write_text(json.dumps(settings), encoding="utf-8")
    assert config_version(load_config(config)) != before
    # The lexicon tagger does not read the model: retraining it rescored nothing.
    lexicon = tmp_path / "lexicon.yaml"
    lexicon.write_text(f"tagger:\n  kind: lexicon\n  bert_model: {model}\n", encoding="utf-8")
    unchanged = config_version(load_config(lexicon))
    (model / "tagger.json").write_text(json.dumps({**settings, "batch_size": 8}), encoding="utf-8")
    assert config_version(load_config(lexicon)) == unchanged


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing(tmp_path):
    inputs = tmp_path / "calls"
    total = _copies(inputs, 12)
    process = subprocess.Popen(_cli(str(inputs), "--out", str(tmp_path / "run"), "--workers", "2"), env=_env(),
                               cwd=REPO)
    store_path = tmp_path / "run" / "callqa.db"
    while _stored(store_path) < 10:
        assert process.poll() is None, "the batch ended before a worker could be killed"
        time.sleep(0.05)
    workers = [p for p in psutil.Process(process.pid).children() if "resource_tracker" not in " ".join(p.cmdline())]
    workers[0].send_signal(signal.SIGKILL)
    assert process.wait(timeout=300) == 0
    assert len(Store(store_path).call_ids()) == total
    assert "a worker process died" in _last_run_log(tmp_path / "run")


@pytest.mark.slow
def test_audio_calls_are_transcribed_once_and_skipped_before_transcription_on_rerun(tmp_path):
    manifest = tmp_path / "week.csv"
    manifest.write_text("path,call_id,agent_id,channel_layout\n"
                        f"{AUDIO / 'call_b_stereo_8k_ulaw.wav'},week47_0001,B100,agent_left\n", encoding="utf-8")
    first = run_batch(manifest, tmp_path / "run", workers=1, progress=False)
    call = Store(tmp_path / "run" / "callqa.db").get_call("week47_0001")
    assert first.scored == 1 and call.agent_id == "B100" and call.audio.channels == 2
    assert {t.role for t in call.turns} == {"agent", "customer"} and call.scores is not None
    again = run_batch(manifest, tmp_path / "run", workers=1, progress=False)
    assert (again.scored, again.skipped) == (0, 1) and "transcribe" not in again.stage_seconds


@pytest.mark.slow
def test_ray_engine_gives_the_same_results_as_the_local_pool(tmp_path):
    pytest.importorskip("ray")
    inputs = tmp_path / "calls"
    shutil.copytree(SAMPLES, inputs)
    shutil.copy(AUDIO / "call_b_mono_8k_alaw.wav", inputs)  # the speech stage runs in the actors too
    local = run_batch(inputs, tmp_path / "local", workers=2, progress=False)
    on_ray = run_batch(inputs, tmp_path / "ray", workers=2, engine="ray", progress=False)
    assert (on_ray.scored, on_ray.failed) == (local.scored, local.failed) == (20, 0)
    assert _call_files(tmp_path / "ray") == _call_files(tmp_path / "local")
    assert (tmp_path / "ray" / "scores.csv").read_text(encoding="utf-8") == \
        (tmp_path / "local" / "scores.csv").read_text(encoding="utf-8")


@pytest.mark.slow
def test_weekly_report_compares_with_the_previous_run(tmp_path):
    first_week, second_week = tmp_path / "w46", tmp_path / "w47"
    first_week.mkdir()
    second_week.mkdir()
    for name in ("bank_good_01.json", "bank_bad_perfunctory_01.json"):  # agents A017, A044
        shutil.copy(SAMPLES / name, first_week)
    for name in ("bank_good_01.json", "ecom_bad_rigid_02.json", "insurance_good_01.json"):  # A017, A044, A052
        shutil.copy(SAMPLES / name, second_week)
    run_batch(first_week, tmp_path / "run46", workers=1, progress=False)
    run_batch(second_week, tmp_path / "run47", workers=1, progress=False, previous=tmp_path / "run46")

    def agents(run):
        with open(run / "report" / "agents.csv", encoding="utf-8-sig") as handle:
            return {row["agent_id"]: row for row in csv.DictReader(handle)}

    before, now = agents(tmp_path / "run46"), agents(tmp_path / "run47")
    assert float(now["A017"]["change_mean_total"]) == 0.0  # the same call both weeks
    assert float(now["A044"]["change_mean_total"]) == pytest.approx(
        float(now["A044"]["mean_total"]) - float(before["A044"]["mean_total"]), abs=0.11)
    assert now["A052"]["change_mean_total"] == ""  # new this week
    page = (tmp_path / "run47" / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4  # grades, dimensions, agents, flags
    with open(tmp_path / "run47" / "report" / "flags.csv", encoding="utf-8-sig") as handle:
        flags = list(csv.DictReader(handle))
    assert flags and re.fullmatch(r"http://127.0.0.1:8765/calls/[\w%]+#turn-\d+", flags[0]["example_1"])
    assert f'href="{flags[0]["example_1_page"]}"' in page
    with open(tmp_path / "run47" / "report" / "grades.csv", encoding="utf-8-sig") as handle:
        assert sum(int(row["calls"]) for row in csv.DictReader(handle)) == 3
