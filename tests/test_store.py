"""The results store: round trip, replacement, filters, verdicts, migrations,
crash consistency and concurrent writers, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from pipeline.review.store import Store, StoreError, iso_week, metadata

REPO_ROOT = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
_db_counter = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "store" / "callqa.db")
    server = request.getfixturevalue("postgres_url")
    name = f"callqa_test_{next(_db_counter)}"
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return server.rsplit("/", 1)[0] + "/" + name


def _count(store: Store, table: str, call_id: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE call_id = :c"), {"c": call_id}).scalar()


def test_round_trip_filters_and_replacement(store_url, sample_calls):
    store = Store(store_url)
    for call, sha in sample_calls:
        store.save_call(call, sha, "cfg-1")
    assert len(store.call_ids()) == len(sample_calls)
    call, sha = next((c, s) for c, s in sample_calls if c.id == "telecom_bad_interrupt_01")
    assert store.get_call(call.id) == call
    assert _count(store, "turns", call.id) == len(call.turns)
    assert _count(store, "tags", call.id) == len(call.tags)
    assert store.find_scored(call.id, sha, "cfg-1")
    assert not store.find_scored(call.id, sha, "cfg-2")
    assert not store.find_scored(call.id, "0" * 64, "cfg-1")

    # Filters: each one narrows to calls that really have the property.
    interrupted = {s.id for s in store.list_calls(flag="interruption")}
    assert call.id in interrupted
    assert interrupted == {c.id for c, _ in sample_calls if any(e.kind == "interruption" for e in c.events)}
    failing = store.list_calls(grade="不合格")
    assert failing and all(s.grade == "不合格" for s in failing)
    listening = {s.id for s in store.list_calls(dimension="listening")}
    assert listening == {c.id for c, _ in sample_calls
                         if any(r.status == "deduct" for r in c.scores.dimensions["listening"].results)}
    a023 = store.list_calls(agent="A023", week="2026-W47")
    assert a023 and all(s.agent_id == "A023" and s.week == "2026-W47" for s in a023)
    assert store.list_calls(agent="A023", week="2020-W01") == []
    assert "interruption" in store.facets()["flag"]
    resolutions = {c.outcome.resolution for c, _ in sample_calls}
    assert set(store.facets()["outcome"]) == resolutions and len(resolutions) > 1
    for resolution in resolutions:
        listed = store.list_calls(outcome=resolution)
        assert {s.id for s in listed} == {c.id for c, _ in sample_calls if c.outcome.resolution == resolution}
        assert store.count_calls(outcome=resolution) == len(listed)

    # A verdict survives re-scoring; the new version replaces every row of the old one.
    store.record_verdict(call.id, "tag:rigid:2:0:4", "rigid", "reject", turn_id=2, reason="wrong_tag", note="ok")
    shorter = call.model_copy(deep=True)
    shorter.turns, shorter.tags = shorter.turns[:3], [t for t in shorter.tags if t.turn_id < 3]
    store.save_call(shorter, sha, "cfg-2")
    assert store.get_call(call.id) == shorter
    assert _count(store, "turns", call.id) == 3
    assert store.find_scored(call.id, sha, "cfg-2") and not store.find_scored(call.id, sha, "cfg-1")
    assert [v.reason for v in store.verdicts(call.id)] == ["wrong_tag"]
    store.close()


def test_bad_verdicts_and_unscored_calls_are_refused(tmp_path, sample_calls):
    store = Store(tmp_path / "callqa.db")
    call, sha = sample_calls[0]
    with pytest.raises(StoreError, match="no call"):
        store.record_verdict("nope", "k", "rigid", "reject")
    store.save_call(call, sha, "c")
    with pytest.raises(StoreError, match="verdict must be"):
        store.record_verdict(call.id, "k", "rigid", "maybe")
    with pytest.raises(StoreError, match="reason must be"):
        store.record_verdict(call.id, "k", "rigid", "reject", reason="dunno")
    unscored = call.model_copy(update={"scores": None})
    with pytest.raises(StoreError, match="only scored calls"):
        store.save_call(unscored, sha, "c")
    with pytest.raises(KeyError):
        store.get_call("nope")


def test_migrations_create_exactly_the_declared_schema(store_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = Store(store_url)
    assert store.schema_version() == "0003"
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    Store(store_url).close()  # reopening an up-to-date store changes nothing
    store.close()


def test_iso_week():
    assert iso_week("2026-11-16") == "2026-W47"
    assert iso_week("2026-11-16 09:30:00") == "2026-W47"
    assert iso_week("next tuesday") is None and iso_week(None) is None


# A writer that saves a long call over and over, alternating two versions, until killed.
_WRITER = """
import sys
from pipeline.model import Call
from pipeline.review.store import Store
call = Call.from_json(open(sys.argv[2], encoding="utf-8").read())
big = call.model_copy(deep=True)
n = len(call.turns)
for k in range(1, 150):   # a long call: each save is one big transaction
    big.turns += [t.model_copy(update={"id": t.id + k * n}) for t in call.turns]
    big.tags += [g.model_copy(update={"turn_id": g.turn_id + k * n}) for g in call.tags]
store = Store(sys.argv[1])
print("ready", flush=True)
for i in range(10**6):
    store.save_call(big if i % 2 else call, "sha", f"v{i}")
