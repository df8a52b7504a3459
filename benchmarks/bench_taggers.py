"""Tagging throughput (utterances per second) of the lexicon and BERT taggers.

    python benchmarks/bench_taggers.py --threads 2

Tags the held-out test utterances of data/tagger/dataset (agent and customer,
repeated to --n utterances) with each tagger. BERT is measured in float32 and
with torch dynamic int8 quantisation of its linear layers, at each --batch-sizes
(utterances per forward pass, sorted by length within the call). The lexicon
tagger works one utterance at a time, so batch size does not apply to it.
"""

from __future__ import annotations

import argparse
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

    from pipeline.taggers.bert import BertTagger
    from pipeline.training.data import load_dataset

    torch.set_num_threads(args.threads)
    rows = list(load_dataset()["test"])
    rows = (rows * (args.n // len(rows) + 1))[: args.n]
    texts, roles = [r["text"] for r in rows], [r["role"] for r in rows]
    mean_chars = sum(map(len, texts)) / len(texts)
    print(f"{len(texts)} utterances (mean {mean_chars:.1f} characters), torch threads {args.threads}, "
          f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    try:
        from pipeline.config import load_config
        from pipeline.taggers.lexicon import LexiconTagger

        lexicon = LexiconTagger.from_config(load_config())
        print(f"{'lexicon':<12} batch n/a  {throughput(lexicon, texts, roles):8.1f} utt/s")
    except ImportError:
        print("lexicon tagger not in this checkout; skipped")
    bert = BertTagger.from_pretrained(args.model)
    for name, tagger in (("bert-fp32", bert), ("bert-int8", bert.quantized())):
        for batch_size in args.batch_sizes:
            tagger.batch_size = batch_size
            print(f"{name:<12} batch {batch_size:<4} {throughput(tagger, texts, roles):8.1f} utt/s")


if __name__ == "__main__":
    main()
