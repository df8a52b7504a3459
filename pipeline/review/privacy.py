"""Masking personal data in exports: phone numbers, 身份证, bank cards, addresses.

Numbers are found by one recogniser (configs/privacy.yaml documents it): each
character is a digit in any style (0-9, full-width, 一二三/幺/两, 壹贰叁),
a separator, or neither; a run is digits with at most `max_gap` separators
between neighbours, so a number read in groups ("一三八，一二三四，五六七八",
"138、1234、5678", "6222 0212 …") is one run whatever the separator. Runs of
at least `min_digits` digits are classified by their digits (`number_kinds`)
unless a `keep` pattern (hotlines, dates, amounts) matches them. Other personal
data (addresses) are regexes from the same file.

Masking keeps the text's length (each character becomes `mask_char`) so tag
offsets stay valid; the whole run is masked, separators included. It works on
raw and on normalised text alike (both spellings of every separator are
listed). For audio, `silence_spans` turns the masked characters of a turn into
times: from the recognised words' own times where they cover every masked
digit, otherwise in proportion to the characters' position in the turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import ConfigError, config_path
from pipeline.model import Turn
from pipeline.normalize import normalize_text


@dataclass
class NumberRecogniser:
    digit_of: dict[str, str]  # character -> "0".."9"
    check_digit: frozenset[str]  # may end a run, read as "X"
    separators: frozenset[str]
    max_gap: int
    min_digits: int
    kinds: dict[str, re.Pattern]  # matched against the run's digits
    keep: dict[str, re.Pattern]  # matched against the run as written, digits as 0-9

    def runs(self, text: str) -> list[list[tuple[int, int]]]:
        """Every run of digits in the text, as its groups: (start, end) of each stretch
        of digits with no separator inside."""
        found, i, n = [], 0, len(text)
        while i < n:
            if text[i] not in self.digit_of:
                i += 1
                continue
            groups, j = [], i
            while True:
                end = j
                while end < n and text[end] in self.digit_of:
                    end += 1
                if end < n and text[end] in self.check_digit:
                    groups.append((j, end + 1))  # the 身份证 check character ends the run
                    break
                groups.append((j, end))
                gap = end
                while gap < n and text[gap] in self.separators and gap - end < self.max_gap:
                    gap += 1
                if gap == end or gap >= n or text[gap] not in self.digit_of:
                    break
                j = gap
            found.append(groups)
            i = groups[-1][1]
        return found

    def find(self, text: str) -> list[tuple[int, int, str]]:
        found = []
        for groups in self.runs(text):
            for first, last in self._unkept(text, groups):
                start, end = groups[first][0], groups[last][1]
                digits = "".join(self.digit_of.get(ch, "X") for ch in text[start:end] if ch not in self.separators)
                if len(digits.rstrip("X")) < self.min_digits:
                    continue
                kind = self._kind(digits)
                if kind is None and digits.endswith("X"):  # an X after a number that is no 身份证
                    end, kind = end - 1, self._kind(digits[:-1])
                if kind:
                    found.append((start, end, kind))
        return found

    def _unkept(self, text: str, groups: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """(first, last) group indices of the parts of a run no `keep` pattern covers;
        a kept part is whole groups (a date inside "2026-11-16 14:30" is kept, and a
        pattern never takes part of a group)."""
        written = {}

        def kept(a: int, b: int) -> bool:
            key = (a, b)
            if key not in written:
                written[key] = "".join(self.digit_of.get(ch, ch) for ch in text[groups[a][0]:groups[b][1]])
            return any(pattern.fullmatch(written[key]) for pattern in self.keep.values())

        parts, first, i = [], 0, 0
        while i < len(groups):
            j = next((j for j in range(len(groups) - 1, i - 1, -1) if kept(i, j)), None)
            if j is None:
                i += 1
                continue
            if first < i:
                parts.append((first, i - 1))
            first = i = j + 1
        if first < len(groups):
            parts.append((first, len(groups) - 1))
        return parts

    def _kind(self, digits: str) -> str | None:
        return next((k for k, pattern in self.kinds.items() if pattern.fullmatch(digits)), None)


@dataclass
class Privacy:
    numbers: NumberRecogniser
    patterns: dict[str, re.Pattern]
    mask_char: str
    silence_pad: float

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, kind) of every stretch of personal data, in text order (they may overlap)."""
        found = self.numbers.find(text)
        for kind, pattern in self.patterns.items():
            found += [(m.start(), m.end(), kind) for m in pattern.finditer(text) if m.end() > m.start()]
        return sorted(found)

    def mask(self, text: str) -> str:
        chars = list(text)
        for start, end, _ in self.find(text):
            chars[start:end] = self.mask_char * (end - start)
        return "".join(chars)

    def silence_spans(self, turn: Turn) -> list[tuple[float, float]]:
        """Times (seconds from the call start) to silence in the audio of this turn."""
        if turn.start is None or turn.end is None:
            return []
        spans = []
        for start, end, _ in self.find(turn.text):
            times = _word_times(turn, start, end) or _proportional_times(turn, start, end)
            spans.append((max(0.0, times[0] - self.silence_pad), times[1] + self.silence_pad))
        return spans


