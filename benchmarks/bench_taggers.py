"""Tagging throughput (utterances per second) of the lexicon and BERT taggers.

    python benchmarks/bench_taggers.py --threads 2

Tags the held-out test utterances of data/tagger/dataset (agent and customer,
repeated to --n utterances) with each tagger, then, when ../shared/real is beside
the checkout, the real JD.com chat turns (longer: BERT tags them window by window).
BERT is measured in float32 and with torch dynamic int8 quantisation (linear
layers except the feed-forward outputs), at each --batch-sizes (forward-pass
size; utterances sorted by length). Times include placing each tag on its
clause. The lexicon tagger works one utterance at a time, so batch size does not
apply to it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def throughput(tagger, texts: list[str], roles: list[str]) -> float:
    tagger.predict(texts[:64], roles[:64])  # warm-up: lazy loading, allocator
    started = time.perf_counter()
    tagger.predict(texts, roles)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--n", type=int, default=1000, help="utterances per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "tagger")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from pipeline.normalize import normalize_text
    from pipeline.taggers.bert import BertTagger
    from pipeline.training.data import load_dataset
    from pipeline.training.evaluate import REAL_CHATS

    torch.set_num_threads(args.threads)
    sets = {"held-out test utterances": list(load_dataset()["test"])}
    if REAL_CHATS.exists():
        sets["real JD.com chat turns"] = [{"text": normalize_text(t["text"]), "role": t["role"]}
                                          for line in REAL_CHATS.read_text(encoding="utf-8").splitlines()
                                          for t in json.loads(line)["turns"] if t["text"].strip()]
    try:
        from pipeline.config import load_config
        from pipeline.taggers.lexicon import LexiconTagger

        lexicon = LexiconTagger.from_config(load_config())
    except ImportError:
        lexicon = None
        print("lexicon tagger not in this checkout; skipped")
    bert = BertTagger.from_pretrained(args.model)
    taggers = (("bert-fp32", bert), ("bert-int8", bert.quantized()))
    for title, rows in sets.items():
        rows = (rows * (args.n // len(rows) + 1))[: args.n]
        texts, roles = [r["text"] for r in rows], [r["role"] for r in rows]
        mean_chars = sum(map(len, texts)) / len(texts)
        print(f"{title}: {len(texts)} (mean {mean_chars:.1f} characters), torch threads {args.threads}, "
              f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
        if lexicon is not None:
            print(f"  {'lexicon':<12} batch n/a  {throughput(lexicon, texts, roles):8.1f} utt/s")
        for name, tagger in taggers:
            for batch_size in args.batch_sizes:
                tagger.batch_size = batch_size
                print(f"  {name:<12} batch {batch_size:<4} {throughput(tagger, texts, roles):8.1f} utt/s")


if __name__ == "__main__":
    main()
