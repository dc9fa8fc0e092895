"""Hugging Face interop: export a herd checkpoint as a `LlamaForCausalLM` directory, and import one.

Both sides use the half-split RoPE layout (transformers' `rotate_half`: pair i is
(x[i], x[i + head_dim/2])), so q/k projection rows are copied as they are — no
permutation. (Meta's original consolidated checkpoints use the interleaved layout and
need transformers' conversion script first; a transformers directory never does.)
The mapping is a pure renaming, tested to be exact both ways.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from runtime.model.checkpoint import (
    CheckpointError,
    OnBytes,
    check_dtype,
    check_float,
    check_output,
    check_shapes,
    expected_shapes,
    load_state,
    output_directory,
    sha256_file,
    write_checkpoint_files,
)

HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"

# herd name -> transformers name, for the parts of one decoder layer.
_LAYER_KEYS = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
}
_GLOBAL_KEYS = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_HF_LAYER_KEYS = {v: k for k, v in _LAYER_KEYS.items()}
_HF_GLOBAL_KEYS = {v: k for k, v in _GLOBAL_KEYS.items()}
_HERD_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def to_hf_key(name: str) -> str:
    """herd state-dict name -> transformers LlamaForCausalLM name."""
    if name in _GLOBAL_KEYS:
        return _GLOBAL_KEYS[name]
    m = _HERD_LAYER.match(name)
    if m and m.group(2) in _LAYER_KEYS:
        return f"model.layers.{m.group(1)}.{_LAYER_KEYS[m.group(2)]}"
    raise KeyError(f"no Hugging Face name for herd tensor {name!r}")


def from_hf_key(name: str) -> str:
    """transformers LlamaForCausalLM name -> herd state-dict name."""
    if name in _HF_GLOBAL_KEYS:
        return _HF_GLOBAL_KEYS[name]
    m = _HF_LAYER.match(name)
    if m and m.group(2) in _HF_LAYER_KEYS:
        return f"layers.{m.group(1)}.{_HF_LAYER_KEYS[m.group(2)]}"
    raise KeyError(f"no herd name for Hugging Face tensor {name!r}")


def hf_config(config: dict[str, Any], dtype: str) -> dict[str, Any]:
    """transformers' config.json for a herd model config."""
    from runtime.model.config import ModelArgs

    a = ModelArgs.from_dict(config)
    scaling = None
    if a.rope_scaling is not None:
        scaling = {
            "rope_type": "llama3",
            "factor": a.rope_scaling.factor,
            "low_freq_factor": a.rope_scaling.low_freq_factor,
            "high_freq_factor": a.rope_scaling.high_freq_factor,
            "original_max_position_embeddings": a.rope_scaling.original_context,
        }
    out: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": a.vocab_size,
        "hidden_size": a.dim,
        "intermediate_size": a.ffn_dim,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "head_dim": a.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": a.norm_eps,
        "rope_theta": a.rope_theta,
        "rope_scaling": scaling,
        "max_position_embeddings": a.max_context,
        "tie_word_embeddings": a.tied_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": a.init_std,
        "torch_dtype": dtype,
    }
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in config:
            out[key] = config[key]
    return out


