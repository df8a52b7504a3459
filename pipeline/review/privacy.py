"""Masking personal data in exports: phone numbers, 身份证, bank cards, addresses.

The patterns are in configs/privacy.yaml (documented there). Masking keeps the
text's length (each character becomes `mask_char`) so tag offsets stay valid.
For audio, `silence_spans` turns the masked characters of a turn into times:
from the recognised words' own times where the turn has them, otherwise in
proportion to the characters' position in the turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import ConfigError, config_path
from pipeline.model import Turn


@dataclass
class Privacy:
    patterns: dict[str, re.Pattern]
    mask_char: str
    silence_pad: float

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, kind) of every stretch of personal data, in text order."""
        found: list[tuple[int, int, str]] = []
        for kind, pattern in self.patterns.items():
            for match in pattern.finditer(text):
                start, end = match.span()
                if end > start and not any(s < end and start < e for s, e, _ in found):
                    found.append((start, end, kind))
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


def _word_times(turn: Turn, char_start: int, char_end: int) -> tuple[float, float] | None:
    """The times of the recognised words covering the characters; None when the turn
    has no words or they do not line up with every character (then the caller falls
    back to proportions rather than leave part of a number audible)."""
    cursor, hits, covered = 0, [], 0
    for word in turn.words:
        piece = word.text.strip()
        at = turn.text.find(piece, cursor) if piece else -1
        if at < 0:
            continue
        cursor = at + len(piece)
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


def load_privacy(config: dict) -> Privacy:
    path = config_path(config, config.get("privacy", "privacy.yaml"))
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the privacy patterns: {err}") from None
    digit, separator = data["digit"], data["separator"]
    tokens = {"{START}": f"(?<!{digit})(?<!{digit}{separator})", "{END}": f"(?!{separator}?{digit})",
              "{D}": digit, "{S}": f"{separator}?"}
    patterns = {}
    for kind, source in (data.get("patterns") or {}).items():
        expanded = str(source)
        for token, regex in tokens.items():
            expanded = expanded.replace(token, regex)
        try:
            patterns[kind] = re.compile(expanded)
        except re.error as err:
            raise ConfigError(f"{path}: pattern {kind!r} is not a valid regex: {err}") from None
    return Privacy(patterns, str(data.get("mask_char", "*")), float(data.get("silence_pad", 0.0)))
