"""The spec blocks that describe a model folder: `herd import DIR --blocks`.

A `checkpoint` block needs a model block that matches the folder field by field (loading
refuses a difference), and writing one by hand from config.json is where RoPE scaling and
FFN sizes go wrong. This reads config.json, the tokenizer and the weight files' headers
(never the weights themselves) and prints `tokenizer`, `model` and `checkpoint` blocks in
herd's canonical layout.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from runtime.model.meta import CheckpointError

#: a herd name, as the grammar's NAME token
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _folder_name(folder: Path) -> str:
    """The name the user knows the model by: the folder as given (a symlink's own name, not
    its target's), or for a Hugging Face cache snapshot
    (`models--meta-llama--Llama-3.2-1B/snapshots/<commit>`) the model's."""
    given = Path(folder)
    name = given.name if given.name not in ("", ".", "..") else given.resolve().name
    parent = given.parent if given.name not in ("", ".", "..") else given.resolve().parent
    if parent.name == "snapshots" and parent.parent.name.startswith("models--"):
        return parent.parent.name.split("--")[-1]
    return name


def block_name(folder: Path) -> str:
    """`Llama-3.2-1B` → `llama_3_2_1b`: a herd name (letters, digits, `_`, not a digit first)."""
    name = re.sub(r"[^a-z0-9]+", "_", _folder_name(folder).lower()).strip("_") or "model"
    return name if not name[0].isdigit() else f"m_{name}"


def _check_name(name: str) -> None:
    """`--name` becomes three block names: it must be one the grammar reads as a name."""
    from herdlang.parser import keywords

    if not NAME.fullmatch(name) or name in keywords():
        suggestion = block_name(Path(name)) if name not in keywords() else f"{name}_model"
        raise CheckpointError(f"--name {name!r} is not a herd name: letters, digits and _, not starting "
                              f"with a digit, and not one of {', '.join(keywords())}\n"
                              f"hint: e.g. --name {suggestion}")


def _string(text: str) -> str:
    """A herd string literal: `\\`, `"` and control characters escaped, as the parser reads them."""
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\t", "\\t").replace("\r", "\\r").replace("\0", "\\0"))
    return f'"{escaped}"'


def _comment(text: str) -> str:
    """Text for a `#` comment: one line."""
    return text.replace("\r", " ").replace("\n", " ")


def _count(n: int) -> str:
    return f"{n:_}" if n >= 10_000 else str(n)


def _length(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 and n >= 1024 else _count(n)


def _number(x: float) -> str:
    return _count(int(x)) if float(x).is_integer() else f"{x:g}"


def _tokenizer_block(folder: Path, shown: str, name: str, vocab_size: int) -> tuple[str, bool]:
    """(the tokenizer block, whether the folder has a tokenizer herd reads): the one `herd
    import` would take, with the same checks."""
    from runtime.model.hf_folder import HF_TOKENIZER_PLACES, folder_tokenizer

    herd_tok = _herd_tokenizer(folder)
    if herd_tok is not None:  # a herd checkpoint carrying its tokenizer (post-training, `herd import`)
        ranks, pattern, specials = herd_tok
        return _tokenizer_lines(name, f"{shown.rstrip('/')}/tokenizer.model", ranks, pattern, specials), True
    source, found = folder_tokenizer(folder, vocab_size)
    if source is None:
        return (f"# {_comment(shown)} has no tokenizer ({' or '.join(HF_TOKENIZER_PLACES)}): name its file\n"
                f'tokenizer {name} {{ file = "TOKENIZER FILE"  vocab = {_count(vocab_size - 256)} }}\n'), False
    rel = f"{shown.rstrip('/')}/{source.relative_to(folder).as_posix()}"
    ranks, pattern, specials, _ = found
    return _tokenizer_lines(name, rel, len(ranks), pattern, specials), True


def _tokenizer_lines(name: str, file: str, ranks: int, pattern: str, specials: int) -> str:
    lines = [f"tokenizer {name} {{", f"  file = {_string(file)}", f"  vocab = {_count(ranks)}",
             f"  special_tokens = {specials}"]
    if pattern != "llama3":
        lines.append(f"  pattern = {pattern}")
    return "\n".join([*lines, "}"]) + "\n"


def _herd_tokenizer(folder: Path) -> tuple[int, str, int] | None:
    """(ranks, pattern name, special tokens) of a herd tokenizer artifact inside `folder`."""
    from runtime.data.tokenizer import META_FILE, MODEL_FILE

    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # not a herd artifact's JSON: the HF readers say why
        return None
    if not isinstance(meta, dict) or meta.get("format") != "tiktoken-bpe" or not (folder / MODEL_FILE).is_file():
        return None
    ranks, specials = meta.get("n_ranks"), meta.get("special_tokens", {})
    if not (isinstance(ranks, int) and not isinstance(ranks, bool) and ranks > 0) or not isinstance(specials, dict):
        raise CheckpointError(f"{folder / META_FILE}: a herd tokenizer's metadata needs n_ranks (a whole "
                              "number above 0) and special_tokens (an object)\nhint: herd writes this file "
                              "itself: it was edited or damaged; restore it, or re-create it with its job")
    return ranks, str(meta.get("pattern_name", "llama3")), len(specials)


def _model_block(config: dict[str, Any], name: str, tokenizer: str) -> str:
    lines = [f"model {name} {{", f"  tokenizer = {tokenizer}", f"  layers = {config['layers']}",
             f"  dim = {_count(config['dim'])}", f"  heads = {config['heads']}"]
    if config["head_dim"] != config["dim"] // config["heads"]:
        lines.append(f"  head_dim = {config['head_dim']}")
    if config["kv_heads"] != config["heads"]:
        lines.append(f"  attention = gqa(kv_heads = {config['kv_heads']})")
    lines.append(f"  ffn = swiglu(hidden = {_count(config['ffn_dim'])})")
    lines.append(f"  norm = rmsnorm(eps = {config['norm_eps']:g})")
    rope = f"theta = {_number(config['rope_theta'])}"
    if config.get("rope_scaling"):
        sc = config["rope_scaling"]
        rope += (f", scaling = llama3(factor = {sc['factor']:g}, low_freq_factor = {sc['low_freq_factor']:g}, "
                 f"high_freq_factor = {sc['high_freq_factor']:g}, "
                 f"original_context = {_length(sc['original_context'])})")
    lines.append(f"  rope = rope({rope})")
    lines.append(f"  tied = {str(config['tied_embeddings']).lower()}")
    lines.append(f"  context = {_length(config['max_context'])}")
    return "\n".join([*lines, "}"]) + "\n"


def _check_layers(root: Path, layers: int) -> str:
    """The config's layer count must be the one the weights hold: compared from the weight
    files' headers (a few KB each), so a config.json from another model is refused here, not
    when the run loads it. A folder whose weights are not there yet gets a comment instead."""
    from runtime.model.hf_folder import stored_layers, weight_files
    from runtime.model.meta import META_FILE, WEIGHTS_FILE

    herd = (root / META_FILE).is_file()
    files = [root / WEIGHTS_FILE] if herd else []
    if not herd:
        try:
            files = weight_files(root)
        except CheckpointError:  # none, or pickle only: `herd import` itself says which
            files = []
    files = [f for f in files if f.is_file()]
    if not files:
        return "# no weights in the folder yet: loading compares them with these blocks\n"
    held = stored_layers(files)
    if len(held) != layers:
        source, key = (META_FILE, "layers") if herd else ("config.json", "num_hidden_layers")
        span = f" (layers {min(held)} to {max(held)})" if held else ""
        raise CheckpointError(f"{root}: {source} says {key} = {layers:,}, but the weights hold "
                              f"{len(held)} layer{'' if len(held) == 1 else 's'}{span}\nhint: the "
                              f"weights and {source} come from different models, or {source} was edited")
    return ""


def describe_folder(folder: str | Path, name: str | None = None) -> str:
    """The blocks, formatted, for a Hugging Face Llama folder or a herd checkpoint. Paths are
    written as `folder` was given: relative to the spec's folder once pasted."""
    from herdlang.formatter import format_text
    from runtime.model.config import ModelArgs
    from runtime.model.hf_folder import config_where, herd_config, read_config_json
    from runtime.model.meta import META_FILE, read_meta

    root = Path(folder)
    if name:
        _check_name(name)
    if root.is_file():
        raise CheckpointError(f"{root} is a file: herd import --blocks takes the model's folder\n"
                              f"hint: herd import {shlex.quote(str(root.parent))} --blocks")
    if not root.exists():
        raise CheckpointError(f"{root} does not exist (or is a broken link)\nhint: name the folder that "
                              "holds the model's config.json and weights")
    # both readers check every value by key (a string, 4.5 or a negative size is refused
    # with the file and key named, never printed into a block or truncated)
    if (root / META_FILE).is_file():
        config = read_meta(root)["model"]
    elif (root / "config.json").is_file():
        config = herd_config(read_config_json(root / "config.json"), root.name, where=config_where(root))
    else:
        raise CheckpointError(f"{root} is neither a Hugging Face model folder (no config.json) nor a herd "
                              f"checkpoint (no {META_FILE})")
    config = ModelArgs.from_dict(config).to_dict()  # defaults filled in (kv_heads, head_dim, ...)
    name = name or block_name(root)
    shown = str(folder)
    weights_note = _check_layers(root, int(config["layers"]))
    tokenizer, _ = _tokenizer_block(root, shown, f"{name}_tokenizer", int(config["vocab_size"]))
    text = (f"# {_comment(shown)}: {config['layers']} layers, dim {config['dim']:,}, "
            f"vocabulary {config['vocab_size']:,}\n" + weights_note
            + tokenizer + "\n" + _model_block(config, name, f"{name}_tokenizer") + "\n"
            + f"checkpoint {name}_base {{\n  path = {_string(shown)}\n  model = {name}\n}}\n")
    return format_text(text)
