"""Text normalisation applied to every utterance before tagging.

- Traditional characters become Simplified (OpenCC t2s), so one lexicon serves both.
- Full-width letters and digits become ASCII; sentence punctuation becomes the
  full-width Chinese form, so patterns need only one spelling of "，" or "？".
- ASR output often has spaces where a speaker paused and no punctuation at all:
  a space between Chinese characters becomes "，".
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from opencc import OpenCC

_HALF_TO_FULL_PUNCT = str.maketrans({",": "，", "?": "？", "!": "！", ";": "；", ":": "："})
_CJK = r"\u3400-\u9fff"
_SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")
_PERIOD_AFTER_CJK = re.compile(rf"(?<=[{_CJK}])\.(?!\d)")
_SPACES = re.compile(r"\s+")
_PUNCT_RUN = re.compile(r"([，。])[，。]+")
_PUNCTUATION = re.compile(r"[\s，。？！、；：“”‘’（）《》【】…—,.?!;:'\"()\[\]<>~\-]+")


@lru_cache(maxsize=1)
def _t2s() -> OpenCC:
    return OpenCC("t2s")


def to_simplified(text: str) -> str:
    return _t2s().convert(text)


def _fold_width(text: str) -> str:
    # NFKC folds full-width ASCII (Ａ１) to half-width, but it would also turn "，"
    # into ","; fold only the letters and digits.
    return "".join(
        unicodedata.normalize("NFKC", ch) if "\uff10" <= ch <= "\uff5a" else ch for ch in text
    )


def normalize_text(text: str) -> str:
    """Normalise one utterance (see the module docstring)."""
    text = to_simplified(_fold_width(text.replace("\u3000", " ")))
    text = _SPACE_BETWEEN_CJK.sub("，", text.strip())
    text = _PERIOD_AFTER_CJK.sub("。", text)
    text = _SPACES.sub(" ", text.translate(_HALF_TO_FULL_PUNCT))
    return _PUNCT_RUN.sub(r"\1", text)


def spoken_text(text: str) -> str:
    """The text with punctuation and spaces removed: what is actually said."""
    return _PUNCTUATION.sub("", text)


def count_spoken_chars(text: str) -> int:
    """Characters that are spoken: the unit of 字/分钟."""
    return len(spoken_text(text))


def bigrams(text: str) -> set[str]:
    """The character bigrams of what is said: a cheap measure of shared wording."""
    said = spoken_text(text)
    return {said[i:i + 2] for i in range(len(said) - 1)}


def overlap(a: str, b: str) -> float:
    """Share of the shorter text's character bigrams that the other also has."""
    x, y = bigrams(a), bigrams(b)
    return len(x & y) / min(len(x), len(y)) if x and y else 0.0
