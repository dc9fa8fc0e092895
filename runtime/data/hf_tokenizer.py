"""herd's tokenizer in the Hugging Face layout, for `herd export --format hf`, and back:
a Hugging Face tokenizer.json (Llama 3's) read as tiktoken ranks, for `tokenizer NAME {
file = "tokenizer.json" }` and `herd import`.

herd serves a byte-level BPE through tiktoken from a rank file; transformers wants a
`tokenizer.json` (the `tokenizers` library's BPE: vocabulary, merges, pre-tokenizer) and a
`tokenizer_config.json`. A rank file has no merge list, but it implies one: a token of rank
r is the merge of the two parts that byte-pair merging with ranks below r leaves of it.
With `ignore_merges` (a whole pre-token found in the vocabulary is taken as is, as tiktoken
does) the two tokenizers give the same ids for every text; the tests check that, special
tokens included.

No beginning-of-text token is added when encoding plain text: herd's pre-training
documents carry none (each ends with <|end_of_text|>); the chat template writes it, as
herd's chat format does.

Reading one (`read_hf_tokenizer`): the vocabulary ids are the ranks (as in Llama 3, whose
tokenizer.json was made from its rank file), so herd accepts a file only where tiktoken
with those ranks encodes exactly as the `tokenizers` library does: a byte-level BPE, no
normalizer, one of herd's split patterns, merges in the id order of the tokens they make,
Llama 3's special tokens after the ranks, and the same ids on a probe text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken

from runtime.data.tokenizer import (
    META_FILE,
    MODEL_FILE,
    PATTERNS,
    REQUIRED_SPECIALS,
    _byte_decoder,
    load_ranks,
    token_bytes,
)
from runtime.jobs.context import JobFailed

HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

# The Llama 3 chat format of runtime/post/chat.py as a Jinja template (data for
# transformers' apply_chat_template; herd itself never evaluates it).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _split(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two parts of `token` that its last merge joined: merge its bytes lowest rank
    first, using only ranks below the token's own, until two parts are left."""
    limit = ranks[token]
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {limit}) is not the merge of two lower-ranked "
                         "tokens; a rank file from byte-pair merging always is")
    return parts[0], parts[1]


def hf_tokenizer_json(ranks: dict[bytes, int], pattern: str, specials: dict[str, int]) -> dict[str, Any]:
    """The `tokenizers` JSON of a byte-level BPE with these ranks, pattern and special ids."""
    to_unicode = {b: ch for ch, b in _byte_decoder().items()}

    def text(token: bytes) -> str:
        return "".join(to_unicode[b] for b in token)

    ordered = sorted(ranks.items(), key=lambda kv: kv[1])
    merges = [[text(a), text(b)] for a, b in (_split(tok, ranks) for tok, _ in ordered if len(tok) > 1)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for name, i in sorted(specials.items(), key=lambda kv: kv[1])
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {text(tok): rank for tok, rank in ordered}, "merges": merges},
    }


def write_hf_tokenizer(tokenizer_dir: Path, out: Path, max_context: int) -> list[str]:
    """Write tokenizer.json and tokenizer_config.json for the herd tokenizer artifact in
    `tokenizer_dir` into `out`; returns the file names written."""
    meta = json.loads((Path(tokenizer_dir) / META_FILE).read_text(encoding="utf-8"))
    ranks = load_ranks(Path(tokenizer_dir) / MODEL_FILE)
    specials: dict[str, int] = {str(k): int(v) for k, v in meta["special_tokens"].items()}
    out = Path(out)
    (out / "tokenizer.json").write_text(
        json.dumps(hf_tokenizer_json(ranks, meta["pattern"], specials), ensure_ascii=False),
        encoding="utf-8")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>" if "<|eot_id|>" in specials else "<|end_of_text|>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": int(max_context),
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    return list(HF_TOKENIZER_FILES)


