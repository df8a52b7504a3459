"""The store commands from the command line: clips, corrections, human scores, errors."""

from __future__ import annotations

import sqlite3

import pytest

from pipeline.cli import main
from pipeline.review.verdicts import added_key
from pipeline.review.store import Store, StoreError


def test_clips_corrections_and_human_scores_commands(scored_store, tmp_path, capsys):
    from datasets import load_from_disk

    store_path, audio = scored_store
    store = Store(store_path)
    call = store.get_call("telecom_bad_interrupt_01")
    store.record_verdict(call.id, added_key("empathy", 2), "empathy", "add", turn_id=2)

    assert main(["clips", "--store", str(store_path), "--out", str(tmp_path / "clips"), "--agent", "A023"]) == 0
    assert "clip(s)" in capsys.readouterr().out
    assert list((tmp_path / "clips").glob("telecom_bad_interrupt_01_*_interruption.wav"))
    assert (tmp_path / "clips" / "index.html").is_file()
    assert main(["clips", "--store", str(store_path), "--out", str(tmp_path / "none"), "--week", "1999-W01"]) == 1
    # An unreadable recording is reported by name and the other calls still get their clips.
    broken = next(audio.glob("*.wav"))
    broken.write_bytes(b"not a wav file")
    assert main(["clips", "--store", str(store_path), "--out", str(tmp_path / "some")]) == 0
    assert f"cannot read {broken}" in capsys.readouterr().err

    assert main(["corrections", "--store", str(store_path), "--out", str(tmp_path / "corr")]) == 0
    rows = load_from_disk(str(tmp_path / "corr"))
    assert rows["source"] == ["review:telecom_bad_interrupt_01:2"] and "empathy" in rows["labels"][0]

    sheet = tmp_path / "qa.csv"
    sheet.write_text("call_id,总分,共情\ntelecom_bad_interrupt_01,72,60\nunknown_call,80,\n", encoding="utf-8")
    assert main(["human-scores", str(sheet), "--store", str(store_path)]) == 0
    assert "1 call id(s) not in the store" in capsys.readouterr().out
    assert store.human_scores()["telecom_bad_interrupt_01"] == {"total": 72.0, "empathy": 60.0}


def test_store_errors_are_clear(tmp_path, capsys):
    assert main(["clips", "--store", str(tmp_path / "missing.db"), "--out", str(tmp_path / "c")]) == 2
    assert "no results store there" in capsys.readouterr().err
    # A store written by a newer callqa (unknown schema version) is refused, not damaged.
    path = tmp_path / "newer.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StoreError, match="newer.db: cannot upgrade the results store schema"):
        Store(path)
