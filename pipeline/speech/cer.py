"""Character error rate of a Chinese transcript against a reference.

Both sides are normalised first: Traditional -> Simplified, punctuation and
spaces removed, Latin letters lower-cased. References write numbers in Chinese
characters (二十九度, 一三零零二五九八四八二) where Whisper writes Arabic digits;
each run of digits in the hypothesis is rewritten the way that best matches the
reference: digit by digit, or read as a number.
"""

from __future__ import annotations

import re

from opencc import OpenCC

_t2s = OpenCC("t2s")
_NOT_TEXT = re.compile(r"[^\w%]|_", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?%?")
DIGITS = "零一二三四五六七八九"
CHINESE_DIGIT_CHARS = set(DIGITS + "幺两")


def normalize(text: str) -> str:
    return _NOT_TEXT.sub("", _t2s.convert(text)).lower()


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def cer(hypothesis: str, reference: str) -> tuple[int, int]:
    """(edits, reference length) after normalisation, numbers matched to the reference's style."""
    reference = normalize(reference)
    hypothesis = normalize(hypothesis)
    # Rewrite digit runs one at a time, keeping whichever reading is closest to the reference.
    while match := _NUMBER.search(hypothesis):
        candidates = [hypothesis[: match.start()] + reading + hypothesis[match.end() :] for reading in number_readings(match.group())]
        hypothesis = min(candidates, key=lambda c: edit_distance(c, reference))
    return edit_distance(hypothesis, reference), len(reference)


def number_readings(number: str) -> list[str]:
    """Ways a Chinese speaker reads an Arabic number: digit by digit, or as a quantity."""
    percent = number.endswith("%")
    number = number.rstrip("%")
    whole, _, fraction = number.partition(".")
    by_digit = "".join(DIGITS[int(d)] for d in whole)
    as_quantity = read_integer(int(whole))
    readings = []
    for reading in dict.fromkeys([by_digit, as_quantity, as_quantity.replace("二千", "两千").replace("二百", "两百")]):
        if fraction:
            reading += "点" + "".join(DIGITS[int(d)] for d in fraction)
        readings.append("百分之" + reading if percent else reading)
    return readings


def read_integer(value: int) -> str:
    """12 -> 十二, 305 -> 三百零五, 20008 -> 二万零八."""
    if value == 0:
        return "零"
    text = ""
    for unit_value, unit in ((100_000_000, "亿"), (10_000, "万")):
        if value >= unit_value:
            text += _read_below_10000(value // unit_value) + unit
            value %= unit_value
            if 0 < value < unit_value // 10:
                text += "零"
    text += _read_below_10000(value) if value else ""
    return text


def _read_below_10000(value: int) -> str:
    text, pending_zero = "", False
    for unit_value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = value // unit_value % 10
        if digit == 0:
            pending_zero = bool(text)
            continue
        if pending_zero:
            text += "零"
            pending_zero = False
        text += ("" if digit == 1 and unit == "十" and not text else DIGITS[digit]) + unit
    return text
