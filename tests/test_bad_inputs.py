"""A corpus of bad inputs, built here in tmp_path, through `callqa score` and
`callqa batch`: each bad file is one error row with a clear message, every good
file is scored, a rerun does nothing new, and what callqa writes is safe
(unique file names, CSV cells that do not run as formulas, one run per folder,
no workers left behind)."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipeline.batch.runner import LOCK_FILE, run_batch
from pipeline.cli import main
from pipeline.report import safe_name, write_csv
from pipeline.review.store import Store

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "calls"
GOOD_SAMPLES = ("bank_good_01.json", "ecom_good_02.txt", "logistics_calls.csv")  # 4 calls
DIALOGUE = [("坐席", "您好，请问有什么可以帮您？", 0.0, 2.0), ("客户", "我的快递三天没到了", 2.5, 4.5),
            ("坐席", "非常抱歉，我马上帮您查一下", 5.0, 7.0)]
ESCAPE_NAME = "evil\x1b[2J\x1b]0;owned\x07.txt"


def _turns(**change) -> list[dict]:
    turns = [{"role": r, "text": t, "start": s, "end": e} for r, t, s, e in DIALOGUE]
    turns[1].update(change)
    return turns


def _json(folder: Path, name: str, data: object, **dump) -> None:
    (folder / name).write_text(json.dumps(data, ensure_ascii=False, **dump), encoding="utf-8")


def write_bad_inputs(folder: Path) -> dict[str, str]:
    """One file per problem; returns file name -> a fragment its error message must hold."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(f"c1,{r},{t},{s},{e}" for r, t, s, e in DIALOGUE)
    (folder / "nan_time.csv").write_text("call_id,role,text,start,end\n" + rows.replace("2.5", "nan"),
                                         encoding="utf-8")
    _json(folder, "nan_time.json", {"id": "nan_json", "turns": _turns(start=float("nan"))})  # writes NaN
    _json(folder, "inf_time.json", {"id": "inf_json", "turns": _turns(end=float("inf"))})  # writes Infinity
    _json(folder, "true_time.json", {"id": "true_time", "turns": _turns(start=True)})
    callqa_call = {"id": "dup_turns", "tags": [], "turns": [
        {"id": 0, "role": "agent", "text": "您好", "start": 0.0, "end": 1.0},
        {"id": 0, "role": "customer", "text": "查快递", "start": 1.5, "end": 2.0}]}
    _json(folder, "dup_turn_ids.json", callqa_call)
    _json(folder, "callqa_missing_role.json", {"id": "no_role", "tags": [], "turns": [{"id": 0, "text": "您好"}]})
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    _json(folder, "meta_list.json", {"id": "meta_list", "metadata": ["a", "b"], "turns": _turns()})
    _json(folder, "meta_string.json", {"id": "meta_string", "metadata": "vip", "turns": _turns()})
    _json(folder, "id_list.json", {"id": ["a"], "turns": _turns()})
    _json(folder, "null_text.json", {"id": "null_text", "turns": _turns(text=None)})
    _json(folder, "list_text.json", {"id": "list_text", "turns": _turns(text=["我的", "快递"])})
    _json(folder, "no_role.json", {"id": "no_role_plain", "turns": _turns(role=None)})
    (folder / "open_quote.csv").write_text('role,text\n坐席,"您好\n客户,查快递\n坐席,好的\n', encoding="utf-8")
    (folder / "wide.csv").write_text(",".join("c" * 200_000) + "\n1,2\n", encoding="utf-8")
    (folder / "big_field.csv").write_text("role,text\n坐席,您好\n客户," + "查" * 460_000 + "\n", encoding="utf-8")
    (folder / "many_turns.txt").write_text("坐席：您好\n客户：你好\n" * 300, encoding="utf-8")
    (folder / "no_text.txt").write_text("坐席：\n客户：。。\n", encoding="utf-8")
    (folder / "big5.txt").write_bytes("坐席：您好，請問有什麼可以幫您？\n客戶：我的快遞沒到\n".encode("big5"))
    (folder / "utf32.txt").write_bytes("坐席：您好\n客户：查快递\n".encode("utf-32"))
    (folder / ESCAPE_NAME).write_text("主持人：大家好\n", encoding="utf-8")
    # The second file with an id already used in the run; the first ("same_id") is good.
    _json(folder, "zz_same_id_again.json", {"id": "same_id", "turns": _turns()})
    return {
        "nan_time.csv": "not a finite number", "nan_time.json": "not a finite number",
        "inf_time.json": "not a finite number", "true_time.json": "True is not a number of seconds",
        "dup_turn_ids.json": "turn id 0 twice", "callqa_missing_role.json": "`turns.0.role`: Field required",
        "deep.json": "nested too deeply", "meta_list.json": "`metadata` must be an object",
        "meta_string.json": "`metadata` must be an object", "id_list.json": "`id` must be a string",
        "null_text.json": "`text` must be a string, got null", "list_text.json": "got list",
        "no_role.json": "no `role` or `speaker`", "open_quote.csv": "a quote left open",
        "wide.csv": "found 200,000 column(s)", "big_field.csv": "limits.max_chars",
        "many_turns.txt": "limits.max_turns", "no_text.txt": "no turns with text",
        "big5.txt": "Big5", "utf32.txt": "UTF-32", ESCAPE_NAME: "unknown speaker label",
        "zz_same_id_again.json": "is already used by",
    }


