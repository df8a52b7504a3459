"""The BERT tagger: a fine-tuned encoder that labels utterances, placing each
tag on the clause that carries it.

One shared encoder (multilingual-e5-small, pruned to a Chinese vocabulary, see
`pipeline.training.build_base`) with two heads on the mean-pooled tokens:
a multi-label head for the agent tags (sigmoid, one threshold per tag tuned on
the dev split) and a 3-way sentiment head (softmax). The speaker's role is
given to the model as a text prefix, because the same words mean different
things from an agent and from a customer.

A model folder holds:
    config.json        the encoder's shape (transformers BertConfig)
    tokenizer.json     the pruned sentencepiece tokenizer
    model.safetensors  encoder + heads, float16
    tagger.json        tag names, thresholds, max length, training provenance
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm import tqdm

from pipeline.model import AGENT_TAGS, SENTIMENTS
from pipeline.taggers.base import TagHit

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent.parent / "models" / "tagger"
MODEL_FILES = ("config.json", "tokenizer.json", "model.safetensors", "tagger.json")
FEED_FORWARD_OUTPUT = re.compile(r"layer\.\d+\.output\.dense$")  # not the attention output
ROLE_PREFIX = {"agent": "客服：", "customer": "客户：", "unknown": ""}
# Long turns (chat agents paste several sentences) are tagged window by window:
# the model was trained on 1-3 clause utterances, truncation would drop the end
# of a turn (where closings are), and a window is a finer evidence span.
SENTENCE_MARKS, CLAUSE_MARKS = "。！？!?；;~～…\n", "，,、：:"
SENTENCE_END = re.compile(f"[{SENTENCE_MARKS}]+|\\s+")
CLAUSE_END = re.compile(f"[{CLAUSE_MARKS}]+")
CLAUSE_OR_SENTENCE_END = re.compile(f"{SENTENCE_END.pattern}|{CLAUSE_END.pattern}")
_EDGE = re.compile(f"[{SENTENCE_MARKS}{CLAUSE_MARKS}.]|\\s")  # trimmed off a clause's ends


def inference_rules(settings: dict) -> dict:
    """How window outputs become turn tags (`inference` in tagger.json); model
    folders trained before these rules existed take them from the recipe,
    configs/tagger_training.yaml."""
    if "inference" in settings:
        return settings["inference"]
    import yaml

    from pipeline.config import CONFIG_DIR

    recipe = yaml.safe_load((CONFIG_DIR / "tagger_training.yaml").read_text(encoding="utf-8"))
    return recipe["inference"]


class ModelFileError(RuntimeError):
    """A model file is missing or unreadable; the message names the file."""


class TaggerNet(nn.Module):
    def __init__(self, config, n_tags: int = len(AGENT_TAGS), n_sentiments: int = len(SENTIMENTS)):
        super().__init__()
        from transformers import BertModel

        self.encoder = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.tag_head = nn.Linear(config.hidden_size, n_tags)
        self.sentiment_head = nn.Linear(config.hidden_size, n_sentiments)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        # e5's pooled vectors are tiny (mean |x| ~0.15): rescale to unit variance
        # per dimension so the heads learn at an ordinary learning rate.
        pooled = nn.functional.normalize(pooled, dim=-1) * pooled.shape[-1] ** 0.5
        pooled = self.dropout(pooled)
        return self.tag_head(pooled), self.sentiment_head(pooled)


def load_tokenizer(path: Path, max_length: int):
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception on bad JSON
        raise ModelFileError(f"{path}: cannot read tokenizer ({err})") from None
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("<pad>"), pad_token="<pad>")
    return tokenizer


def encode(tokenizer, texts: Sequence[str], roles: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encodings = tokenizer.encode_batch([ROLE_PREFIX.get(r, "") + t for t, r in zip(texts, roles)])
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
    return ids, mask


def windows(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Character spans covering `text`: sentences, merged while they fit in
    `max_chars`; a longer sentence is cut at commas, a longer clause every
    `max_chars` characters."""
    pieces = []
    for start, end in _cut(text, 0, len(text), SENTENCE_END):
        if end - start <= max_chars:
            pieces.append((start, end))
            continue
        for clause_start, clause_end in _cut(text, start, end, CLAUSE_END):
            pieces += [(i, min(i + max_chars, clause_end)) for i in range(clause_start, clause_end, max_chars)]
    spans: list[tuple[int, int]] = []
    for start, end in pieces:
        if spans and end - spans[-1][0] <= max_chars:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans or [(0, len(text))]