# --- import: a Hugging Face tokenizer.json as tiktoken ranks -------------------------------

# Text on which tiktoken with the converted ranks must give the ids `tokenizers` gives:
# contractions, digit runs, CJK, emoji, control characters, CRLF and runs of spaces.
PROBE = ("Hello, world! I'm sure THEY'LL say it's 3.14159 or 1,000,000 (2024-12-31).\n"
         "\tdef f(x):\r\n    return x  # ünïcödé 日本語のテキスト 🙂🙂 ...\n\n\n   \x00\x7f end  ")
NOT_BYTE_LEVEL_HINT = ("hint: herd needs a byte-level BPE like Llama 3's: a tokenizer.json with a "
                       "ByteLevel pre-tokenizer, or a tiktoken rank file such as Meta's "
                       "original/tokenizer.model; a SentencePiece tokenizer (Llama 2's, with byte "
                       "fallback, or a Unigram model) cannot be served through tiktoken")


@dataclass
class HFTokenizerFile:
    """What a Hugging Face tokenizer.json holds, in herd's terms: tiktoken ranks (the vocabulary
    ids), the name of herd's split pattern it uses, and its special tokens in id order after
    the ranks (empty when it has none)."""

    ranks: dict[bytes, int]
    pattern_name: str
    specials: list[str]


