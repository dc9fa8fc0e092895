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
    check_model_shapes,
    check_output,
    header_shapes,
    load_state,
    output_directory,
    sha256_file,
    write_checkpoint_files,
)
from runtime.model.hf_folder import (
    HF_WEIGHTS,
    folder_config,
    folder_tokenizer,
    weight_files,
)

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


def _herd_name(path: Path, key: str) -> str | None:
    """A folder tensor's herd name; None for RoPE frequencies (recomputed from the config)."""
    if key.endswith("rotary_emb.inv_freq"):
        return None
    try:
        return from_hf_key(key)
    except KeyError as exc:
        raise CheckpointError(f"{path.name}: {exc.args[0]}") from exc


def _folder_shapes(root: Path, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """herd name -> shape of every tensor in the folder's weight files, from their headers
    alone: the config is checked against these before a byte of weights is read."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in weight_files(root):
        for key, shape in header_shapes(path).items():
            name = _herd_name(path, key)
            if name is not None:
                shapes[name] = shape
    if config["tied_embeddings"]:
        shapes.pop("output.weight", None)  # some tied exports still store the (shared) head
    return shapes


def _check_folder(root: Path, config: dict[str, Any]) -> None:
    """The folder's tensors must be the ones its config.json describes (layer count first)."""
    check_model_shapes(_folder_shapes(root, config), config, str(root),
                       config_file="config.json", layers_key="num_hidden_layers")


def _folder_tensors(root: Path, config: dict[str, Any],
                    on_bytes: OnBytes | None = None) -> dict[str, torch.Tensor]:
    """The folder's weights under herd's names, in their stored dtype, checked to be floats."""
    tensors: dict[str, torch.Tensor] = {}
    for path in weight_files(root):
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118
                    name = _herd_name(path, key)
                    if name is None:
                        continue
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
    folder, names and shapes checked against the config (from the files' headers, before
    any weights are read); nothing is written (a spec's `checkpoint` block loads it into
    the store this way)."""
    root = Path(hf_dir)
    config = folder_config(root)
    _check_folder(root, config)
    return _folder_tensors(root, config, on_bytes), config


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
    root = Path(hf_dir)
    config = folder_config(root)  # the input's own faults first (config.json, which weight files)
    check_output(out_dir, force=force, sources=[hf_dir])  # then the output's, before reading any weights
    source, tok = folder_tokenizer(root, config["vocab_size"]) if tokenizer else (None, None)
    stale = _stale_tokenizer(Path(out_dir)) if tok is None and Path(out_dir).is_dir() else None
    if stale is not None:
        raise CheckpointError(f"{Path(out_dir) / stale} is in the way: this import brings no tokenizer, "
                              "and herd would take that file for the model's\nhint: remove it, or "
                              "import into a new folder")
    _check_folder(root, config)
    tensors = _folder_tensors(root, config, on_bytes)
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    with output_directory(out_dir, force=force) as tmp:
        extra: dict[str, Any] = {"imported_from": str(root.resolve())}
        if tok is not None and source is not None:
            extra["tokenizer"] = _write_tokenizer(tmp, source, root, *tok)
        write_checkpoint_files(tmp, tensors, config, step=step, tokenizer_id=tokenizer_id, extra=extra,
                               on_bytes=on_bytes)
    return Path(out_dir)

