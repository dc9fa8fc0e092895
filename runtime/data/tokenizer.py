"""Byte-level BPE: trained with `tokenizers`, served by `tiktoken`, stored as a rank file.

Training follows /work/shared/notes/bpe-to-tiktoken.md: the full 256-byte alphabet, one
split with the Llama 3 pattern (ByteLevel without its own GPT-2 regex, no prefix space), and
ranks built from token *bytes*: single bytes take ranks 0..255 by byte value, merged tokens
follow in merge order, so every token ranks after its parts and tiktoken's greedy
lowest-rank merging reproduces the trainer's merges.

Artifact: `tokenizer.model` (tiktoken rank file: base64 token, space, rank; the format of
Llama 3's own tokenizer.model) and `tokenizer.json` (pattern, n_vocab, special tokens).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import tiktoken

from runtime.jobs.context import JobFailed

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GPT-2's split (no case-insensitive contractions, digits in runs of any length)
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PATTERNS = {"llama3": LLAMA3_PATTERN, "gpt2": GPT2_PATTERN}
# Llama 3's special-token order (meta-llama/llama3 tokenizer.py): with 128,000 ranks,
# begin_of_text = 128000 and eot_id = 128009.
LLAMA3_SPECIALS_HEAD = [
    "<|begin_of_text|>", "<|end_of_text|>",
    "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
    "<|start_header_id|>", "<|end_header_id|>",
    "<|reserved_special_token_4|>", "<|eot_id|>",
]
#: the special tokens herd's chat format and generation use, by name
REQUIRED_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                     "<|eot_id|>")
MODEL_FILE = "tokenizer.model"
META_FILE = "tokenizer.json"


def special_token_names(total: int) -> list[str]:
    """Llama 3's special tokens, padded with reserved tokens to `total` (default 256)."""
    head = len(LLAMA3_SPECIALS_HEAD)
    if total < head:
        raise JobFailed(f"special_tokens = {total} is too few: Llama 3 needs at least {head}")
    return LLAMA3_SPECIALS_HEAD + [f"<|reserved_special_token_{i}|>" for i in range(5, total - 5)]


def resolve_pattern(name: str) -> str:
    if name not in PATTERNS:
        raise JobFailed(f"unknown pre-tokenization pattern {name!r}; known: {', '.join(PATTERNS)}")
    return PATTERNS[name]


# --- training ------------------------------------------------------------------------------


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table used by the ByteLevel pre-tokenizer."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def token_bytes(token: str, decoder: dict[str, int] | None = None) -> bytes:
    decoder = decoder or _byte_decoder()
    return bytes(decoder[ch] for ch in token)


def build_hf_tokenizer(pattern: str) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterable[str], vocab: int, pattern: str) -> tuple[Any, dict[bytes, int]]:
    """Train on `texts`; returns (the `tokenizers` object, tiktoken mergeable ranks)."""
    from tokenizers import pre_tokenizers, trainers

    if vocab < 256:
        raise JobFailed(f"vocab = {vocab}: a byte-level BPE needs at least 256 ranks")
    tok = build_hf_tokenizer(pattern)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=[], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return tok, ranks_from_hf(tok)


def ranks_from_hf(tok: Any) -> dict[bytes, int]:
    """Ranks from bytes: 0..255 for single bytes, then merged tokens in merge order."""
    dec = _byte_decoder()
    model = json.loads(tok.to_str())["model"]
    ranks: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    for merge in model["merges"]:
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        lb, rb = token_bytes(left, dec), token_bytes(right, dec)
        if lb not in ranks or rb not in ranks:
            raise ValueError(f"merge {merge!r} uses a token created later")
        merged = lb + rb
        if merged not in ranks:
            ranks[merged] = len(ranks)
    vocab_bytes = {token_bytes(t, dec) for t in model["vocab"]}
    missing = vocab_bytes - ranks.keys()
    if missing:
        raise ValueError(f"{len(missing)} vocabulary entries have no merge path")
    return ranks


# --- rank files ---------------------------------------------------------------------------