def write_good_inputs(folder: Path) -> set[str]:
    """Good calls, some with ids that are awkward as file names or CSV cells; returns their ids."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in GOOD_SAMPLES:
        shutil.copy(SAMPLES / name, folder / name)
    awkward = {"team/1": {}, "team_1": {}, "..": {}, ".hidden": {}, "same_id": {},
               "=HYPERLINK(\"http://x\",\"y\")": {"agent_id": "@SUM(1+1)", "team": "-2+3"},
               "+cmd|' /C calc'!A0": {"agent_id": "\tA1"}}
    for i, (call_id, fields) in enumerate(awkward.items()):
        _json(folder, f"awkward_{i}.json", {"id": call_id, **fields, "turns": _turns()})
    return {"bank_good_01", "ecom_good_02", "logistics_good_01", "logistics_bad_interrupt_02", *awkward}


@pytest.fixture(scope="module")
def lexicon_config(tmp_path_factory) -> str:
    """The lexicon tagger (the tagger is not the point here) and small limits, so that
    the size limits are reached by small files."""
    path = tmp_path_factory.mktemp("config") / "fast.yaml"
    path.write_text("tagger:\n  kind: lexicon\nlimits:\n  max_chars: 450000\n  max_turns: 500\n", encoding="utf-8")
    return str(path)


def _errors(out: Path) -> list[dict]:
    with open(out / "errors.csv", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def _scores(out: Path) -> list[dict]:
    with open(out / "scores.csv", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def _check_error_rows(out: Path, expected: dict[str, str]) -> None:
    rows = _errors(out)
    by_file = {Path(row["path"]).name: row["message"] for row in rows}
    assert len(rows) == len(by_file) == len(expected), sorted(by_file)
    assert set(by_file) == set(expected)
    for name, fragment in expected.items():
        assert fragment in by_file[name], (name, by_file[name])
        assert len(by_file[name]) <= 501  # 200,000 columns do not make a 2 MB message
    assert "zz_same_id_again.json" in by_file["zz_same_id_again.json"]
    assert "awkward_4.json" in by_file["zz_same_id_again.json"]  # both files named


@pytest.mark.slow
def test_score_gives_one_error_row_per_bad_file_and_goes_on(tmp_path, lexicon_config, capfd):
    inputs = tmp_path / "in"
    expected, good = write_bad_inputs(inputs), write_good_inputs(inputs)
    out = tmp_path / "out"
    assert main(["score", str(inputs), "--out", str(out), "--config", lexicon_config, "--quiet"]) == 0
    _check_error_rows(out, expected)
    assert {row["call_id"].removeprefix("'") for row in _scores(out)} == good
    assert set(Store(out / "callqa.db").call_ids()) == good
    err = capfd.readouterr().err
    assert "\x1b" not in err and "\\x1b[2J" in err  # the file name's escape sequences are shown, not run

    again = subprocess.run([sys.executable, "-m", "pipeline.cli", "score", str(inputs), "--out", str(out),
                            "--config", lexicon_config, "--quiet"], cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert again.returncode == 0 and f"scored 0 call(s), {len(good)} already scored" in again.stdout
    assert "Traceback" not in again.stderr
    _check_error_rows(out, expected)
    assert len(_scores(out)) == len(good)


@pytest.mark.slow
def test_batch_over_good_and_bad_files_then_a_rerun_with_nothing_new(tmp_path, lexicon_config):
    inputs = tmp_path / "in"
    expected, good = write_bad_inputs(inputs), write_good_inputs(inputs)
    run = tmp_path / "run"
    first = run_batch(inputs, run, workers=1, config_path=lexicon_config, progress=False)
    assert (first.scored, first.skipped, first.failed) == (len(good), 0, len(expected))
    _check_error_rows(run, expected)
    assert {row["call_id"].removeprefix("'") for row in _scores(run)} == good
    assert (run / "report.html").is_file()
    again = run_batch(inputs, run, workers=1, config_path=lexicon_config, progress=False)
    assert (again.scored, again.skipped, again.failed) == (0, len(good), len(expected))
    _check_error_rows(run, expected)


def test_call_files_are_unique_and_never_hidden(tmp_path, lexicon_config):
    inputs = tmp_path / "in"
    good = write_good_inputs(inputs)
    out = tmp_path / "out"
    assert main(["score", str(inputs), "--out", str(out), "--config", lexicon_config, "--quiet"]) == 0
    names = sorted(p.name for p in (out / "calls").iterdir())
    assert len(names) == 2 * len(good) and not [n for n in names if n.startswith(".")]
    assert safe_name("team_1") == "team_1" and safe_name("team/1") != safe_name("team_1")
    for call_id in good:
        page = json.loads((out / "calls" / f"{safe_name(call_id)}.json").read_text(encoding="utf-8"))
        assert page["id"] == call_id  # each id has its own file, none written over


def test_csv_cells_never_run_as_formulas(tmp_path, lexicon_config):
    inputs = tmp_path / "in"
    write_good_inputs(inputs)
    (inputs / "=cmd.txt").write_text("主持人：大家好\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["score", str(inputs), "--out", str(out), "--config", lexicon_config, "--quiet"]) == 0
    for name in ("scores.csv", "agents.csv", "errors.csv"):
        with open(out / name, encoding="utf-8-sig") as handle:
            cells = [cell for row in csv.reader(handle) for cell in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")
                    or (c[:1] == "-" and not c[1:].replace(".", "").isdigit())], name
    rows = {row["call_id"]: row for row in _scores(out)}
    injected = rows["'=HYPERLINK(\"http://x\",\"y\")"]
    assert (injected["agent_id"], injected["team"]) == ("'@SUM(1+1)", "'-2+3")
    write_csv(tmp_path / "numbers.csv", ["a", "b", "c"], [{"a": "-3.5", "b": -2, "c": "-1e3"}])
    assert (tmp_path / "numbers.csv").read_text(encoding="utf-8-sig").splitlines()[1] == "-3.5,-2,-1e3"


@pytest.mark.slow
def test_duplicate_manifest_rows_are_counted_once_and_reported(tmp_path, lexicon_config):
    manifest = tmp_path / "week.csv"
    good = SAMPLES / "bank_good_01.json"
    manifest.write_text(f"path,agent_id\n{good},B1\n{good},B1\n{SAMPLES / 'food_good_01.json'},B2\n",
                        encoding="utf-8")
    summary = run_batch(manifest, tmp_path / "run", workers=1, config_path=lexicon_config, progress=False)
    assert (summary.scored, summary.failed) == (2, 1)
    [error] = _errors(tmp_path / "run")
    assert error["path"].endswith("week.csv:3") and "same file and call_id as" in error["message"]
    assert error["message"].endswith("counted once") and "week.csv:2" in error["message"]
    assert len(_scores(tmp_path / "run")) == 2


def test_a_call_that_cannot_be_written_fails_alone(tmp_path, lexicon_config):
    inputs = tmp_path / "in"
    write_good_inputs(inputs)
    out = tmp_path / "out"
    (out / "calls" / "bank_good_01.json").mkdir(parents=True)  # the file cannot replace a folder
    (out / "errors.csv").write_text("", encoding="utf-8")  # a callqa output folder, as a crashed run leaves
    assert main(["score", str(inputs), "--out", str(out), "--config", lexicon_config, "--quiet"]) == 0
    [error] = _errors(out)
    assert (error["call_id"], error["stage"]) == ("bank_good_01", "write")
    assert "bank_good_01" not in {row["call_id"] for row in _scores(out)} and len(_scores(out)) == 10


def test_output_folder_rules(tmp_path, lexicon_config, capsys):
    inputs = tmp_path / "in"
    write_good_inputs(inputs)
    # An --out inside the input folder is not read back as input on the next run.
    nested = inputs / "results"
    for _ in range(2):
        assert main(["score", str(inputs), "--out", str(nested), "--config", lexicon_config, "--quiet"]) == 0
        assert not _errors(nested) and len(_scores(nested)) == 11
    # A folder of other files is not used as --out: nothing is written into it.
    assert main(["score", str(inputs), "--out", str(SAMPLES.parent), "--quiet"]) == 2
    assert "holds no callqa results" in capsys.readouterr().err
    assert not (SAMPLES.parent / "errors.csv").exists()
    # --store in a folder that cannot be created.
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert main(["score", str(inputs), "--out", str(tmp_path / "o2"), "--store", str(tmp_path / "file" / "x.db"),
                 "--config", lexicon_config, "--quiet"]) == 2
    assert "cannot create the results store" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_run_on_the_same_folder_is_refused(tmp_path, lexicon_config, capsys):
    inputs = tmp_path / "in"
    write_good_inputs(inputs)
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(  # another process holding the run folder, as a running batch does
        [sys.executable, "-c", "import fcntl, sys, time\nf = open(sys.argv[1], 'a+')\n"
         "fcntl.flock(f, fcntl.LOCK_EX)\nf.write('4242'); f.flush()\nprint('locked', flush=True)\ntime.sleep(60)",
         str(run / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["batch", str(inputs), "--out", str(run), "--config", lexicon_config, "--quiet"]) == 2
        assert "another callqa run (process 4242)" in capsys.readouterr().err
        assert not (run / "callqa.db").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(["batch", str(inputs), "--out", str(run), "--workers", "1", "--config", lexicon_config,
                 "--quiet"]) == 0
    with open(run / LOCK_FILE, "a+") as lock:  # released at the end of the run
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_csv_field_over_128_kb_is_read(tmp_path, config):
    from pipeline.readers import RoleMap, read_calls

    path = tmp_path / "long_note.csv"
    path.write_text("role,text,note\n坐席,您好," + "x" * 200_000 + "\n客户,查快递,\n", encoding="utf-8")
    [call] = read_calls(path, RoleMap(config["roles"]))
    assert [t.text for t in call.turns] == ["您好", "查快递"]


def test_bad_arguments_are_clear_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["batch", "in", "--out", "run", "--workers", "-1"])
    assert exit_info.value.code == 2 and "must be at least 1, got -1" in capsys.readouterr().err


def test_review_prints_an_ipv6_address_as_a_url(tmp_path):
    Store(tmp_path / "callqa.db").close()
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "review", "--store",
                                str(tmp_path / "callqa.db"), "--host", "::1", "--port", "8791"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    killer = threading.Timer(60, process.kill)  # a server that never prints ends the test, not hangs it
    killer.start()
    try:
        line = next((line for line in process.stdout if "callqa review:" in line), "")
    finally:
        killer.cancel()
        process.kill()
        process.wait()
    assert "http://[::1]:8791/" in line, line


@pytest.mark.slow
def test_killing_the_driver_ends_its_workers(tmp_path, lexicon_config):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(300):
        for name in ("bank_good_01.json", "telecom_bad_interrupt_01.json"):
            call = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
            call["id"] = f"{call['id']}_{i}"
            _json(inputs, f"{call['id']}.json", call)
    driver = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "batch", str(inputs), "--out",
                               str(tmp_path / "run"), "--workers", "2", "--config", lexicon_config, "--quiet"],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and len(workers) < 2:
        workers = [p for p in psutil.Process(driver.pid).children()
                   if "resource_tracker" not in " ".join(p.cmdline())]
        time.sleep(0.1)
    assert len(workers) == 2 and driver.poll() is None, "the batch must still be running"
    time.sleep(1.0)  # the workers are at work
    driver.send_signal(signal.SIGKILL)  # the driver alone, not its process group
    driver.wait()
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"workers still running after the driver was killed: {alive}"


@pytest.mark.slow
def test_a_recording_with_no_speech_is_an_error_row_not_a_grade(tmp_path, lexicon_config):
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(7)
    sf.write(tmp_path / "noise.wav", 0.01 * rng.standard_normal(8000), 8000, subtype="PCM_16")
    out = tmp_path / "out"
    assert main(["score", str(tmp_path / "noise.wav"), "--out", str(out), "--config", lexicon_config,
                 "--quiet"]) == 1  # nothing scored
    [error] = _errors(out)
    assert "no recognised speech" in error["message"] or "no speech" in error["message"].lower()
    assert not _scores(out) and not Store(out / "callqa.db").call_ids()
