"""herd's tokenizer in the Hugging Face layout, for `herd export --format hf`.

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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.data.tokenizer import META_FILE, MODEL_FILE, _byte_decoder, load_ranks

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