def save_tokenizer(directory: Path, ranks: dict[bytes, int], pattern_name: str,
                   n_special: int, extra: dict[str, Any] | None = None,
                   names: Sequence[str] | None = None) -> None:
    """The artifact: the rank file and meta.json. Special tokens take `names` (a loaded
    tokenizer's own: Llama 3.1 renames reserved ones) or herd's Llama 3 names."""
    directory = Path(directory)
    with open(directory / MODEL_FILE, "w", encoding="ascii") as f:
        for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(tok).decode('ascii')} {rank}\n")
    names = list(names) if names else special_token_names(n_special)
    meta = {
        "format": "tiktoken-bpe",
        "pattern_name": pattern_name,
        "pattern": resolve_pattern(pattern_name),
        "n_ranks": len(ranks),
        "n_vocab": len(ranks) + len(names),
        "special_tokens": {name: len(ranks) + i for i, name in enumerate(names)},
        **(extra or {}),
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def load_ranks(path: Path) -> dict[bytes, int]:
    """Parse and validate a tiktoken rank file; problems are reported with file:line."""
    path = Path(path)
    if not path.is_file():
        raise JobFailed(f"tokenizer file {str(path)!r} not found")
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError("expected 'base64-token rank'")
                tok, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
            except (ValueError, binascii.Error) as e:
                raise JobFailed(f"{path}:{lineno}: not a tiktoken rank line ({e}); "
                                "hint: each line is a base64 token, a space and its rank") from None
            if tok in ranks:
                raise JobFailed(f"{path}:{lineno}: token {tok!r} appears twice")
            ranks[tok] = rank
    if not ranks:
        raise JobFailed(f"{path}: empty rank file")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise JobFailed(f"{path}: ranks are not the contiguous range 0..{len(ranks) - 1}")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise JobFailed(f"{path}: {len(missing)} single bytes have no rank (e.g. {missing[0]:#04x}); "
                        "a byte-level BPE must cover all 256")
    return ranks


class Tokenizer:
    """tiktoken-backed tokenizer with Llama 3 special tokens (ids after the ranks)."""

    def __init__(self, ranks: dict[bytes, int], pattern: str, specials: Sequence[str],
                 name: str = "herd") -> None:
        self.special_tokens = {s: len(ranks) + i for i, s in enumerate(specials)}
        self.n_ranks = len(ranks)
        self.encoding = tiktoken.Encoding(
            name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=self.special_tokens,
        )

    @property
    def n_vocab(self) -> int:
        return self.encoding.n_vocab

    def special_id(self, name: str) -> int:
        """A special token's id; one this tokenizer lacks is a clear error, not a KeyError
        (`load_tokenizer` refuses artifacts without Llama 3's, so this is a tokenizer built
        in code with other names)."""
        try:
            return self.special_tokens[name]
        except KeyError:
            raise JobFailed(f"this tokenizer has no special token {name}; hint: herd's chat format and "
                            f"generation use Llama 3's {', '.join(REQUIRED_SPECIALS)}") from None

    @property
    def bos_id(self) -> int:
        return self.special_id("<|begin_of_text|>")

    @property
    def eos_id(self) -> int:
        return self.special_id("<|end_of_text|>")

    @property
    def eot_id(self) -> int:
        return self.special_id("<|eot_id|>")

    def encode(self, text: str, bos: bool = False, eos: bool = False,
               allow_special: bool = False) -> list[int]:
        """Special-token strings inside `text` are plain text unless `allow_special`."""
        ids = (self.encoding.encode(text, allowed_special="all") if allow_special
               else self.encoding.encode_ordinary(text))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(self, texts: list[str], num_threads: int = 2) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return self.encoding.decode_bytes(list(ids))


#: what a damaged tokenizer artifact is met with (herd writes it; nobody edits it by hand)
DAMAGED_HINT = ("hint: the tokenizer artifact is damaged: train or load it again (re-run its "
                "tokenizer job: herd run SPEC --force tokenizer.NAME), or pass another with --tokenizer")


def load_tokenizer(directory: Path) -> Tokenizer:
    """Load a `tokenizer.train` / `tokenizer.load` artifact, checked as `save_tokenizer` writes
    it: a damaged tokenizer.json would otherwise surface as tiktoken's regex error, a KeyError
    for a special token at the first prompt, or special ids silently renumbered."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise JobFailed(f"{directory}: no {META_FILE}; hint: not a tokenizer artifact")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        specials_map, pattern = meta["special_tokens"], meta["pattern"]
        if not (isinstance(specials_map, dict) and isinstance(pattern, str)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in specials_map.values())):
            raise TypeError("special_tokens must map names to ids and pattern must be a string")
    except (OSError, ValueError, RecursionError, KeyError, TypeError) as exc:
        what = f"lacks {exc}" if isinstance(exc, KeyError) else f"is unreadable ({str(exc).splitlines()[0][:200]})"
        raise JobFailed(f"{meta_path} {what}; {DAMAGED_HINT}") from None
    if pattern not in PATTERNS.values():  # tiktoken would refuse it, panic on it, or drop text
        shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
        raise JobFailed(f"{meta_path}: its pattern {shown!r} is not one of herd's pre-tokenization "
                        f"splits ({', '.join(PATTERNS)}); {DAMAGED_HINT}")
    ranks = load_ranks(directory / MODEL_FILE)
    return Tokenizer(ranks, pattern, _specials_in_order(meta_path, specials_map, len(ranks)))


def _specials_in_order(meta_path: Path, specials: dict[str, int], n_ranks: int) -> list[str]:
    """The special tokens' names in id order, after checking their ids are the ones right
    after the ranks (as `save_tokenizer` writes them and `Tokenizer` assigns them) and that
    herd's chat format and generation find theirs."""
    missing = [name for name in REQUIRED_SPECIALS if name not in specials]
    if missing:
        raise JobFailed(f"{meta_path} has no special token {missing[0]}: herd's chat format and "
                        f"generation use Llama 3's {', '.join(REQUIRED_SPECIALS)}; {DAMAGED_HINT}")
    last = n_ranks + len(specials) - 1
    seen: dict[int, str] = {}
    for name, i in specials.items():
        shown = f"{i:,}" if abs(i) < 10**15 else f"{i:.3g}"  # 10**30 is not printed in full
        if i < n_ranks:
            where = f"the id of a rank in {MODEL_FILE} (0 to {n_ranks - 1:,})" if i >= 0 else "negative"
            raise JobFailed(f"{meta_path}: special token {name} has id {shown}, which is {where}; special "
                            f"tokens take the ids after the ranks ({n_ranks:,} to {last:,}); {DAMAGED_HINT}")
        if i > last:
            raise JobFailed(f"{meta_path}: special token {name} has id {shown}, past the tokenizer's "
                            f"{last + 1:,} ids (special tokens take {n_ranks:,} to {last:,}); {DAMAGED_HINT}")
        if i in seen:
            raise JobFailed(f"{meta_path}: special tokens {seen[i]} and {name} share id {i:,}; {DAMAGED_HINT}")
        seen[i] = name
    return [seen[i] for i in sorted(seen)]


def tokenizer_from_file(path: Path, pattern_name: str, n_special: int) -> Tokenizer:
    return Tokenizer(load_ranks(path), resolve_pattern(pattern_name), special_token_names(n_special))


def checkpoint_tokenizer(checkpoint: Path, meta: dict[str, Any], explicit: str | None = None) -> Path | None:
    """The tokenizer artifact that goes with a checkpoint, or None: `explicit` (a user's
    --tokenizer), a copy inside the checkpoint (post-training ones carry one), or the store
    entry its `tokenizer_id` names (a sibling in the store; an annealing snapshot,
    artifact/ckpt-N, sits one level deeper)."""
    checkpoint = Path(checkpoint)
    if explicit:  # what the user named is used or refused, never silently replaced
        if not (Path(explicit) / META_FILE).is_file() or not (Path(explicit) / MODEL_FILE).is_file():
            raise JobFailed(f"--tokenizer {explicit}: not a herd tokenizer artifact (no {META_FILE} "
                            f"and {MODEL_FILE} in it); hint: pass the store entry of a tokenizer "
                            "job (`herd path SPEC tokenizer.NAME`), or leave --tokenizer out to use "
                            "the checkpoint's own")
        return Path(explicit)
    candidates = [checkpoint]
    if meta.get("tokenizer_id"):
        for store in (checkpoint.resolve().parent, checkpoint.resolve().parent.parent):
            candidates.append(store / str(meta["tokenizer_id"]))
    found = next((c for c in candidates if (c / META_FILE).is_file()), None)
    if found == checkpoint:
        verify_recorded_tokenizer(checkpoint, meta)
    return found


def verify_recorded_tokenizer(checkpoint: Path, meta: dict[str, Any]) -> None:
    """The tokenizer files inside a checkpoint whose meta.json records them (`herd import`
    does: extra.tokenizer.files, name -> size and sha256) must still be those files."""
    import hashlib

    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
    recorded = extra.get("tokenizer") if isinstance(extra.get("tokenizer"), dict) else {}
    files = recorded.get("files") if isinstance(recorded.get("files"), dict) else {}
    for name, info in files.items():
        if name not in (MODEL_FILE, META_FILE) or not isinstance(info, dict):
            continue  # only the two files of the artifact, inside the checkpoint
        path = Path(checkpoint) / name
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if digest != info.get("sha256"):
            raise JobFailed(f"{path} {'is missing' if digest is None else 'has changed'}: it "
                            "fails the sha256 its checkpoint's meta.json records, so the tokenizer "
                            "was changed or damaged since the import; hint: import the model "
                            "again, or pass --tokenizer DIR")

