"""Flags, human-reviewed scores, rule precision, corrections as training data, calibration."""

from __future__ import annotations

import pytest

from pipeline.model import AGENT_TAGS
from pipeline.readers import ReadError
from pipeline.review.verdicts import (added_key, calibration, correction_rows, export_corrections, flags_of,
                             human_scores, read_human_scores, reviewed_call, rule_precision)
from pipeline.review.store import Store


@pytest.fixture
def store(tmp_path, sample_calls):
    store = Store(tmp_path / "callqa.db")
    for call, sha in sample_calls:
        store.save_call(call, sha, "cfg")
    return store


def _flag(store, call_id, label):
    return next(f for f in flags_of(store.get_call(call_id), store.verdicts(call_id)) if f.label == label)


def test_rejecting_the_only_rigid_flag_restores_the_expression_score(store, scorer):
    call = store.get_call("ecom_bad_rigid_02")
    rigid = [f for f in flags_of(call, []) if f.label == "rigid"]
    assert rigid and all(f.problem for f in rigid)
    machine = call.scores.dimensions["expression"].score
    for flag in rigid:
        store.record_verdict(call.id, flag.key, flag.label, "reject", turn_id=flag.turn_id, reason="wrong_tag")
    human = human_scores(call, store.verdicts(call.id), scorer.scorecard)
    assert not any(r.rule_id == "expression.rigid" and r.status == "deduct"
                   for r in human.dimensions["expression"].results)
    assert human.dimensions["expression"].score > machine
    # A later confirm overrides the reject: the deduction is back.
    store.record_verdict(call.id, rigid[0].key, "rigid", "confirm", turn_id=rigid[0].turn_id)
    again = human_scores(call, store.verdicts(call.id), scorer.scorecard)
    assert again.dimensions["expression"].score < human.dimensions["expression"].score
    assert human_scores(call, [], scorer.scorecard) is None  # nobody reviewed: machine-only


def test_added_flags_count_in_the_reviewed_call(store, scorer):
    # A call where the machine saw no customer emotion, so empathy had no occasion (N/A).
    call = next(c for c in map(store.get_call, store.call_ids())
                if not c.scores.dimensions["empathy"].applicable and any(t.role == "customer" for t in c.turns))
    customer = next(t for t in call.turns if t.role == "customer")
    store.record_verdict(call.id, added_key("sentiment.negative", customer.id), "sentiment.negative", "add",
                         turn_id=customer.id, note="angry")
    reviewed = reviewed_call(call, store.verdicts(call.id))
    assert reviewed.turn(customer.id).sentiment == "negative"
    assert any(f.kind == "added" and f.turn_id == customer.id for f in flags_of(call, store.verdicts(call.id)))
    human = human_scores(call, store.verdicts(call.id), scorer.scorecard)
    assert human.dimensions["empathy"].applicable


def test_rule_precision_counts_upheld_and_rejected_evidence(store, scorer):
    interruptions = [f for f in flags_of(store.get_call("telecom_bad_interrupt_01"), [])
                     if f.label == "interruption"]
    assert len(interruptions) >= 2
    store.record_verdict("telecom_bad_interrupt_01", interruptions[0].key, "interruption", "reject",
                         turn_id=interruptions[0].turn_id, reason="wrong_speaker")
    store.record_verdict("telecom_bad_interrupt_01", interruptions[1].key, "interruption", "confirm",
                         turn_id=interruptions[1].turn_id)
    row = next(r for r in rule_precision(store, scorer.scorecard) if r.rule_id == "listening.interruption")
    assert row.fired >= len(interruptions)
    assert (row.reviewed, row.upheld) == (2, 1) and row.precision == 0.5


def test_corrections_are_reviewed_turns_with_corrected_labels(store, tmp_path, scorer):
    from datasets import load_from_disk
    from pipeline.review.privacy import load_privacy

    call = store.get_call("telecom_bad_interrupt_01")
    first = call.turns[0]
    wrong = next(f for f in flags_of(call, []) if f.kind == "tag" and f.label in AGENT_TAGS and f.turn_id != first.id)
    store.record_verdict(call.id, wrong.key, wrong.label, "reject", turn_id=wrong.turn_id, reason="wrong_tag")
    store.record_verdict(call.id, added_key("proactive", first.id), "proactive", "add", turn_id=first.id)
    asr = next(f for f in flags_of(call, []) if f.kind == "tag" and f.turn_id not in (first.id, wrong.turn_id))
    store.record_verdict(call.id, asr.key, asr.label, "reject", turn_id=asr.turn_id, reason="asr_error")

    rows = {r["source"]: r for r in correction_rows(store, None)}
    assert wrong.label not in rows[f"review:{call.id}:{wrong.turn_id}"]["labels"]
    assert "proactive" in rows[f"review:{call.id}:{first.id}"]["labels"]
    assert f"review:{call.id}:{asr.turn_id}" not in rows  # the text is wrong: not training data

    out = tmp_path / "corrections"
    assert export_corrections(store, out, load_privacy(scorer.config)) == len(rows)
    dataset = load_from_disk(str(out))
    assert dataset.column_names == ["text", "role", "labels", "source"]
    assert set(dataset["source"]) == set(rows)
    assert (out / "corrections.jsonl").read_text(encoding="utf-8").count("\n") == len(rows)