def _locate(text: str, piece: str, cursor: int) -> tuple[int, int]:
    """Where a recognised word sits in the turn's (normalised) text from `cursor`:
    the word as ASR wrote it, or normalised as the turn was; (-1, 0) if neither."""
    for form in dict.fromkeys((piece, normalize_text(piece))):
        at = text.find(form, cursor) if form else -1
        if at >= 0:
            return at, len(form)
    return -1, 0


def _word_times(turn: Turn, char_start: int, char_end: int) -> tuple[float, float] | None:
    """The times of the recognised words covering the characters; None when the turn
    has no words or they do not cover every letter and digit of the span (then the
    caller falls back to proportions rather than leave part of a number audible).
    Separators between groups need no word of their own."""
    cursor, hits, covered = 0, [], 0
    for word in turn.words:
        at, length = _locate(turn.text, word.text.strip(), cursor)
        if at < 0:
            continue
        cursor = at + length
        overlap = min(cursor, char_end) - max(at, char_start)
        if overlap > 0:
            hits.append(word)
            covered += sum(1 for ch in turn.text[max(at, char_start):min(cursor, char_end)] if ch.isalnum())
    if not hits or covered < sum(1 for ch in turn.text[char_start:char_end] if ch.isalnum()):
        return None
    return min(w.start for w in hits), max(w.end for w in hits)


def _proportional_times(turn: Turn, char_start: int, char_end: int) -> tuple[float, float]:
    length = max(1, len(turn.text))
    duration = turn.end - turn.start
    return turn.start + duration * char_start / length, turn.start + duration * char_end / length


def _compile(path: Path, name: str, source: str) -> re.Pattern:
    try:
        return re.compile(source)
    except re.error as err:
        raise ConfigError(f"{path}: pattern {name!r} is not a valid regex: {err}") from None


def load_privacy(config: dict) -> Privacy:
    path = config_path(config, config.get("privacy", "privacy.yaml"))
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        digit_of = {ch: str(value) for value, chars in data["digits"].items() for ch in str(chars)}
        numbers = NumberRecogniser(
            digit_of=digit_of, check_digit=frozenset(data.get("check_digit", "")),
            separators=frozenset(data["separators"]), max_gap=int(data["max_gap"]),
            min_digits=int(data["min_digits"]),
            kinds={k: _compile(path, k, str(v)) for k, v in data["number_kinds"].items()},
            keep={k: _compile(path, k, str(v)) for k, v in (data.get("keep") or {}).items()})
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the privacy settings: {err}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ConfigError(f"{path}: missing or malformed privacy setting: {err}") from None
    digit_class = "[" + "".join(re.escape(ch) for ch in sorted(digit_of)) + "]"
    tokens = {"{D}": digit_class, "{END}": f"(?!{digit_class})"}
    patterns = {}
    for kind, source in (data.get("patterns") or {}).items():
        expanded = str(source)
        for token, regex in tokens.items():
            expanded = expanded.replace(token, regex)
        patterns[kind] = _compile(path, kind, expanded)
    return Privacy(numbers, patterns, str(data.get("mask_char", "*")), float(data.get("silence_pad", 0.0)))
