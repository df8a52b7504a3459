"""`callqa calibrate`: scorecard points and weights fitted to human QA scores.

(a) End to end on real human judgements: the STC-3 Weibo helpdesk dialogues
(../shared/real, research data, skipped when absent) scored by the real CLI,
their mean customer satisfaction imported as the human total, then calibrated.
This checks the direction and the mechanics only: the shipped scorecard is a
phone-call scorecard and is never fitted to this text chat.
(b) A case with a known answer: human scores produced by a scorecard with other
points than the one calibrated; the fit must move the points toward them."""

from __future__ import annotations

import json
import random
import re
from string import Template

import pytest

from pipeline.cli import main
from pipeline.config import config_path, load_config
from pipeline.model import Call, Event, Tag, Turn
from pipeline.review.store import Store
from pipeline.scorecard import load_scorecard, score_call
from tests.conftest import REAL_DATA

STC3 = REAL_DATA / "dialogues" / "stc3_dev.jsonl"
NUMBER = re.compile(r"[-+]?\d+(\.\d+)?")


def changed_only_numbers(old: str, new: str) -> None:
    body = [line for line in new.splitlines() if not line.startswith("# [calibrated] ")]
    assert new.startswith("# [calibrated] ") and len(body) == len(old.splitlines())
    for before, after in zip(old.splitlines(), body):
        if before.startswith("version:"):
            assert after.startswith("version:") and "-cal" in after
        else:
            assert NUMBER.sub("N", before) == NUMBER.sub("N", after), (before, after)


def agreement_row(printed: str, target: str) -> tuple[float, float, float, float]:
    """(Spearman before, after, mean abs diff before, after) from the printed table."""
    row = next(line.split() for line in printed.splitlines() if line.split()[:1] == [target])
    return tuple(float(x) for x in row[2:6])