"""


def _start_writer(path: str, call_json) -> subprocess.Popen:
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, path, str(call_json)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    return writer


@pytest.fixture
def call_json(tmp_path, sample_calls):
    call = next(c for c, _ in sample_calls if c.id == "telecom_bad_interrupt_01")
    path = tmp_path / "call.json"
    path.write_text(call.to_json(), encoding="utf-8")
    return path


def _consistent(store: Store) -> list[str]:
    """Every stored call's rows agree with its JSON, read in one transaction (one snapshot)."""
    problems = []
    with store.engine.connect() as conn:
        for call_id, text in conn.execute(sa.text("SELECT id, call_json FROM calls")):
            call = json.loads(text)
            expected = dict(turns=len(call["turns"]), tags=len(call["tags"]),
                            rule_results=sum(len(d["results"]) for d in call["scores"]["dimensions"].values()))
            for table, n in expected.items():
                rows = conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE call_id = :c"),
                                    {"c": call_id}).scalar()
                if rows != n:
                    problems.append(f"{call_id}: {rows} {table} rows, the stored JSON has {n}")
    return problems


@pytest.mark.slow
def test_killed_writer_leaves_the_store_consistent(tmp_path, call_json):
    path = str(tmp_path / "callqa.db")
    for delay in (0.3, 0.7, 1.1, 1.6):
        writer = _start_writer(path, call_json)
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)  # no cleanup, no rollback: a crash
        writer.wait()
        store = Store(path)
        assert store.call_ids() == ["telecom_bad_interrupt_01"]
        assert _consistent(store) == []
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        store.close()


@pytest.mark.slow
def test_concurrent_writers_and_a_reader(tmp_path, sample_calls, call_json):
    """Two processes saving while this one records verdicts and reads: nothing fails, nothing tears."""
    path = str(tmp_path / "callqa.db")
    store = Store(path)
    call, sha = sample_calls[0]
    store.save_call(call, sha, "c")
    writers = [_start_writer(path, call_json) for _ in range(2)]
    deadline = time.time() + 3
    verdict_count = 0
    while time.time() < deadline:
        store.record_verdict(call.id, "tag:x", "rigid", "confirm")
        verdict_count += 1
        assert _consistent(store) == []
    for w in writers:
        assert w.poll() is None, "a writer died while others were writing"
        w.send_signal(signal.SIGKILL)
        w.wait()
    assert len(store.verdicts(call.id)) == verdict_count
    assert _consistent(store) == []


def test_processes_opening_a_new_store_at_once_create_it_once(tmp_path):
    path = str(tmp_path / "fresh.db")
    code = "import sys; from pipeline.review.store import Store; print(Store(sys.argv[1]).schema_version())"
    openers = [subprocess.Popen([sys.executable, "-c", code, path], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in openers]
    assert [p.returncode for p in openers] == [0, 0, 0], [err[-300:] for _, err in results]
    assert [out.strip() for out, _ in results] == ["0003"] * 3


def test_upgrading_a_0001_store_backfills_the_review_and_outcome_columns(tmp_path, sample_calls):
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from pipeline.review.store import MIGRATIONS_DIR, evidence_items

    path = tmp_path / "old.db"
    store = Store(path)
    call, sha = next((c, s) for c, s in sample_calls if c.id == "telecom_bad_interrupt_01")
    call = call.model_copy(update={"source": str(tmp_path / "week" / "call.json")})
    store.save_call(call, sha, "cfg")
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store._writer.begin() as conn:  # back to the schema of the previous release
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
    store.close()
    store = Store(path)
    assert store.schema_version() == "0003"
    expected = {r.rule_id: len(evidence_items(r)) for d in call.scores.dimensions.values() for r in d.results}
    with store.engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT rule_id, evidence_items FROM rule_results")).all())
    assert stored == expected and sum(expected.values()) > 0
    assert store.input_dirs() == [tmp_path / "week"]
    [listed] = store.list_calls()  # 0003: the outcome copied onto the call's row
    assert (listed.resolution, listed.sentiment_change) == (call.outcome.resolution, call.outcome.sentiment_change)
    store.close()


def test_a_database_without_a_version_table_is_refused_clearly(tmp_path, capsys):
    import sqlite3

    from pipeline.cli import main

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE calls (id TEXT)")
    with pytest.raises(StoreError, match=r"other.db: this database has tables \(calls\) but no callqa schema version"):
        Store(path)
    assert main(["clips", "--store", str(path), "--out", str(tmp_path / "clips")]) == 2
    err = capsys.readouterr().err
    assert "no callqa schema version" in err and "SELECT" not in err and "Traceback" not in err


def test_stored_review_results_go_stale_on_new_verdicts_and_rescoring(tmp_path, sample_calls):
    from pipeline.review.store import ReviewSummary

    store = Store(tmp_path / "callqa.db")
    call, sha = sample_calls[0]
    store.save_call(call, sha, "cfg")
    assert store.stale_reviews("card") == []
    store.record_verdict(call.id, "k", "rigid", "confirm", turn_id=0)
    assert store.stale_reviews("card") == [call.id]
    store.save_review(ReviewSummary(call.id, "card", 88.0, "良好", 1, {"r1": (1, 1, 0)}))
    assert store.stale_reviews("card") == [] and store.stale_reviews("other card") == [call.id]
    assert store.reviews([call.id])[call.id].total == 88.0
    assert store.rule_reviewed()["r1"] == (1, 1, 0)
    # A result computed before the latest verdict is not stored (it would hide that verdict).
    store.record_verdict(call.id, "k", "rigid", "reject", turn_id=0, reason="wrong_tag")
    store.save_review(ReviewSummary(call.id, "card", 88.0, "良好", 1, {}))
    assert store.stale_reviews("card") == [call.id] and store.reviews([call.id]) == {}
    store.save_review(ReviewSummary(call.id, "card", 90.0, "优秀", 2, {}))
    store.save_call(call, sha, "cfg-2")  # re-scored: the result is recomputed from the new scores
    assert store.stale_reviews("card") == [call.id] and "r1" not in store.rule_reviewed()