def test_corrections_mask_personal_data_and_swap_a_wrong_speaker(tmp_path, sample_calls, scorer):
    from pipeline.review.privacy import load_privacy

    call = sample_calls[0][0].model_copy(deep=True)
    agent = next(t for t in call.turns if t.role == "agent" and call.tags_for(t.id))
    agent.text = "好的，请问您的手机号是13812345678吗？"
    store = Store(tmp_path / "callqa.db")
    store.save_call(call, "sha", "cfg")
    tag = call.tags_for(agent.id)[0]
    store.record_verdict(call.id, f"tag:{tag.label}:{tag.turn_id}:{tag.char_start}-{tag.char_end}", tag.label,
                         "reject", turn_id=agent.id, reason="wrong_speaker")
    [row] = correction_rows(store, load_privacy(scorer.config))
    assert row["role"] == "customer"
    assert "13812345678" not in row["text"] and "***********" in row["text"]


def test_calibration_against_imported_human_scores(store, tmp_path, scorer):
    summaries = store.list_calls()
    sheet = tmp_path / "qa.csv"
    lines = ["call_id,总分,倾听,reviewer"]
    for i, s in enumerate(summaries):
        # Humans agree on ranking but score 5 lower, except one call they grade 40 points apart.
        human = s.total - 5 if i else (s.total - 40 if s.total >= 40 else s.total + 40)
        lines.append(f"{s.id},{human},{s.dimensions['listening'] if s.dimensions['listening'] is not None else ''},x")
    sheet.write_text("\n".join(lines), encoding="utf-8")
    rows = read_human_scores(sheet, scorer.scorecard)
    store.import_human_scores(rows, "qa.csv")
    agreements, worst = calibration(store, list(scorer.scorecard.dimensions), worst=3)
    total = next(a for a in agreements if a.dimension == "total")
    listening = next(a for a in agreements if a.dimension == "listening")
    assert total.n == len(summaries)
    assert listening.correlation == 1.0 and listening.mean_abs_diff == 0
    assert total.mean_abs_diff > 5
    assert worst[0].call_id == summaries[0].id and worst[0].dimension == "total"

    bad = tmp_path / "bad.csv"
    bad.write_text("call,score\nx,1\n", encoding="utf-8")
    with pytest.raises(ReadError, match="call_id"):
        read_human_scores(bad, scorer.scorecard)
    bad.write_text("call_id,total\nx,great\n", encoding="utf-8")
    with pytest.raises(ReadError, match=r"bad.csv:2: total is not a number"):
        read_human_scores(bad, scorer.scorecard)


def test_stored_rule_precision_equals_a_full_recount(store, scorer):
    """rule_precision reads stored per-call counts; they must equal re-scoring every
    reviewed call from its verdicts (what the app used to do per request)."""
    from collections import Counter

    from pipeline.review.verdicts import review_summary

    for call_id in store.call_ids()[:8]:
        call = store.get_call(call_id)
        for i, flag in enumerate(f for f in flags_of(call, []) if f.kind in ("tag", "event")):
            store.record_verdict(call_id, flag.key, flag.label, "reject" if i % 2 else "confirm",
                                 turn_id=flag.turn_id, reason="wrong_tag" if i % 2 else None)
    rows = {r.rule_id: r for r in rule_precision(store, scorer.scorecard)}
    recount = Counter()
    for call_id in store.call_ids():
        verdicts = store.verdicts(call_id)
        if verdicts:
            for rule, (reviewed, upheld, added) in review_summary(store.get_call(call_id), verdicts,
                                                                  scorer.scorecard).rules.items():
                recount[rule, "reviewed"] += reviewed
                recount[rule, "upheld"] += upheld
                recount[rule, "added"] += added
    assert sum(r.reviewed for r in rows.values()) > 0
    for rule_id, row in rows.items():
        assert (row.reviewed, row.upheld, row.added) == \
            (recount[rule_id, "reviewed"], recount[rule_id, "upheld"], recount[rule_id, "added"])
    reviewed = store.reviews(store.call_ids())
    assert len(reviewed) == 8 and all(r.total is not None for r in reviewed.values())


def test_corrections_export_is_atomic_and_never_merges_into_other_files(store, tmp_path):
    call = store.get_call("telecom_bad_interrupt_01")
    flag = next(f for f in flags_of(call, []) if f.kind == "tag" and f.label in AGENT_TAGS and f.turn_id != 0)
    store.record_verdict(call.id, flag.key, flag.label, "reject", turn_id=flag.turn_id, reason="wrong_tag")
    out = tmp_path / "corr"
    assert export_corrections(store, out, None) == 1
    first = (out / "corrections.jsonl").read_text(encoding="utf-8")
    # An earlier export is replaced whole; no temporary files are left beside it.
    store.record_verdict(call.id, added_key("proactive", 0), "proactive", "add", turn_id=0)
    assert export_corrections(store, out, None) == 2
    assert set(first.splitlines()) < set((out / "corrections.jsonl").read_text(encoding="utf-8").splitlines())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # A folder with other files is refused, and left as it was.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me", encoding="utf-8")
    from pipeline.review.verdicts import ExportError

    with pytest.raises(ExportError, match=r"notes: folder holds other files \(todo.txt"):
        export_corrections(store, other, None)
    assert [p.name for p in other.iterdir()] == ["todo.txt"]


def test_a_reviewed_sentiment_reads_the_outcome_again(store):
    # A call whose customer ends calmly; a reviewer marks the last customer turn negative.
    call = next(c for c in map(store.get_call, store.call_ids())
                if c.outcome and c.outcome.end_sentiment != "negative" and any(t.role == "customer" for t in c.turns))
    last = [t for t in call.turns if t.role == "customer"][-1]
    store.record_verdict(call.id, added_key("sentiment.negative", last.id), "sentiment.negative", "add", turn_id=last.id)
    reviewed = reviewed_call(call, store.verdicts(call.id))
    assert reviewed.outcome.end_sentiment == "negative"
    assert [s.turn_ids for s in reviewed.outcome.signals if s.kind == "ended_negative"] == [[last.id]]
    assert not any(s.kind == "ended_negative" for s in call.outcome.signals)  # the machine's call is untouched