@pytest.mark.slow
@pytest.mark.skipif(not STC3.exists(), reason="real data folder not present")
def test_calibrate_end_to_end_on_real_stc3_judgements(tmp_path, capsys):
    calls, sheet = tmp_path / "calls", ["call_id,total"]
    calls.mkdir()
    for line in STC3.read_text(encoding="utf-8").splitlines():
        dialogue = json.loads(line)
        turns = [{"role": t["role"], "text": t["text"]} for t in dialogue["turns"] if t["text"].strip()]
        (calls / f"{dialogue['id']}.json").write_text(json.dumps({"id": dialogue["id"], "turns": turns},
                                                                 ensure_ascii=False), encoding="utf-8")
        satisfaction = dialogue["quality_mean"]["S"]  # -2..2, mean of 19 judges
        sheet.append(f"{dialogue['id']},{(satisfaction + 2) * 25:.2f}")
    (tmp_path / "human.csv").write_text("\n".join(sheet) + "\n", encoding="utf-8")
    lexicon = tmp_path / "lexicon.yaml"  # the fast tagger; calibration itself needs no tagger
    lexicon.write_text("tagger:\n  kind: lexicon\n", encoding="utf-8")
    store, out = tmp_path / "out" / "callqa.db", tmp_path / "calibrated.yaml"
    source = config_path(load_config(lexicon), load_config(lexicon)["scorecard"])
    original = source.read_text(encoding="utf-8")

    assert main(["score", str(calls), "--out", str(tmp_path / "out"), "--config", str(lexicon), "--quiet"]) == 0
    assert main(["human-scores", str(tmp_path / "human.csv"), "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--store", str(store), "--config", str(lexicon), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    print(printed)

    rho_before, rho_after, mae_before, mae_after = agreement_row(printed, "total")
    assert rho_after >= rho_before and mae_after < mae_before  # held out, scored by the real code
    assert source.read_text(encoding="utf-8") == original  # the input scorecard is left alone
    calibrated = load_scorecard(out)
    changed_only_numbers(original, out.read_text(encoding="utf-8"))
    before = load_scorecard(source)
    assert f"{mae_before:.1f} -> {mae_after:.1f}" in out.read_text(encoding="utf-8")
    assert abs(sum(d.weight for d in calibrated.dimensions.values()) - 1.0) < 1e-9
    for old, new in zip(before.rules, calibrated.rules):
        assert new.id == old.id and new.points >= 0
        if old.severity == "critical":
            assert new.points == old.points
        elif old.max_points:  # points and cap move together
            assert new.max_points == pytest.approx(old.max_points * new.points / old.points, abs=0.2)


# --- (b) a known answer ------------------------------------------------------------

SCORECARD = Template("""\
# A small scorecard for the test: two dimensions, rules of every kind of number.
name: 合成
version: "1"
grades:
  - {grade: 优秀, min: 90}
  - {grade: 不合格, min: 0}
dimensions:
  listening:  {label: 倾听, weight: 0.50}
  expression: {label: 表达, weight: 0.50}
rules:
  - id: listening.interruption
    dimension: listening
    type: penalty
    points: $interruption      # per occurrence
    max_points: $interruption_cap
    when: {event: interruption}
  - id: listening.confirmation
    dimension: listening
    type: required
    points: $confirmation
    when: {tag: confirmation, role: agent}
  - id: listening.acknowledgement
    dimension: listening
    type: bonus
    points: 2
    max_points: 4
    when: {tag: backchannel, role: agent}
  - id: expression.rigid
    dimension: expression
    type: penalty
    points: $rigid
    max_points: $rigid_cap
    when: {tag: rigid, role: agent}
  - id: expression.polite
    dimension: expression
    type: required
    points: $polite
    when: {tag: polite, role: agent}
  - id: expression.forbidden
    dimension: expression
    type: penalty
    severity: critical
    points: 100
    when: {tag: impatient, role: agent}
""")
START = dict(interruption=10, interruption_cap=30, confirmation=15, rigid=10, rigid_cap=30, polite=10)
TRUTH = dict(interruption=20, interruption_cap=60, confirmation=5, rigid=4, rigid_cap=12, polite=20)


def synthetic_call(rng: random.Random, number: int) -> Call:
    """A call with a random mix of the behaviours the scorecard scores."""
    turns, tags, events = [], [], []
    for i in range(8):
        role = "customer" if i % 2 == 0 else "agent"
        turns.append(Turn(id=i, role=role, text=f"第{i}句话", start=i * 5.0, end=i * 5.0 + 4.5))
    agent_turns = [t.id for t in turns if t.role == "agent"]
    for label, chance in (("confirmation", 0.5), ("polite", 0.6), ("backchannel", 0.4), ("rigid", 0.25),
                          ("impatient", 0.02)):
        for turn_id in agent_turns:
            if rng.random() < chance / 2:
                tags.append(Tag(label=label, turn_id=turn_id, char_start=0, char_end=2, text="第"))
    for turn_id in rng.sample(agent_turns, rng.choice([0, 0, 1, 1, 2, 3])):
        events.append(Event(kind="interruption", role="agent", start=turn_id * 5.0 - 0.5, end=turn_id * 5.0,
                            turn_ids=[turn_id - 1, turn_id], value=0.5))
    return Call(id=f"synthetic_{number:03d}", turns=turns, tags=tags, events=events, date="2026-11-16")


def test_calibrate_moves_points_toward_the_scorecard_the_reviewers_used(tmp_path, capsys):
    start_path, truth_path = tmp_path / "start.yaml", tmp_path / "truth.yaml"
    start_path.write_text(SCORECARD.substitute(START), encoding="utf-8")
    truth_path.write_text(SCORECARD.substitute(TRUTH).replace("0.50}\n  expression: {label: 表达, weight: 0.50",
                                                            "0.60}\n  expression: {label: 表达, weight: 0.40"),
                          encoding="utf-8")
    start, truth = load_scorecard(start_path), load_scorecard(truth_path)
    assert truth.dimensions["listening"].weight == 0.6  # the upper bound of calibration.weight
    config = tmp_path / "pipeline.yaml"
    config.write_text("scorecard: start.yaml\n", encoding="utf-8")

    rng = random.Random(7)
    db = str(tmp_path / "callqa.db")
    store = Store(db)
    sheet = ["call_id,倾听,表达,总分"]
    for number in range(80):
        call = synthetic_call(rng, number)
        human = score_call(call.model_copy(deep=True), truth).scores  # what the reviewers would give
        noise = [rng.gauss(0, 2) for _ in range(3)]
        sheet.append(f"{call.id},{human.dimensions['listening'].score + noise[0]:.1f},"
                     f"{human.dimensions['expression'].score + noise[1]:.1f},{human.total + noise[2]:.1f}")
        store.save_call(score_call(call, start), "sha", "v")
    (tmp_path / "qa.csv").write_text("\n".join(sheet) + "\n", encoding="utf-8")
    assert main(["human-scores", str(tmp_path / "qa.csv"), "--store", db,
                 "--config", str(config)]) == 0
    out = tmp_path / "calibrated.yaml"
    capsys.readouterr()
    assert main(["calibrate", "--store", db, "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    print(printed)

    fitted = {r.id: r for r in load_scorecard(out).rules}
    for rule in truth.rules:
        old = next(r for r in start.rules if r.id == rule.id)
        if rule.points != old.points:
            assert abs(fitted[rule.id].points - rule.points) < abs(old.points - rule.points) / 2, rule.id
    assert fitted["expression.forbidden"].points == 100  # critical: untouched
    weights = load_scorecard(out).dimensions
    assert weights["listening"].weight >= 0.57 and weights["expression"].weight <= 0.43
    for target in ("total", "listening", "expression"):
        rho_before, rho_after, mae_before, mae_after = agreement_row(printed, target)
        assert mae_after < 0.7 * mae_before and rho_after > rho_before, target
    changed_only_numbers(start_path.read_text(encoding="utf-8"), out.read_text(encoding="utf-8"))

    # Fitting one dimension leaves the other dimension's rules and the weights alone.
    assert main(["calibrate", "--store", db, "--config", str(config), "--out", str(out),
                 "--target", "expression"]) == 0
    one = load_scorecard(out)
    assert [r.points for r in one.rules if r.dimension == "listening"] == [10, 15, 2]
    assert one.dimensions["listening"].weight == 0.5
    assert abs(next(r for r in one.rules if r.id == "expression.polite").points - 20) < 5

    # Bounds in the scorecard's own calibration block hold.
    start_path.write_text(start_path.read_text(encoding="utf-8") + "calibration:\n  factor: [0.5, 1.5]\n"
                          "  rules:\n    expression.polite: [10, 12]\n", encoding="utf-8")
    assert main(["calibrate", "--store", db, "--config", str(config), "--out", str(out)]) == 0
    bounded = {r.id: r.points for r in load_scorecard(out).rules}
    assert bounded["expression.polite"] == 12 and bounded["listening.interruption"] == 15
    assert 7.5 <= bounded["listening.confirmation"] < 15
    start_path.write_text(start_path.read_text(encoding="utf-8").replace("[10, 12]", "[12, 10]"), encoding="utf-8")
    assert main(["calibrate", "--store", db, "--config", str(config), "--out", str(out)]) == 2
    assert "start.yaml: calibration, line 48: rules: expression.polite: expected [min, max]" in capsys.readouterr().err


def test_calibrate_refuses_what_it_cannot_fit(tmp_path, capsys):
    rng = random.Random(1)
    scorecard = load_scorecard(config_path(load_config(), load_config()["scorecard"]))
    store = Store(tmp_path / "callqa.db")
    for number in range(25):
        store.save_call(score_call(synthetic_call(rng, number), scorecard), "sha", "v")
    path = str(tmp_path / "callqa.db")
    run = ["calibrate", "--store", path, "--out", str(tmp_path / "new.yaml")]

    assert main(run) == 2
    assert "no human scores in" in capsys.readouterr().err
    store.import_human_scores([(f"synthetic_{n:03d}", "total", 80.0) for n in range(10)], "qa.csv")
    assert main(run) == 2
    assert "only 10 call(s)" in capsys.readouterr().err
    store.import_human_scores([(f"synthetic_{n:03d}", "total", 70.0 + n) for n in range(25)], "qa.csv")
    assert main(run + ["--target", "no_such_dimension"]) == 2
    assert "not a dimension" in capsys.readouterr().err
    assert main(run + ["--folds", "1"]) == 2
    assert "--folds must be at least 2" in capsys.readouterr().err
    store.import_human_scores([("synthetic_000", "courtesy", 70.0)], "other.csv")
    assert main(run) == 2
    assert "'courtesy', which the scorecard" in capsys.readouterr().err
    assert not (tmp_path / "new.yaml").exists()
