"""A Hugging Face Llama folder read without torch: its config as herd's model config, its
weight files, and its tokenizer. `herd import --blocks` needs nothing more, so it answers
without importing torch; `runtime.model.hf` (the weights themselves) builds on it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from runtime.model.meta import META_FILE, CheckpointError, check_model_config, config_value

#: a model's vocabulary may be padded past its tokenizer's (to a multiple of 64 or 128) by
#: less than this; more means another tokenizer (`herd chat` and `herd import` check it)
PADDING_AT_MOST = 128

HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"


#: what config.json's damaged values are met with
CONFIG_HINT = ("config.json is written by transformers' save_pretrained: download the model's again, "
               "or correct the value by hand")
_MISSING = object()


def herd_config(hf: dict[str, Any], name: str, where: str = "config.json") -> dict[str, Any]:
    """A herd model config from transformers' config.json (Llama architectures only).

    Every value is checked for its type and range by key, as config.json spells it (`where`
    names the file in messages, `config_where`): a string, a list or 4.5 where a count goes, or NaN where a positive
    number goes, would otherwise truncate silently, crash deep in the model, or (a billion
    layers) hang building it.
    """
    if not isinstance(hf, dict):
        raise CheckpointError(f"{where} must hold a JSON object, found {type(hf).__name__}\nhint: {CONFIG_HINT}")
    if hf.get("model_type") != "llama":
        raise CheckpointError(
            f"{where} has model_type {hf.get('model_type')!r}; herd imports Llama models only"
        )
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise CheckpointError(f"{where} uses attention or MLP biases, which Llama 3 does not have")
    if hf.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{where} uses hidden_act {hf['hidden_act']!r}; herd's FFN is SwiGLU (silu)")

    def value(table: dict[str, Any], key: str, kind: str, default: Any = _MISSING, shown: str = "") -> Any:
        """table[key] checked to be of `kind` (null or absent: `default`, required without one)."""
        if table.get(key) is None:
            if default is _MISSING:
                raise CheckpointError(f"{where} has no {shown or key}, which a Llama config needs\n"
                                      f"hint: {CONFIG_HINT}")
            return default
        return config_value(table[key], kind, shown or key, where, CONFIG_HINT)

    def section(key: str) -> dict[str, Any]:
        """A nested object of config.json, or {} when absent or null."""
        found = hf.get(key)
        if found is not None and not isinstance(found, dict):
            raise CheckpointError(f"{where}: {key} must be an object or null, got {type(found).__name__}\n"
                                  f"hint: {CONFIG_HINT}")
        return found or {}

    # transformers >= 5 nests theta and scaling under rope_parameters; older files keep them apart.
    params = section("rope_parameters")
    scaling, scaling_key = section("rope_scaling"), "rope_scaling"
    if not scaling and params.get("rope_type", "default") != "default":
        scaling, scaling_key = params, "rope_parameters"
    if params.get("rope_theta") is not None:
        theta = value(params, "rope_theta", "positive", shown="rope_parameters.rope_theta")
    else:
        theta = value(hf, "rope_theta", "positive", 10_000.0)
    rope_scaling = None
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind not in ("llama3", "default"):
            raise CheckpointError(f"{where}: RoPE scaling {kind!r} is not supported (herd implements 'llama3')")
        if kind == "llama3":
            fields = {"factor": "positive", "low_freq_factor": "positive", "high_freq_factor": "positive",
                      "original_max_position_embeddings": "count"}
            if any(scaling.get(key) is None for key in fields):
                raise CheckpointError(
                    f"{where}: llama3 RoPE scaling needs factor, low_freq_factor, high_freq_factor and "
                    f"original_max_position_embeddings as numbers; got {scaling!r}"[:400] + f"\nhint: {CONFIG_HINT}")
            got = {key: value(scaling, key, want, shown=f"{scaling_key}.{key}") for key, want in fields.items()}
            if got["high_freq_factor"] <= got["low_freq_factor"]:
                raise CheckpointError(f"{where}: {scaling_key}.high_freq_factor ({got['high_freq_factor']}) must "
                                      f"be above low_freq_factor ({got['low_freq_factor']})\nhint: {CONFIG_HINT}")
            rope_scaling = {
                "factor": float(got["factor"]),
                "low_freq_factor": float(got["low_freq_factor"]),
                "high_freq_factor": float(got["high_freq_factor"]),
                "original_context": got["original_max_position_embeddings"],
            }
    heads = value(hf, "num_attention_heads", "count")
    dim = value(hf, "hidden_size", "count")
    config = {
        "name": name,
        "vocab_size": value(hf, "vocab_size", "count"),
        "dim": dim,
        "layers": value(hf, "num_hidden_layers", "count"),
        "heads": heads,
        "kv_heads": value(hf, "num_key_value_heads", "count", heads),
        "head_dim": value(hf, "head_dim", "count", dim // heads),
        "ffn_dim": value(hf, "intermediate_size", "count"),
        "norm_eps": float(value(hf, "rms_norm_eps", "positive", 1e-5)),
        "rope_theta": float(theta),
        "rope_scaling": rope_scaling,
        "tied_embeddings": value(hf, "tie_word_embeddings", "flag", False),
        "max_context": value(hf, "max_position_embeddings", "count", 8192),
        "document_mask": True,
        "init_std": float(value(hf, "initializer_range", "non-negative", 0.02)),
    }
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        ids = hf.get(key)
        if ids is None:
            continue
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in (ids if isinstance(ids, list) else [ids])):
            raise CheckpointError(f"{where}: {key} must be a token id or a list of them, got {ids!r}"[:300]
                                  + f"\nhint: {CONFIG_HINT}")
        config[key] = ids
    # what no Llama can have (heads not a multiple of kv_heads, an odd head_dim, ...)
    check_model_config(config, where, hint=CONFIG_HINT, names=HERD_TO_HF)
    return config


#: herd's model config keys as config.json spells them, for messages
HERD_TO_HF = {"vocab_size": "vocab_size", "dim": "hidden_size", "layers": "num_hidden_layers",
              "heads": "num_attention_heads", "kv_heads": "num_key_value_heads", "head_dim": "head_dim",
              "ffn_dim": "intermediate_size", "norm_eps": "rms_norm_eps", "rope_theta": "rope_theta",
              "tied_embeddings": "tie_word_embeddings", "max_context": "max_position_embeddings",
              "init_std": "initializer_range"}


def weight_bytes(root: Path) -> int:
    """The size of a Hugging Face folder's weight files (a progress bar's total); 0 where
    they cannot be listed, which the reader then reports properly."""
    try:
        return sum(p.stat().st_size for p in weight_files(root) if p.is_file())
    except (CheckpointError, OSError):
        return 0


#: what a damaged model.safetensors.index.json is met with
INDEX_HINT = ("the index is written by transformers' save_pretrained next to the shards it lists: "
              "download the model's again")


def _index_weight_map(index: Path) -> Any:
    """The `weight_map` of model.safetensors.index.json; a file that is not UTF-8 JSON, is
    nested too deeply for the parser or has no weight_map is a CheckpointError naming it
    (`import -o`, `--blocks` and a spec's `checkpoint` block all read it here)."""
    def damaged(why: str) -> CheckpointError:
        return CheckpointError(f"{index} is not a valid safetensors index ({why})\nhint: {INDEX_HINT}")

    try:
        found = json.loads(index.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise damaged(str(exc).splitlines()[0][:200]) from None
    except RecursionError:  # `[[[[...` nested deeper than Python's parser goes
        raise damaged("nested too deeply to read") from None
    except OSError as exc:
        raise damaged(f"cannot read it: {exc.strerror or exc}") from None
    if not isinstance(found, dict):
        raise damaged(f"it holds a JSON {type(found).__name__}, not an object")
    if "weight_map" not in found:
        raise damaged("it has no weight_map")
    return found["weight_map"]


def weight_files(root: Path) -> list[Path]:
    """model.safetensors, or the shards listed by model.safetensors.index.json."""
    if (root / HF_WEIGHTS).is_file():
        return [root / HF_WEIGHTS]
    index = root / HF_INDEX
    if index.is_file():
        weight_map = _index_weight_map(index)
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise CheckpointError(f"{index}: weight_map must map tensor names to file names\n"
                                  f"hint: {INDEX_HINT}")
        escaping = sorted({f for f in weight_map.values() if Path(f).name != f})
        if escaping:
            raise CheckpointError(f"{index} lists {escaping[0]!r}, which is not a file in {root}\n"
                                  "hint: shards must sit next to the index")
        files = [root / f for f in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{index} lists {f.name}, which is missing\nhint: the download "
                                      "is incomplete: fetch the model's shards again")
        return files
    if list(root.glob("*.bin")) or list(root.glob("*.pth")):
        raise CheckpointError(
            f"{root} has only pickle weights (.bin/.pth); herd reads safetensors only\n"
            "hint: convert with transformers: model.save_pretrained(dir, safe_serialization=True)"
        )
    raise CheckpointError(f"{root} has neither {HF_WEIGHTS} nor {HF_INDEX}")


#: a safetensors header longer than this is a damaged file, not a model (405B's is ~100 KB)
MAX_HEADER_BYTES = 100 << 20


def header_names(path: Path) -> list[str]:
    """The tensor names a safetensors file holds, from its header alone and without torch:
    8 bytes of little-endian length, then that much JSON."""
    return [k for k in _header(path)[0] if k != "__metadata__"]


#: what a damaged or truncated weight file is met with
REFETCH_HINT = "the download or copy was cut short or damaged: fetch the file again"


def _header(path: Path) -> tuple[dict[str, Any], int, int]:
    """(a safetensors file's header, the header's length, the file's size in bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head.startswith(b"version "):  # a git-lfs pointer: the weights were never fetched
                raise CheckpointError(f"{path} is a git-lfs pointer, not the weights\nhint: fetch them "
                                      "(`git lfs pull` in the model's repository) and try again")
            length = int.from_bytes(head, "little") if len(head) == 8 else 0
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise ValueError(f"header length {length:,}")
            header = json.loads(f.read(length))
            size = os.fstat(f.fileno()).st_size
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})\nhint: {REFETCH_HINT}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a readable safetensors file (its header is not an object)\n"
                              f"hint: {REFETCH_HINT}")
    return header, length, size


def incomplete(path: Path) -> str | None:
    """Why a safetensors file is not as long as its header says (as safetensors itself
    requires when the weights are read), or None when it is: a download cut short inside the
    tensors, or a file grown past them, is found from the header alone, without torch. A file
    whose header cannot be read at all is a CheckpointError, as for `header_names`."""
    header, length, size = _header(path)
    ends = {name: _data_end(entry) for name, entry in header.items() if name != "__metadata__"}
    bad = next((name for name, end in ends.items() if end is None), None)
    if bad is not None:
        raise CheckpointError(f"{path} is not a readable safetensors file (tensor {bad!r} has no valid "
                              f"data_offsets)\nhint: {REFETCH_HINT}")
    want = 8 + length + max((end for end in ends.values() if end is not None), default=0)
    if size == want:
        return None
    what = "cut short" if size < want else "longer than its header describes"
    return f"{path} is {what}: {size:,} bytes where its header describes {want:,}"


def _data_end(entry: Any) -> int | None:
    """Where a header entry's bytes end in the data section, or None when it has no valid
    `data_offsets` (two whole numbers, begin <= end)."""
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]):
        return None
    return offsets[1]


def check_weights(root: Path) -> list[str]:
    """What `herd import -o` refuses in a Hugging Face folder's weight files, for `herd import
    --blocks`, which would otherwise pass such a folder off as one whose weights are "not
    there yet". Raised: pickle only, a damaged index or a missing shard, a git-lfs pointer.
    Returned, as warnings: files whose size is not what their header says (a download cut
    short); only warned of because --blocks reads headers alone, and a header without its
    tensors is how blocks are written for a model whose weights are not downloaded (tests do).
    A folder with no weight file of any kind passes, as does a herd checkpoint (its loader
    checks its weights against meta.json)."""
    if (root / META_FILE).is_file():
        return []
    kinds = ("*.safetensors", "*.bin", "*.pth", HF_INDEX)
    if all(next(root.glob(kind), None) is None for kind in kinds):
        return []
    warnings = []
    for path in weight_files(root):
        problem = incomplete(path)
        if problem is not None:
            warnings.append(f"{problem}; `herd import -o` and a spec's checkpoint block refuse it\n"
                            f"hint: {REFETCH_HINT}")
    return warnings


#: a layer's tensor in either layout (ASCII digits only: `int()` would read `²` or `٣`)
LAYER_NAME = re.compile(r"(?:model\.)?layers\.([0-9]{1,9})\.")


def stored_layers(files: list[Path]) -> set[int]:
    """The layer indices whose tensors the weight files hold (`model.layers.N.` in the Hugging
    Face layout, `layers.N.` in herd's)."""
    found: set[int] = set()
    for path in files:
        for name in header_names(path):
            if (m := LAYER_NAME.match(name)) is not None:
                found.add(int(m.group(1)))
    return found


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
    hf = read_config_json(config_path)
    weight_files(root)  # no weights (or pickle only) is reported before anything else is read
    return herd_config(hf, name=root.name, where=config_where(root))


def config_where(root: Path) -> str:
    """How messages name a folder's config.json: `FOLDER: config.json`, the folder first (a
    spec's `checkpoint` block and `herd import` name the folder, not the file)."""
    return f"{root}: config.json"


def read_config_json(path: Path) -> Any:
    """config.json's content; a file that is not UTF-8 JSON (or is nested too deeply for the
    parser) is a CheckpointError naming it, as `import`, `--blocks` and a spec's `checkpoint`
    block all report it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})\nhint: {CONFIG_HINT}") from None
    except RecursionError:
        raise CheckpointError(f"{path} is not valid JSON (nested too deeply to read)\n"
                              f"hint: {CONFIG_HINT}") from None
