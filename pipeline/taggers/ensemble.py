"""Ensemble of the lexicon tagger and the BERT tagger.

Two ways to combine them (both measured in docs/tagger_evaluation.md):

- "union": every lexicon hit, plus the BERT labels the lexicon did not find.
- "per_label": for the labels in `bert_labels` BERT decides whether the label
  is there and the lexicon only says where (its spans are kept when both agree,
  else the whole utterance); every other label comes from the lexicon alone.
  `bert_labels` are the labels where BERT scored better on the dev split
  (`pipeline.training.evaluate.choose_bert_labels`), set in configs/pipeline.yaml.
"""

from __future__ import annotations

from typing import Sequence

from pipeline.taggers.base import TagHit, Tagger


class EnsembleTagger:
    MODES = ("union", "per_label")

    def __init__(self, lexicon: Tagger, bert: Tagger, mode: str = "per_label",
                 bert_labels: Sequence[str] | None = None):
        if mode not in self.MODES:
            raise ValueError(f"unknown ensemble mode {mode!r}; expected one of {self.MODES}")
        if mode == "per_label" and bert_labels is None:
            raise ValueError("ensemble mode per_label needs bert_labels (the labels BERT decides)")
        self.lexicon, self.bert, self.mode = lexicon, bert, mode
        self.bert_labels = frozenset(bert_labels or ())
        self.name = f"ensemble-{mode}"

    @classmethod
    def from_config(cls, config: dict) -> "EnsembleTagger":
        from pipeline.taggers.bert import BertTagger
        from pipeline.taggers.lexicon import LexiconTagger

        settings = config["tagger"].get("ensemble", {})
        return cls(LexiconTagger.from_config(config), BertTagger.from_config(config),
                   mode=settings.get("mode", "per_label"), bert_labels=settings.get("bert_labels"))

    def fit(self, texts, roles, label_sets) -> "EnsembleTagger":
        self.lexicon.fit(texts, roles, label_sets)
        self.bert.fit(texts, roles, label_sets)
        return self

    def predict(self, texts: Sequence[str], roles: Sequence[str]) -> list[list[TagHit]]:
        lexicon_hits = self.lexicon.predict(texts, roles)
        bert_hits = self.bert.predict(texts, roles)
        return [self._combine(lex, bert) for lex, bert in zip(lexicon_hits, bert_hits)]

    def _combine(self, lexicon: list[TagHit], bert: list[TagHit]) -> list[TagHit]:
        lexicon_labels = {h.label for h in lexicon}
        if self.mode == "union":
            return lexicon + [h for h in bert if h.label not in lexicon_labels]
        kept = [h for h in lexicon if h.label not in self.bert_labels]
        for hit in bert:
            if hit.label not in self.bert_labels:
                continue
            spans = [h for h in lexicon if h.label == hit.label]
            kept += [TagHit(h.label, h.char_start, h.char_end, hit.confidence, h.rule) for h in spans] or [hit]
        return kept
