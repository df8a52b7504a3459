"""How the privacy patterns (configs/privacy.yaml) behave on real text.

Prints, for the real data in ../shared/real (not shipped; research use only):
- recall on the real spoken phone numbers in the AISHELL digit-string recordings'
  reference transcripts (numbers read digit by digit, written in Chinese digits);
- how often ordinary customer-service text is masked (real JD.com chat turns,
  already anonymised by JD, and real food-delivery reviews): everything masked
  there is a false alarm or a leftover number, and each one is listed.

    python benchmarks/privacy_check.py
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config  # noqa: E402
from pipeline.review.privacy import load_privacy  # noqa: E402

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "real"
DIGITS = set("零一二三四五六七八九幺两")


def main() -> None:
    if not REAL.is_dir():
        sys.exit(f"{REAL} not found: this check needs the project's real data folder")
    privacy = load_privacy(load_config())
    spoken = [json.loads(line)["text"] for line in open(REAL / "speech" / "manifest.jsonl", encoding="utf-8")]
    numbers = [t for t in spoken if len(t) >= 7 and sum(ch in DIGITS for ch in t) >= 0.8 * len(t)]
    hit = [t for t in numbers if "*" * 7 in privacy.mask(t)]
    print(f"spoken digit strings (AISHELL references): {len(hit)}/{len(numbers)} masked "
          f"({', '.join(sorted({k for t in numbers for _, _, k in privacy.find(t)}))})")
    sentences = [t for t in spoken if t not in numbers]
    masked_speech = [t for t in sentences if privacy.find(t)]
    print(f"other spoken sentences masked: {len(masked_speech)}/{len(sentences)}")

    chats = [turn["text"] for line in open(REAL / "dialogues" / "jddc2019_sample.jsonl", encoding="utf-8")
             for turn in json.loads(line)["turns"]]
    reviews = [json.loads(line)["text"] for line in open(REAL / "sentiment" / "waimai_sample.jsonl", encoding="utf-8")]
    for name, texts in (("JDDC chat turns", chats), ("waimai reviews", reviews)):
        found = [(t, privacy.find(t)) for t in texts]
        masked = [(t, f) for t, f in found if f]
        kinds = Counter(k for _, f in masked for _, _, k in f)
        print(f"{name}: {len(masked)}/{len(texts)} masked ({100 * len(masked) / len(texts):.2f}%) {dict(kinds)}")
        for text, spans in masked[:15]:
            print("   ", " | ".join(f"{k}:{text[s:e]}" for s, e, k in spans), "  <-", text[:60])


if __name__ == "__main__":
    main()
