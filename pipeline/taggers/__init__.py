"""Utterance taggers. Every tagger has the same fit/predict shape (see `base`),
so the lexicon tagger, the BERT tagger and their ensemble are interchangeable."""

from pipeline.taggers.base import TagHit, Tagger, tag_call, predict_label_sets

__all__ = ["TagHit", "Tagger", "tag_call", "predict_label_sets", "load_tagger"]


def load_tagger(config: dict) -> Tagger:
    """Build the tagger named by `config["tagger"]["kind"]` (lexicon | bert | ensemble)."""
    kind = config["tagger"]["kind"]
    if kind == "lexicon":
        from pipeline.taggers.lexicon import LexiconTagger

        return LexiconTagger.from_config(config)
    if kind == "bert":
        from pipeline.taggers.bert import BertTagger

        return BertTagger.from_config(config)
    if kind == "ensemble":
        from pipeline.taggers.ensemble import EnsembleTagger

        return EnsembleTagger.from_config(config)
    raise ValueError(f"unknown tagger kind {kind!r}; expected lexicon, bert or ensemble")
