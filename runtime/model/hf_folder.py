"""A Hugging Face Llama folder read without torch: its config as herd's model config, its
weight files, and its tokenizer. `herd import --blocks` needs nothing more, so it answers
without importing torch; `runtime.model.hf` (the weights themselves) builds on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.model.meta import CheckpointError

#: a model's vocabulary may be padded past its tokenizer's (to a multiple of 64 or 128) by
#: less than this; more means another tokenizer (`herd chat` and `herd import` check it)
PADDING_AT_MOST = 128

HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"


def herd_config(hf: dict[str, Any], name: str) -> dict[str, Any]:
    """A herd model config from transformers' config.json (Llama architectures only)."""
    if not isinstance(hf, dict):
        raise CheckpointError(f"config.json must hold a JSON object, found {type(hf).__name__}")
    if hf.get("model_type") != "llama":
        raise CheckpointError(
            f"config.json has model_type {hf.get('model_type')!r}; herd imports Llama models only"
        )
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise CheckpointError("config.json uses attention or MLP biases, which Llama 3 does not have")
    if hf.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"config.json uses hidden_act {hf['hidden_act']!r}; herd's FFN is SwiGLU (silu)")
    # transformers >= 5 nests theta and scaling under rope_parameters; older files keep them apart.
    params = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
    rope_scaling = None
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind not in ("llama3", "default"):
            raise CheckpointError(f"RoPE scaling {kind!r} is not supported (herd implements 'llama3')")
        if kind == "llama3":
            try:
                rope_scaling = {
                    "factor": float(scaling["factor"]),
                    "low_freq_factor": float(scaling["low_freq_factor"]),
                    "high_freq_factor": float(scaling["high_freq_factor"]),
                    "original_context": int(scaling["original_max_position_embeddings"]),
                }
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(
                    "config.json: llama3 RoPE scaling needs factor, low_freq_factor, high_freq_factor "
                    f"and original_max_position_embeddings as numbers; got {scaling!r}"
                ) from exc
    try:
        heads = int(hf["num_attention_heads"])
        dim = int(hf["hidden_size"])
        config = {
            "name": name,
            "vocab_size": int(hf["vocab_size"]),
            "dim": dim,
            "layers": int(hf["num_hidden_layers"]),
            "heads": heads,
            "kv_heads": int(hf.get("num_key_value_heads") or heads),
            "head_dim": int(hf.get("head_dim") or dim // heads),
            "ffn_dim": int(hf["intermediate_size"]),
            "norm_eps": float(hf.get("rms_norm_eps", 1e-5)),
            "rope_theta": float(theta),
            "rope_scaling": rope_scaling,
            "tied_embeddings": bool(hf.get("tie_word_embeddings", False)),
            "max_context": int(hf.get("max_position_embeddings", 8192)),
            "document_mask": True,
            "init_std": float(hf.get("initializer_range", 0.02)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"config.json lacks a usable Llama field ({exc})") from exc
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if hf.get(key) is not None:
            config[key] = hf[key]
    return config


def weight_bytes(root: Path) -> int:
    """The size of a Hugging Face folder's weight files (a progress bar's total); 0 where
    they cannot be listed, which the reader then reports properly."""
    try:
        return sum(p.stat().st_size for p in weight_files(root) if p.is_file())
    except (CheckpointError, OSError):
        return 0


def weight_files(root: Path) -> list[Path]:
    """model.safetensors, or the shards listed by model.safetensors.index.json."""
    if (root / HF_WEIGHTS).is_file():
        return [root / HF_WEIGHTS]
    index = root / HF_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index ({exc})") from exc
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise CheckpointError(f"{index}: weight_map must map tensor names to file names")
        escaping = sorted({f for f in weight_map.values() if Path(f).name != f})
        if escaping:
            raise CheckpointError(f"{index} lists {escaping[0]!r}, which is not a file in {root}\n"
                                  "hint: shards must sit next to the index")
        files = [root / f for f in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{index} lists {f.name}, which is missing")
        return files
    if list(root.glob("*.bin")) or list(root.glob("*.pth")):
        raise CheckpointError(
            f"{root} has only pickle weights (.bin/.pth); herd reads safetensors only\n"
            "hint: convert with transformers: model.save_pretrained(dir, safe_serialization=True)"
        )
    raise CheckpointError(f"{root} has neither {HF_WEIGHTS} nor {HF_INDEX}")


# Where a model folder keeps its tokenizer, in the order `herd import` tries them: the Hugging
# Face tokenizer.json (it keeps Llama 3.1's special-token names), then Meta's tiktoken rank
# file (special tokens get herd's Llama 3 names), used when tokenizer.json cannot be served.
HF_TOKENIZER_PLACES = ("tokenizer.json", "original/tokenizer.model")
NO_TOKENIZER_HINT = ("hint: pass --no-tokenizer to import the weights alone (then give herd "
                     "generate and herd chat --tokenizer DIR)")


def folder_tokenizer(root: Path, vocab_size: int) -> tuple[Path | None, Any]:
    """(file, what `_read_hf_tokenizer` read) of the first place whose tokenizer herd can
    serve; a failure is raised only when no place works (the first one's, which says most)."""
    places = [root / p for p in HF_TOKENIZER_PLACES if (root / p).is_file()]
    first: CheckpointError | None = None
    for source in places:
        try:
            return source, _read_hf_tokenizer(source, vocab_size)
        except CheckpointError as exc:
            first = first or exc
    if first is not None:
        raise first
    return None, None


def _read_hf_tokenizer(source: Path, vocab_size: int) -> tuple[dict[bytes, int], str, int, list[str] | None]:
    """(ranks, pattern name, special-token count, their names or None for herd's) of a model
    folder's tokenizer, checked to fit the model's vocabulary (which may be padded, as
    `herd chat` allows)."""
    from runtime.data.hf_tokenizer import is_hf_tokenizer_file, read_hf_tokenizer
    from runtime.data.tokenizer import LLAMA3_SPECIALS_HEAD, load_ranks
    from runtime.jobs.context import JobFailed

    try:
        if is_hf_tokenizer_file(source):
            found = read_hf_tokenizer(source)
            ranks, pattern_name, n_special = found.ranks, found.pattern_name, len(found.specials)
            names = found.specials or None
        else:  # Meta's rank file: Llama 3's split, its special tokens in what the model has room for
            ranks, pattern_name, n_special, names = load_ranks(source), "llama3", 0, None
    except JobFailed as exc:
        raise CheckpointError(f"{exc}\n{NO_TOKENIZER_HINT}") from None
    n_special = n_special or max(0, min(256, vocab_size - len(ranks)))
    n_vocab = len(ranks) + n_special
    if (n_special < len(LLAMA3_SPECIALS_HEAD) or n_vocab > vocab_size
            or vocab_size - n_vocab >= PADDING_AT_MOST):
        raise CheckpointError(
            f"{source}: the tokenizer has {len(ranks):,} ranks and {n_special} special tokens, "
            f"{n_vocab:,} in all, but config.json gives the model a vocabulary of {vocab_size:,}"
            + (f" (no room for Llama 3's {len(LLAMA3_SPECIALS_HEAD)} special tokens)"
               if n_special < len(LLAMA3_SPECIALS_HEAD) else "")
            + f": it is not this model's tokenizer\n{NO_TOKENIZER_HINT}")
    return ranks, pattern_name, n_special, names


def folder_config(root: Path) -> dict[str, Any]:
    """The herd config of a transformers Llama folder's config.json."""
    config_path = root / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{root} is not a Hugging Face model directory (no config.json)")
    try:
        hf = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc})") from exc
    weight_files(root)  # no weights (or pickle only) is reported before anything else is read
    return herd_config(hf, name=root.name)