def is_hf_tokenizer_file(path: Path) -> bool:
    """Read as JSON (a Hugging Face tokenizer.json) rather than as a tiktoken rank file: the
    content starts with `{` (a rank line starts with base64), or the name ends in .json."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"{") or path.suffix == ".json"


def _fail(path: Path, what: str, hint: str) -> JobFailed:
    return JobFailed(f"{path}: {what}; {hint if hint.startswith('hint: ') else 'hint: ' + hint}")


def _pattern_name(path: Path, pre: Any) -> str:
    """herd's name for the split a tokenizer.json's pre-tokenizer makes."""
    if not isinstance(pre, dict):
        raise _fail(path, "not a byte-level BPE (it has no ByteLevel pre-tokenizer)", NOT_BYTE_LEVEL_HINT)
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise _fail(path, "its pre_tokenizer is malformed", "the file is damaged; download it again")
    kinds = [s.get("type") for s in steps]
    if "ByteLevel" not in kinds:
        raise _fail(path, "not a byte-level BPE (pre-tokenizer "
                    f"{' + '.join(map(str, kinds)) or 'empty'}, no ByteLevel)", NOT_BYTE_LEVEL_HINT)
    *splits, last = steps
    known = ", ".join(f"`pattern = {n}`" for n in PATTERNS)
    if last.get("type") != "ByteLevel" or last.get("add_prefix_space"):
        raise _fail(path, f"its pre-tokenizer ({' + '.join(map(str, kinds))}"
                    + (", ByteLevel with add_prefix_space" if last.get("add_prefix_space") else "")
                    + ") is not one herd can reproduce",
                    f"herd splits text with one regex and then maps bytes (ByteLevel last, no prefix "
                    f"space), as Llama 3's tokenizer.json does; it knows {known}")
    if last.get("use_regex", True):  # ByteLevel's own regex is GPT-2's split
        if splits:
            raise _fail(path, "its pre-tokenizer splits twice (a Split, then ByteLevel's own GPT-2 "
                        "regex)", f"herd splits text once; it knows {known}")
        return "gpt2"
    split = splits[0] if len(splits) == 1 else {}
    pattern = split.get("pattern") if isinstance(split.get("pattern"), dict) else {}
    regex = pattern.get("Regex")
    if (split.get("type") != "Split" or not isinstance(regex, str)
            or split.get("behavior") != "Isolated" or split.get("invert")):
        raise _fail(path, f"its pre-tokenizer ({' + '.join(map(str, kinds))}) is not one regex Split "
                    "(behavior Isolated) before ByteLevel", f"herd knows {known}")
    for name, known_regex in PATTERNS.items():
        if regex == known_regex:
            return name
    shown = regex if len(regex) <= 80 else regex[:77] + "..."
    raise _fail(path, f"its pre-tokenizer splits with a regex herd does not know ({shown!r})",
                f"herd knows {known} (Llama 3's and GPT-2's splits)")


def _added_tokens(path: Path, data: dict[str, Any]) -> dict[int, str]:
    added = data.get("added_tokens") or []
    if not isinstance(added, list) or not all(
            isinstance(t, dict) and isinstance(t.get("id"), int) and isinstance(t.get("content"), str)
            for t in added):
        raise _fail(path, "added_tokens is malformed (each needs an integer id and a content)",
                    "the file is damaged; download it again")
    return {t["id"]: t["content"] for t in added}


def _vocab_ranks(path: Path, model: dict[str, Any], added: dict[int, str]) -> dict[bytes, int]:
    """The vocabulary as tiktoken ranks (id = rank), special tokens left out."""
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise _fail(path, "model.vocab is not a map of tokens to integer ids",
                    "the file is damaged; download it again")
    dec = _byte_decoder()
    ranks: dict[bytes, int] = {}
    for token, i in vocab.items():
        if i in added:
            continue  # a special token also listed in the vocabulary
        try:
            ranks[token_bytes(token, dec)] = i
        except KeyError:
            raise _fail(path, f"not a byte-level BPE (vocabulary entry {token!r}, id {i}, is not "
                        "byte-level text)", NOT_BYTE_LEVEL_HINT) from None
    n = len(ranks)
    ids = sorted(ranks.values())
    if ids != list(range(n)):
        twice = next((a for a, b in zip(ids, ids[1:], strict=False) if a == b), None)
        if twice is not None:
            raise _fail(path, f"two vocabulary entries have id {twice}",
                        "the file is damaged; download it again")
        gap = next(k for k, i in enumerate(ids) if i != k)
        where = f" (an added token, {added[gap]!r}, sits there)" if gap in added else ""
        raise _fail(path, f"the vocabulary ids are not the contiguous range 0..{n - 1}: no token has "
                    f"id {gap}{where}",
                    "herd serves the vocabulary as tiktoken ranks, which must be 0..n-1 with the "
                    "special tokens after them")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise _fail(path, f"{len(missing)} single bytes have no token (e.g. {missing[0]:#04x})",
                    "a byte-level BPE must cover all 256 bytes, or some text cannot be encoded")
    return ranks


def _special_names(path: Path, added: dict[int, str], n_ranks: int) -> list[str]:
    """The special tokens after the ranks, under the file's own names (Llama 3.1 and 3.2
    rename reserved ones: <|finetune_right_pad_id|>, <|eom_id|>, <|python_tag|>, ...); the
    ones herd's chat format uses must be among them."""
    specials = sorted(i for i in added if i >= n_ranks)
    if specials != list(range(n_ranks, n_ranks + len(specials))):
        gap = next(n_ranks + k for k, i in enumerate(specials) if i != n_ranks + k)
        raise _fail(path, f"the special token ids are not contiguous after the {n_ranks:,} ranks: "
                    f"none has id {gap}", "herd puts its special tokens at the ids right after the ranks")
    names = [added[i] for i in specials]
    if not names:
        return names
    twice = next((n for k, n in enumerate(names) if n in names[:k]), None)
    if twice is not None:
        raise _fail(path, f"the special token {twice!r} has two ids", "each special token needs one id")
    missing = [n for n in REQUIRED_SPECIALS if n not in names]
    if missing:
        raise _fail(path, f"it has no {missing[0]} special token",
                    "herd's chat format and generation use Llama 3's " + ", ".join(REQUIRED_SPECIALS))
    return names