def export_hf(
    checkpoint_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    force: bool = False,
    tokenizer_dir: str | os.PathLike[str] | None = None,
    on_bytes: OnBytes | None = None,
) -> Path:
    """Write `config.json` + `model.safetensors` that `LlamaForCausalLM.from_pretrained` loads,
    and with `tokenizer_dir` (a herd tokenizer artifact) the tokenizer transformers'
    `AutoTokenizer` loads, plus `generation_config.json` that stops at end of turn.

    The checkpoint is verified first (checksum, shapes). A tied model has no `lm_head`
    tensor (transformers ties it from `tie_word_embeddings`). `dtype` converts floats.
    `out_dir` must be new or an empty folder; `force` overwrites the two files in a folder
    that holds others (and keeps those) or replaces a file. Folders of a herd run (the
    store above all) are refused either way (`output_directory`). `on_bytes` hears the
    weights checksummed, read, then written (three passes, for a progress bar).
    """
    check_dtype(dtype, "export_hf")
    check_output(out_dir, force=force, sources=[checkpoint_dir])  # before reading any weights
    tensors, meta = load_state(checkpoint_dir, on_bytes=on_bytes)
    hf_tensors = {
        to_hf_key(k): (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
        for k, v in tensors.items()
    }
    dtype_name = str(next(iter(hf_tensors.values())).dtype).removeprefix("torch.")
    with output_directory(out_dir, force=force) as tmp:
        save_file(hf_tensors, str(tmp / HF_WEIGHTS), metadata={"format": "pt"})
        if on_bytes is not None:
            on_bytes(sum(t.numel() * t.element_size() for t in hf_tensors.values()))
        config = hf_config(meta["model"], dtype_name)
        if tokenizer_dir is not None:
            config.update(_tokenizer_files(Path(tokenizer_dir), tmp, config))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return Path(out_dir)


def _tokenizer_files(tokenizer_dir: Path, out: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Write the tokenizer and generation config; returns the token ids config.json names."""
    from runtime.data.hf_tokenizer import write_hf_tokenizer
    from runtime.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    if tok.n_vocab > config["vocab_size"]:
        raise CheckpointError(f"{tokenizer_dir}: this tokenizer has {tok.n_vocab:,} tokens but the model "
                              f"has a vocabulary of {config['vocab_size']:,}\nhint: pass the tokenizer "
                              "it was trained with (--tokenizer DIR)")
    write_hf_tokenizer(tokenizer_dir, out, int(config["max_position_embeddings"]))
    ids = {"bos_token_id": tok.bos_id, "eos_token_id": [tok.eos_id, tok.eot_id]}
    (out / "generation_config.json").write_text(json.dumps(ids, indent=2) + "\n")
    return ids


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
        return sum(p.stat().st_size for p in _weight_files(root) if p.is_file())
    except (CheckpointError, OSError):
        return 0


def _weight_files(root: Path) -> list[Path]:
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
    from runtime.chat import PADDING_AT_MOST
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


def _write_tokenizer(folder: Path, source: Path, root: Path, ranks: dict[bytes, int],
                     pattern_name: str, n_special: int, names: list[str] | None) -> dict[str, Any]:
    """herd's tokenizer artifact (the files `save_tokenizer` writes) into the checkpoint
    folder; returns what meta.json records of it (source, and each file's size and sha256)."""
    from runtime.data.tokenizer import META_FILE as TOKENIZER_META
    from runtime.data.tokenizer import MODEL_FILE as TOKENIZER_MODEL
    from runtime.data.tokenizer import save_tokenizer

    save_tokenizer(folder, ranks, pattern_name, n_special,
                   extra={"imported_from": str(source.resolve())}, names=names)
    return {"from": source.relative_to(root).as_posix(),
            "files": {name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
                      for name in (TOKENIZER_MODEL, TOKENIZER_META)}}


def _stale_tokenizer(out: Path) -> str | None:
    """A tokenizer file left in an existing output folder, which herd would take for the
    imported model's (`checkpoint_tokenizer` looks inside the checkpoint first)."""
    from runtime.data.tokenizer import META_FILE as TOKENIZER_META
    from runtime.data.tokenizer import MODEL_FILE as TOKENIZER_MODEL

    return next((n for n in (TOKENIZER_META, TOKENIZER_MODEL) if (out / n).exists()), None)


def _folder_config(root: Path) -> dict[str, Any]:
    """The herd config of a transformers Llama folder's config.json."""
    config_path = root / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{root} is not a Hugging Face model directory (no config.json)")
    try:
        hf = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc})") from exc
    _weight_files(root)  # no weights (or pickle only) is reported before anything else is read
    return herd_config(hf, name=root.name)


def _folder_tensors(root: Path, config: dict[str, Any],
                    on_bytes: OnBytes | None = None) -> dict[str, torch.Tensor]:
    """The folder's weights under herd's names, in their stored dtype, checked to be floats."""
    tensors: dict[str, torch.Tensor] = {}
    for path in _weight_files(root):
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118
                    if key.endswith("rotary_emb.inv_freq"):
                        continue  # recomputed from the config
                    try:
                        name = from_hf_key(key)
                    except KeyError as exc:
                        raise CheckpointError(f"{path.name}: {exc.args[0]}") from exc
                    tensors[name] = f.get_tensor(key)
                    if on_bytes is not None:
                        on_bytes(tensors[name].numel() * tensors[name].element_size())
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    if config["tied_embeddings"]:
        tensors.pop("output.weight", None)  # some tied exports still store the (shared) head
    check_float(tensors, str(root))
    return tensors


def read_hf(hf_dir: str | os.PathLike[str], on_bytes: OnBytes | None = None,
            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(herd-named tensors in their stored dtype, herd config) of a transformers Llama
    folder, shapes checked against the config; nothing is written (a spec's `checkpoint`
    block loads it into the store this way)."""
    root = Path(hf_dir)
    config = _folder_config(root)
    tensors = _folder_tensors(root, config, on_bytes)
    check_shapes({k: tuple(v.shape) for k, v in tensors.items()}, expected_shapes(config), str(root))
    return tensors, config


def import_hf(
    hf_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    step: int = 0,
    tokenizer_id: str | None = None,
    dtype: torch.dtype | None = None,
    force: bool = False,
    tokenizer: bool = True,
    on_bytes: OnBytes | None = None,
) -> Path:
    """Turn a transformers Llama directory (single file or sharded) into a herd checkpoint.

    `out_dir` is checked like `export_hf`'s: new or empty, or `force`; never in a herd run.
    With `tokenizer` (the default), the folder's tokenizer — Meta's `original/tokenizer.model`
    or else `tokenizer.json` — becomes a herd tokenizer artifact inside the checkpoint
    (`checkpoint_tokenizer` finds it), its files' checksums recorded in meta.json; one herd
    cannot serve, or whose size does not fit the model's vocabulary, fails the import before
    anything is written. A folder without one imports the weights alone. `on_bytes` hears
    the weights read, written, then checksummed (three passes, for a progress bar).
    """
    check_dtype(dtype, "import_hf")
    check_output(out_dir, force=force, sources=[hf_dir])  # before reading any weights
    root = Path(hf_dir)
    config = _folder_config(root)
    source, tok = folder_tokenizer(root, config["vocab_size"]) if tokenizer else (None, None)
    stale = _stale_tokenizer(Path(out_dir)) if tok is None and Path(out_dir).is_dir() else None
    if stale is not None:
        raise CheckpointError(f"{Path(out_dir) / stale} is in the way: this import brings no tokenizer, "
                              "and herd would take that file for the model's\nhint: remove it, or "
                              "import into a new folder")
    tensors = _folder_tensors(root, config, on_bytes)
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    check_shapes({k: tuple(v.shape) for k, v in tensors.items()}, expected_shapes(config), str(root))
    with output_directory(out_dir, force=force) as tmp:
        extra: dict[str, Any] = {"imported_from": str(root.resolve())}
        if tok is not None and source is not None:
            extra["tokenizer"] = _write_tokenizer(tmp, source, root, *tok)
        write_checkpoint_files(tmp, tensors, config, step=step, tokenizer_id=tokenizer_id, extra=extra,
                               on_bytes=on_bytes)
    return Path(out_dir)

