"""The evaluation command (benchmarks/score_agreement.py) on the development
set in data/scorecard_dev, through the same Scorer as `callqa score`. Run with
the lexicon tagger, whose hits are fixed by its word lists; the thresholds are
what this scorecard reaches with it, less a small margin (README, Measured)."""

import pytest

from benchmarks.score_agreement import DEV, REAL, build_scorer, evaluate, main, print_report


@pytest.fixture(scope="module")
def lexicon_scorer():
    return build_scorer("lexicon", None)


def share(hits_total):
    hits, total = hits_total
    return hits / total


@pytest.mark.slow
def test_pairs_and_verdicts_on_the_development_set(lexicon_scorer, tmp_path):
    results = evaluate(lexicon_scorer, DEV, real=tmp_path)  # real data left out: its own test below
    assert set(results) == {"pairs", "calls"}
    assert share(results["pairs"]["overall"]) >= 0.85
    for dimension, counts in results["pairs"]["per_dimension"].items():
        assert share(counts) >= 0.80, dimension
    for dimension, counts in results["calls"]["per_dimension"].items():
        assert share(counts) >= 0.80, dimension


def test_a_slice_prints_every_section(capsys, tmp_path):
    assert main(["--tagger", "lexicon", "--limit", "6", "--real", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Minimal pairs" in out and "Timed calls" in out and "overall" in out


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / "dialogues" / "stc3_dev.jsonl").exists(), reason="needs ../shared/real")
def test_scores_move_with_human_judges_on_real_dialogues(lexicon_scorer, tmp_path):
    results = evaluate(lexicon_scorer, tmp_path, REAL)
    stc3 = results["stc3"]
    assert stc3["total"]["S"] > 0 and stc3["empathy"]["S"] > 0 and stc3["resolution"]["S"] > 0.3
    print_report(results)


def test_a_bad_scorecard_is_reported(tmp_path, capsys):
    bad = tmp_path / "sc.yaml"
    bad.write_text("rules: []\n", encoding="utf-8")
    assert main(["--tagger", "lexicon", "--scorecard", str(bad), "--limit", "1"]) == 2
    assert "sc.yaml" in capsys.readouterr().err