def _check_merges(path: Path, model: dict[str, Any]) -> None:
    """Merges come in the id order of the tokens they make: then tiktoken (the pair whose
    joined bytes have the lowest rank first) merges as the `tokenizers` BPE (the earliest
    listed merge first) does. A part may have a larger id than what it makes: transformers'
    conversion of a rank file (Llama 3's tokenizer.json) lists every split of each token,
    e.g. "the" + "Ġ" for a "theĠ" made from "th" + "eĠ" before "the" existed; that merge
    fires right after "the" appears under either rule."""
    vocab: dict[str, int] = model["vocab"]
    merges = model.get("merges") or []
    if not isinstance(merges, list):
        raise _fail(path, "model.merges is not a list", "the file is damaged; download it again")
    last = -1
    for k, merge in enumerate(merges):
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise _fail(path, f"merge {k} ({merge!r}) is not a pair of tokens",
                        "the file is damaged; download it again")
        left, right = pair
        made = left + right
        for token in (left, right, made):
            if token not in vocab:
                raise _fail(path, f"merge {k} ({left!r} + {right!r}) uses or makes {token!r}, which "
                            "is not in the vocabulary", "the file is damaged; download it again")
        r = vocab[made]
        if r < last:
            raise _fail(path, f"merge {k} makes {made!r} (id {r}) after an earlier merge made id "
                        f"{last}: the merge order is not the id order",
                        "herd encodes with tiktoken, which merges the pair making the lowest id "
                        "first, so it needs merges listed in the id order of the tokens they make, "
                        "as Llama 3's tokenizer.json has; with this file it would split text "
                        "differently from the model's own tokenizer")
        last = r


def _check_probe(path: Path, text: str, ranks: dict[bytes, int], pattern: str) -> None:
    """tiktoken with these ranks gives the ids the `tokenizers` library gives, on PROBE."""
    from tokenizers import Tokenizer as HFTokenizer

    try:
        hf = HFTokenizer.from_str(text)
    except Exception as exc:  # the Rust side reports its own error types
        raise _fail(path, f"the tokenizers library cannot load it ({exc})",
                    "the file is damaged, or from a newer tokenizers version than the one installed") from None
    ours = tiktoken.Encoding(name="probe", pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens={}).encode_ordinary(PROBE)
    theirs = hf.encode(PROBE, add_special_tokens=False).ids
    if ours != theirs:
        k = next((k for k, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                 min(len(ours), len(theirs)))
        raise _fail(path, f"tiktoken with its vocabulary as ranks encodes a probe text differently "
                    f"from the tokenizers library (token {k}: {ours[k:k + 3]} vs {theirs[k:k + 3]})",
                    "herd can serve only a byte-level BPE that tiktoken reproduces exactly, as it "
                    "does Llama 3's (no normalizer, merges in id order, ignore_merges)")


def read_hf_tokenizer(path: Path) -> HFTokenizerFile:
    """Convert a Hugging Face tokenizer.json (a byte-level BPE such as Llama 3's) to tiktoken
    ranks, checking that herd can serve it exactly; each problem is a JobFailed with a hint."""
    path = Path(path)
    if not path.is_file():
        raise JobFailed(f"tokenizer file {str(path)!r} not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
        data = json.loads(text)
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not UTF-8 text (byte {exc.start})", "a tokenizer.json is UTF-8 JSON; "
                    "for a tiktoken rank file, the content must be 'base64-token rank' lines") from None
    except json.JSONDecodeError as exc:
        raise JobFailed(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); hint: the "
                        "file is damaged or cut short; download it again") from None
    except RecursionError:  # `[[[[...` nested deeper than Python's parser goes
        raise _fail(path, "not valid JSON (nested too deeply to read)",
                    "the file is damaged; download it again") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        if isinstance(data, dict) and data.get("format") == "tiktoken-bpe":
            raise _fail(path, "this is a herd tokenizer artifact's metadata, not a Hugging Face "
                        "tokenizer.json", f"point `file` at the {MODEL_FILE} beside it")
        raise _fail(path, "not a Hugging Face tokenizer.json (no \"model\" object)",
                    "`file` takes a tiktoken rank file or a Hugging Face tokenizer.json")
    model = data["model"]
    if model.get("type") != "BPE":
        raise _fail(path, f"not a byte-level BPE (model type {model.get('type')!r})", NOT_BYTE_LEVEL_HINT)
    if model.get("byte_fallback"):
        raise _fail(path, "not a byte-level BPE (a BPE with byte fallback, as SentencePiece "
                    "tokenizers such as Llama 2's)", NOT_BYTE_LEVEL_HINT)
    pattern_name = _pattern_name(path, data.get("pre_tokenizer"))
    if data.get("normalizer") is not None:
        raise _fail(path, f"it normalizes text first ({data['normalizer'].get('type', '?')} "
                    "normalizer)" if isinstance(data["normalizer"], dict) else "it has a normalizer",
                    "herd encodes text as it is, as Llama 3's tokenizer does (normalizer: null)")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise _fail(path, "its BPE marks word pieces (continuing_subword_prefix / end_of_word_suffix)",
                    "herd needs a plain byte-level BPE like Llama 3's")
    added = _added_tokens(path, data)
    ranks = _vocab_ranks(path, model, added)
    specials = _special_names(path, added, len(ranks))
    _check_merges(path, model)
    _check_probe(path, text, ranks, PATTERNS[pattern_name])
    return HFTokenizerFile(ranks, pattern_name, specials)