def _cut(text: str, start: int, end: int, boundary: re.Pattern) -> list[tuple[int, int]]:
    """text[start:end] cut just after each boundary match (the punctuation stays
    with the sentence it ends)."""
    spans, last = [], start
    for match in boundary.finditer(text, start, end):
        if match.end() > last:
            spans.append((last, match.end()))
            last = match.end()
    if last < end:
        spans.append((last, end))
    return spans


def _clauses(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The clauses of text[start:end], without their punctuation."""
    spans = [_trim(text, a, b) for a, b in _cut(text, start, end, CLAUSE_OR_SENTENCE_END)]
    return [(a, b) for a, b in spans if b > a]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without punctuation or spaces at either end (kept whole if that is all it has)."""
    a, b = start, end
    while a < b and _EDGE.match(text[a]):
        a += 1
    while b > a and _EDGE.match(text[b - 1]):
        b -= 1
    return (a, b) if b > a else (start, end)


class BertTagger:
    """Tagger interface (see `pipeline.taggers.base`) over a fine-tuned TaggerNet."""

    name = "bert"

    def __init__(self, net: TaggerNet, tokenizer, settings: dict, model_dir: Path | None = None):
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.model_dir = model_dir
        self.tags: list[str] = settings["tags"]
        self.thresholds = torch.tensor([settings["thresholds"][t] for t in self.tags])
        self.batch_size = settings.get("batch_size", 64)
        self.window_chars = settings.get("window_chars", 40)
        self.inference = inference_rules(settings)

    @classmethod
    def from_pretrained(cls, path: str | Path = DEFAULT_MODEL_DIR, quantize: bool = False) -> "BertTagger":
        """Load a model folder written by `save`. `quantize`: the int8 model of
        `quantized()`, for faster CPU inference."""
        from safetensors.torch import load_file
        from transformers import BertConfig

        model_dir = Path(path)
        for name in MODEL_FILES:
            if not (model_dir / name).is_file():
                raise ModelFileError(f"{model_dir / name}: model file missing "
                                     "(train one with python -m pipeline.training.train)")
        try:
            settings = json.loads((model_dir / "tagger.json").read_text(encoding="utf-8"))
            settings["thresholds"], settings["tags"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as err:
            raise ModelFileError(f"{model_dir / 'tagger.json'}: not a valid tagger settings file ({err})") from None
        try:
            config = BertConfig.from_json_file(str(model_dir / "config.json"))
        except (json.JSONDecodeError, OSError, ValueError, UnicodeDecodeError) as err:
            raise ModelFileError(f"{model_dir / 'config.json'}: not a valid BERT config ({err})") from None
        net = TaggerNet(config, len(settings["tags"]))
        try:
            state = load_file(str(model_dir / "model.safetensors"))
            net.load_state_dict({k: v.float() for k, v in state.items()})
        except Exception as err:  # safetensors raises its own error types on corrupt files
            raise ModelFileError(f"{model_dir / 'model.safetensors'}: cannot load weights ({err})") from None
        tagger = cls(net, load_tokenizer(model_dir / "tokenizer.json", settings["max_length"]), settings, model_dir)
        return tagger.quantized() if quantize else tagger

    @classmethod
    def from_config(cls, config: dict) -> "BertTagger":
        from pipeline.config import config_path

        tagger_config = config["tagger"]
        return cls.from_pretrained(config_path(config, tagger_config["bert_model"]),
                                   quantize=tagger_config.get("bert_quantize", False))

    def quantized(self) -> "BertTagger":
        """int8 weights for the encoder's linear layers except the feed-forward
        output projections: their inputs (GELU outputs) have outliers that
        per-tensor int8 activations clip, which cost 0.12 held-out macro-F1 when
        every layer was quantised; skipping them costs about 0.01 and keeps most of
        the speed-up (benchmarks/bench_taggers.py). The small heads stay in fp32."""
        net = copy.deepcopy(self.net)
        names = {name for name, module in net.encoder.named_modules()
                 if isinstance(module, nn.Linear) and not FEED_FORWARD_OUTPUT.search(name)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
            net.encoder = torch.ao.quantization.quantize_dynamic(net.encoder, names, dtype=torch.qint8)
        tagger = BertTagger(net.eval(), self.tokenizer, self.settings, self.model_dir)
        tagger.name = "bert-int8"
        return tagger

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        model_dir = Path(path)
        model_dir.mkdir(parents=True, exist_ok=True)
        # float16 halves the committed file; loading casts back to float32.
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(model_dir / "model.safetensors"))
        self.net.encoder.config.to_json_file(str(model_dir / "config.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.tokenizer.save(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.settings["max_length"])
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id("<pad>"), pad_token="<pad>")
        (model_dir / "tagger.json").write_text(json.dumps(self.settings, ensure_ascii=False, indent=2) + "\n",
                                               encoding="utf-8")
        return model_dir

    @torch.inference_mode()
    def probabilities(self, texts: Sequence[str], roles: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tag probabilities (n, tags) and sentiment probabilities (n, 3).
        Utterances are batched by length so little time goes to padding."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        tag_probs = torch.zeros(len(texts), len(self.tags))
        sentiment_probs = torch.zeros(len(texts), len(SENTIMENTS))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            ids, mask = encode(self.tokenizer, [texts[i] for i in batch], [roles[i] for i in batch])
            tag_logits, sentiment_logits = self.net(ids, mask)
            tag_probs[batch] = torch.sigmoid(tag_logits.float())
            sentiment_probs[batch] = torch.softmax(sentiment_logits.float(), dim=-1)
        return tag_probs, sentiment_probs

    def predict(self, texts: Sequence[str], roles: Sequence[str]) -> list[list[TagHit]]:
        """Agent tags are found per window of each utterance, then placed on the
        clauses of the window that carry them alone (the evidence a reviewer
        reads), or on the whole window where a tag needs the clauses together.
        Then the context rules of the model's settings (`inference`): a tag that
        needs the whole turn (backchannel: the turn is only listening signals)
        must be found in every window; soothing or policy wording goes when the
        same turn offers real help. Sentiment: see `_turn_sentiment`."""
        if len(texts) != len(roles):
            raise ValueError(f"{len(texts)} texts but {len(roles)} roles")
        flat = [(i, start, end) for i, text in enumerate(texts) for start, end in windows(text, self.window_chars)]
        tag_probs, sentiment_probs = self.probabilities([texts[i][a:b] for i, a, b in flat],
                                                        [roles[i] for i, _, _ in flat])
        found = {k: torch.nonzero(tag_probs[k] >= self.thresholds).flatten().tolist()
                 for k, (i, _, _) in enumerate(flat) if roles[i] == "agent"}  # agent behaviour only
        # Windows with tags and more than one clause: each clause is scored alone.
        clause_rows: dict[int, list[tuple[int, int, int]]] = {}  # window -> (row, start, end)
        queued: list[str] = []
        for k, labels in found.items():
            spans = _clauses(texts[flat[k][0]], flat[k][1], flat[k][2]) if labels else []
            if len(spans) > 1:
                for a, b in spans:
                    clause_rows.setdefault(k, []).append((len(queued), a, b))
                    queued.append(texts[flat[k][0]][a:b])
        clause_probs, _ = self.probabilities(queued, ["agent"] * len(queued))
        whole_turn = {self.tags.index(t) for t in self.inference["whole_turn_tags"]}
        # (turn, tag) pairs where some window of the turn lacks a whole-turn tag
        broken = {(flat[k][0], j) for k, labels in found.items() for j in whole_turn - set(labels)}
        results: list[list[TagHit]] = [[] for _ in texts]
        for k, labels in found.items():
            i, start, end = flat[k]
            for j in labels:
                carriers = [(a, b, float(clause_probs[q, j])) for q, a, b in clause_rows.get(k, [])
                            if clause_probs[q, j] >= self.thresholds[j]]
                if not carriers:
                    carriers = [(*_trim(texts[i], start, end), float(tag_probs[k, j]))]
                results[i] += [TagHit(self.tags[j], a, b, round(p, 4)) for a, b, p in carriers]
        broken_labels = {(i, self.tags[j]) for i, j in broken}
        for i, hits in enumerate(results):
            present = {h.label for h in hits}
            cancelled = {tag for tag, helpers in self.inference["cancelled_by"].items() if present & set(helpers)}
            results[i] = [h for h in hits if h.label not in cancelled and (i, h.label) not in broken_labels]
        for i, hit in self._turn_sentiment(texts, roles, flat, sentiment_probs):
            results[i].append(hit)
        return results

    def _turn_sentiment(self, texts, roles, flat, window_probs) -> list[tuple[int, TagHit]]:
        """Per turn, the mean of its windows' sentiment probabilities weighted by
        their length in characters, so one sharp sentence in a long calm turn
        does not make the turn negative while a turn angry throughout stays so.
        A polar label is given when it is the largest mean and at least
        `inference.turn_sentiment_min_mean[label]`. Its evidence is the clause
        of the most confident window that carries the label alone (the window
        when no single clause does)."""
        n = len(SENTIMENTS)
        sums, weights = torch.zeros(len(texts), n), torch.zeros(len(texts))
        best: dict[int, int] = {}  # turn -> window, filled below for polar turns
        for k, (i, start, end) in enumerate(flat):
            sums[i] += window_probs[k] * max(end - start, 1)
            weights[i] += max(end - start, 1)
        means = sums / weights.clamp(min=1).unsqueeze(1)
        polar: dict[int, int] = {}
        for i in range(len(texts)):
            s = int(means[i].argmax())
            minimum = self.inference["turn_sentiment_min_mean"].get(SENTIMENTS[s])
            if minimum is not None and float(means[i, s]) >= minimum:
                polar[i] = s
        for k, (i, _, _) in enumerate(flat):
            if i in polar and (i not in best or window_probs[k, polar[i]] > window_probs[best[i], polar[i]]):
                best[i] = k
        clause_rows = {i: _clauses(texts[i], flat[k][1], flat[k][2]) for i, k in best.items()}
        queued = [(i, a, b) for i, spans in clause_rows.items() if len(spans) > 1 for a, b in spans]
        _, clause_probs = self.probabilities([texts[i][a:b] for i, a, b in queued], [roles[i] for i, _, _ in queued])
        hits = []
        for i, s in polar.items():
            carriers = [(float(clause_probs[q, s]), a, b) for q, (t, a, b) in enumerate(queued)
                        if t == i and int(clause_probs[q].argmax()) == s]
            start, end = max(carriers)[1:] if carriers else _trim(texts[i], *flat[best[i]][1:])
            hits.append((i, TagHit(f"sentiment.{SENTIMENTS[s]}", start, end, round(float(means[i, s]), 4))))
        return hits

    def fit(self, texts: Sequence[str], roles: Sequence[str], label_sets: Sequence[set[str]],
            recipe: dict | None = None) -> "BertTagger":
        """Fine-tune this tagger's network on the given utterances (all of them
        train; thresholds keep their current values). `recipe` holds the
        optimiser settings of configs/tagger_training.yaml (read from there when
        None). For the full recipe with a dev split and threshold tuning use
        `python -m pipeline.training.train`."""
        if recipe is None:
            import yaml

            from pipeline.config import CONFIG_DIR

            recipe = yaml.safe_load((CONFIG_DIR / "tagger_training.yaml").read_text(encoding="utf-8"))
        _fine_tune(self, list(texts), list(roles), [set(s) for s in label_sets], recipe)
        return self


def _targets(roles, label_sets, tags):
    tag_targets = torch.tensor([[float(t in labels) for t in tags] for labels in label_sets])
    # Only agent utterances carry agent-tag supervision.
    tag_mask = torch.tensor([float(r == "agent") for r in roles]).unsqueeze(1)
    sentiment = torch.tensor([
        SENTIMENTS.index("negative") if "sentiment.negative" in labels
        else SENTIMENTS.index("positive") if "sentiment.positive" in labels
        else SENTIMENTS.index("neutral") for labels in label_sets])
    return tag_targets, tag_mask, sentiment


def _fine_tune(tagger: BertTagger, texts: list[str], roles: list[str], label_sets: list[set[str]],
               recipe: dict) -> None:
    """Train tagger.net on the utterances (in place)."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(recipe["seed"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = tagger.net.to(device).train()
    tag_targets, tag_mask, sentiment = _targets(roles, label_sets, tagger.tags)
    batch_size = recipe["batch_size"]
    steps = recipe["epochs"] * ((len(texts) + batch_size - 1) // batch_size)
    heads = list(net.tag_head.parameters()) + list(net.sentiment_head.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": net.encoder.parameters(), "lr": recipe["learning_rate"]},
         {"params": heads, "lr": recipe["head_learning_rate"]}],
        weight_decay=recipe["weight_decay"])
    schedule = get_linear_schedule_with_warmup(optimizer, int(steps * recipe["warmup_share"]), steps)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")
    ce = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(recipe["seed"])
    progress = tqdm(total=steps, desc="fine-tuning", unit="step")
    for _ in range(recipe["epochs"]):
        order = torch.randperm(len(texts), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            ids, mask = encode(tagger.tokenizer, [texts[i] for i in batch], [roles[i] for i in batch])
            tag_logits, sentiment_logits = net(ids.to(device), mask.to(device))
            m = tag_mask[batch].to(device)
            # Summed over tags, averaged over agent utterances: each tag weighs
            # as much as the sentiment decision.
            tag_loss = (bce(tag_logits, tag_targets[batch].to(device)) * m).sum() / m.sum().clamp(min=1)
            loss = tag_loss + recipe["sentiment_loss_weight"] * ce(sentiment_logits, sentiment[batch].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
    progress.close()
    tagger.net = net.cpu().eval()
