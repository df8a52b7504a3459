"""Lexicon tagger: phrase and pattern rules, one YAML file per tag in configs/lexicon/.

Each rule file may have:
  label            the tag it produces
  roles            whose utterances it applies to (agent / customer)
  phrases          substrings that fire anywhere
  words            strings that must also be whole jieba words (so 请 fires in
                   "请稍等" but not inside "申请")
  patterns         regular expressions
  not_after        negators: a hit preceded by one of these within
  negation_window  characters is dropped ("不生气")
  unless_nearby    {window, phrases, after_only}: context that cancels a hit
                   ("这是公司规定，但我可以帮您申请" is not rigid)

Word boundaries come from spaCy's blank Chinese pipeline with the jieba
segmenter and the service-vocabulary dictionary; the Doc's `char_span` is None
exactly when a match cuts through a word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import jieba
import spacy
import yaml

from pipeline.config import config_path
from pipeline.taggers.base import TagHit

jieba.setLogLevel(60)  # jieba prints its cache loading to stderr otherwise


class LexiconError(ValueError):
    pass


@dataclass
class _Rule:
    label: str
    roles: frozenset[str]
    anywhere: re.Pattern | None  # phrases and patterns
    whole_word: re.Pattern | None  # words that must align with token boundaries
    negators: tuple[str, ...]
    negation_window: int
    cancel: re.Pattern | None
    cancel_window: int
    cancel_after_only: bool

    def hits(self, text: str, word_bounds) -> list[TagHit]:
        found = []
        for pattern, needs_bounds in ((self.anywhere, False), (self.whole_word, True)):
            if pattern is None:
                continue
            for m in pattern.finditer(text):
                s, e = m.span()
                if s == e or (needs_bounds and not word_bounds(s, e)):
                    continue
                if self._negated(text, s) or self._cancelled(text, s, e):
                    continue
                found.append(TagHit(self.label, s, e, 1.0, rule=f"{self.label}:{m.group(0)}"))
        return found

    def _negated(self, text: str, start: int) -> bool:
        return any(
            neg in text[max(0, start - self.negation_window - len(neg)) : start]
            for neg in self.negators
        )

    def _cancelled(self, text: str, start: int, end: int) -> bool:
        if self.cancel is None:
            return False
        before = "" if self.cancel_after_only else text[max(0, start - self.cancel_window) : start]
        after = text[end : end + self.cancel_window]
        return bool(self.cancel.search(before) or self.cancel.search(after))


def _alternation(phrases: list[str], patterns: list[str] = ()) -> re.Pattern | None:
    # Longest phrases first so "非常抱歉" wins over "抱歉" at the same position.
    parts = [re.escape(p) for p in sorted(set(phrases), key=len, reverse=True)] + list(patterns)
    return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None


def _load_rule(path: Path) -> _Rule:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise LexiconError(f"{path}: not valid YAML: {err}") from None
    known = {"label", "roles", "phrases", "words", "patterns", "not_after",
             "negation_window", "unless_nearby"}
    unknown = set(spec) - known
    if unknown:
        raise LexiconError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    if "label" not in spec:
        raise LexiconError(f"{path}: missing `label`")
    for i, pattern in enumerate(spec.get("patterns", [])):
        try:
            re.compile(pattern)
        except re.error as err:
            raise LexiconError(f"{path}: pattern {i} {pattern!r} is not a valid regex: {err}") from None
    unless = spec.get("unless_nearby") or {}
    return _Rule(
        label=spec["label"],
        roles=frozenset(spec.get("roles", ["agent", "customer"])),
        anywhere=_alternation(spec.get("phrases", []), spec.get("patterns", [])),
        whole_word=_alternation(spec.get("words", [])),
        negators=tuple(spec.get("not_after", [])),
        negation_window=int(spec.get("negation_window", 2)),
        cancel=_alternation(unless.get("phrases", [])),
        cancel_window=int(unless.get("window", 12)),
        cancel_after_only=bool(unless.get("after_only", False)),
    )


class LexiconTagger:
    """Rule-based tagger over the YAML lexicon. `fit` learns nothing."""

    name = "lexicon"

    def __init__(self, lexicon_dir: str | Path, user_dictionary: str | Path | None = None):
        self.lexicon_dir = Path(lexicon_dir)
        files = sorted(self.lexicon_dir.glob("*.yaml"))
        if not files:
            raise LexiconError(f"{self.lexicon_dir}: no lexicon files (*.yaml) found")
        self.rules = [_load_rule(f) for f in files]
        self.labels = sorted({r.label for r in self.rules})
        self.user_dictionary = Path(user_dictionary) if user_dictionary else None

    @classmethod
    def from_config(cls, config: dict) -> "LexiconTagger":
        tagger_config = config["tagger"]
        return cls(config_path(config, tagger_config["lexicon_dir"]),
                   config_path(config, tagger_config["user_dictionary"]))

    @cached_property
    def nlp(self):
        """spaCy blank Chinese pipeline segmenting with jieba (built on first need)."""
        if self.user_dictionary is not None:
            jieba.load_userdict(str(self.user_dictionary))
        return spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})

    def fit(self, texts: Sequence[str], roles: Sequence[str], label_sets) -> "LexiconTagger":
        return self

    def predict(self, texts: Sequence[str], roles: Sequence[str]) -> list[list[TagHit]]:
        return [self._tag(text, role) for text, role in zip(texts, roles)]

    def _tag(self, text: str, role: str) -> list[TagHit]:
        doc = None

        def word_bounds(start: int, end: int) -> bool:
            nonlocal doc  # segment only when a whole-word rule needs it
            if doc is None:
                doc = self.nlp.make_doc(text)
            return doc.char_span(start, end) is not None

        hits: list[TagHit] = []
        for rule in self.rules:
            if role in rule.roles:
                hits.extend(rule.hits(text, word_bounds))
        return hits