def check_block(found: HFTokenizerFile, path: Path, pattern_name: str, n_special: int,
                n_ranks: int | None = None) -> None:
    """The tokenizer block's `pattern`, `special_tokens` (and `vocab`, when given) must say
    what the file does."""
    if pattern_name != found.pattern_name:
        raise _fail(Path(path), f"the file splits text with herd's {found.pattern_name!r} pattern "
                    f"but the tokenizer block says pattern = {pattern_name}",
                    f"set `pattern = {found.pattern_name}` in the tokenizer block")
    if found.specials and len(found.specials) != n_special:
        raise _fail(Path(path), f"the file has {len(found.specials)} special tokens but the "
                    f"tokenizer block says special_tokens = {n_special}",
                    f"set `special_tokens = {len(found.specials)}` in the tokenizer block")
    check_ranks(found.ranks, path, n_ranks)


def check_ranks(ranks: dict[bytes, int], path: Path, n_ranks: int | None) -> None:
    """The block's `vocab` (its BPE ranks) is the file's: the model's vocabulary is `vocab` +
    `special_tokens`, so a smaller one gives token ids the embedding does not have (an index
    error in the middle of training) and a larger one ids no text ever uses."""
    if n_ranks is not None and int(n_ranks) != len(ranks):
        raise _fail(Path(path), f"the file has {len(ranks):,} ranks but the tokenizer block says "
                    f"vocab = {int(n_ranks):,}",
                    f"set `vocab = {_spelled_count(len(ranks))}` in the tokenizer block (the BPE ranks, "
                    "without the special tokens)")


def _spelled_count(n: int) -> str:
    return f"{n:_}" if n >= 10_000 else str(n)


def load_ranks_or_hf(path: Path, pattern_name: str, n_special: int,
                     n_ranks: int | None = None) -> tuple[dict[bytes, int], str, list[str] | None]:
    """(ranks, format, special-token names or None for herd's) of a tokenizer block's `file`:
    a Hugging Face tokenizer.json (found by its content) checked against the block, or a
    tiktoken rank file; with `n_ranks` (the block's `vocab`) the file must have that many."""
    if is_hf_tokenizer_file(path):
        found = read_hf_tokenizer(path)
        check_block(found, path, pattern_name, n_special, n_ranks)
        return found.ranks, "huggingface", found.specials or None
    ranks = load_ranks(path)
    check_ranks(ranks, path, n_ranks)
    return ranks, "tiktoken", None
