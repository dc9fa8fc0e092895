"""A Hugging Face tokenizer.json (Llama 3's format) as a tokenizer block's `file`.

herd tokenizer -> tokenizer.json (herd's export) -> `tokenizer.load` gives the same ranks and
ids, as does a tokenizer.json laid out the way transformers converts Meta's rank file; the
`tokenizers` library agrees on every text. Each file herd cannot serve exactly is refused with
a JobFailed that names the file and says what to do.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from tokenizers import Tokenizer as HFTokenizer

from data.helpers import run_job, stats_of
from runtime.data.hf_tokenizer import (
    PROBE,
    _check_probe,
    hf_tokenizer_json,
    is_hf_tokenizer_file,
    write_hf_tokenizer,
)
from runtime.data.tokenizer import (
    PATTERNS,
    _byte_decoder,
    load_ranks,
    load_tokenizer,
    save_tokenizer,
    special_token_names,
    train_bpe,
)
from runtime.executor import external
from runtime.jobs.context import JobFailed

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "héllo wörld  \n\n\t 12345678 ünïcödé 日本語のテキスト 🙂🙂 ... ",
    "   leading spaces", "trailing   ", "a\r\nb\r\n\r\n", "", " ", "\n", "x" * 300,
    "I'm sure THEY'LL say it's 3.14159265 or 1,000,000", "\x00\x01 control \x7f",
    "def add(a, b):\n    return a + b  # 0123456789\n", "Ω≈ç√∫ ١٢٣ ๑๒๓ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]
SPECIAL_TEXT = "<|begin_of_text|>question<|eot_id|>answer<|end_of_text|><|reserved_special_token_7|>"


def _corpus() -> list[str]:
    files = sorted((ROOT / "runtime" / "data").rglob("*.py")) + sorted((ROOT / "docs").glob("*.md"))
    return [p.read_text(encoding="utf-8") for p in files]


_MADE: dict[str, tuple[Path, Path, str, list[str]]] = {}


def _made(tmp_path_factory: pytest.TempPathFactory, pattern: str) -> tuple[Path, Path, str, list[str]]:
    """(herd tokenizer artifact, its exported tokenizer.json, pattern, held-out texts)."""
    if pattern not in _MADE:
        texts = _corpus()
        herd_dir, hf_dir = tmp_path_factory.mktemp("herd"), tmp_path_factory.mktemp("hf")
        _, ranks = train_bpe(texts[::2], 700, pattern)
        save_tokenizer(herd_dir, ranks, pattern, 256)
        write_hf_tokenizer(herd_dir, hf_dir, max_context=2048)
        _MADE[pattern] = herd_dir, hf_dir / "tokenizer.json", pattern, texts[1::2]
    return _MADE[pattern]


@pytest.fixture(scope="module", params=["llama3", "gpt2"])
def herd_tok(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    return _made(tmp_path_factory, request.param)


def _load(tmp: Path, file: Path, pattern: str = "llama3", special_tokens: int = 256,
          name: str = "load") -> Path:
    return run_job(tmp, "tokenizer.load", {"file": str(file), "pattern": pattern,
                                           "special_tokens": special_tokens}, name=name)


def test_export_then_load_gives_the_same_ranks_and_ids(herd_tok, tmp_path: Path) -> None:
    herd_dir, tokenizer_json, pattern, held_out = herd_tok
    out = _load(tmp_path, tokenizer_json, pattern)
    assert (out / "tokenizer.model").read_bytes() == (herd_dir / "tokenizer.model").read_bytes()
    ours, loaded = load_tokenizer(herd_dir), load_tokenizer(out)
    assert loaded.special_tokens == ours.special_tokens and loaded.n_vocab == ours.n_vocab == 956
    hf = HFTokenizer.from_file(str(tokenizer_json))
    hf.encode_special_tokens = True  # herd reads special-token strings in text as text
    for text in held_out[:4] + TEXTS + [SPECIAL_TEXT]:
        ids = loaded.encode(text)
        assert ids == ours.encode(text) == hf.encode(text, add_special_tokens=False).ids
        assert loaded.decode(ids) == text
    hf.encode_special_tokens = False
    specials = loaded.encode(SPECIAL_TEXT, allow_special=True)
    assert specials == hf.encode(SPECIAL_TEXT, add_special_tokens=False).ids
    assert specials[0] == loaded.bos_id == 700 and loaded.eot_id == 709
    stats = stats_of(out)
    assert stats["format"] == "huggingface" and stats["n_ranks"] == 700
    assert "Hugging Face tokenizer.json" in (out / "report.md").read_text(encoding="utf-8")
    recorded = json.loads((out / external.EXTERNAL).read_text(encoding="utf-8"))
    assert str(tokenizer_json) in json.dumps(recorded)  # an edited file rebuilds the job


def _converter_layout(ranks: dict[bytes, int], pattern: str, n_special: int) -> dict[str, Any]:
    """A tokenizer.json laid out as transformers converts Meta's rank file for Llama 3: every
    split of a token into two tokens as a merge (strings "a b"), sorted by the token's rank,
    special tokens outside the vocabulary, and a post-processor that adds <|begin_of_text|>."""
    names = special_token_names(n_special)
    data = hf_tokenizer_json(ranks, pattern, {n: len(ranks) + i for i, n in enumerate(names)})
    to_unicode = {b: ch for ch, b in _byte_decoder().items()}

    def text(token: bytes) -> str:
        return "".join(to_unicode[b] for b in token)

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        splits = [(token[:i], token[i:]) for i in range(1, len(token))
                  if token[:i] in ranks and token[i:] in ranks]
        merges += [(rank, ranks[a], ranks[b], f"{text(a)} {text(b)}") for a, b in splits]
    data["model"]["merges"] = [m[-1] for m in sorted(merges)]
    bos = len(ranks)
    data["post_processor"] = {"type": "TemplateProcessing", "single": [
        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
        {"Sequence": {"id": "A", "type_id": 0}}], "pair": [
        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
        {"Sequence": {"id": "A", "type_id": 0}},
        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
        {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos],
                                                 "tokens": ["<|begin_of_text|>"]}}}
    return data


def test_a_tokenizer_json_in_transformers_llama3_layout_loads(herd_tok, tmp_path: Path) -> None:
    herd_dir, _, pattern, held_out = herd_tok
    ours = load_tokenizer(herd_dir)
    data = _converter_layout(load_ranks(herd_dir / "tokenizer.model"), PATTERNS[pattern], 256)
    assert len(data["model"]["merges"]) > 700 - 256  # several merges per token, as Llama 3's
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    loaded = load_tokenizer(_load(tmp_path, path, pattern))
    hf = HFTokenizer.from_file(str(path))
    hf.encode_special_tokens = True
    for text in held_out[:4] + TEXTS:
        assert loaded.encode(text) == ours.encode(text) == hf.encode(text, add_special_tokens=False).ids
    # what transformers adds when asked for special tokens is <|begin_of_text|>, herd's bos
    assert hf.encode("hi").ids == [loaded.bos_id] + loaded.encode("hi")


def test_transformers_own_conversion_of_the_rank_file_loads(herd_tok, tmp_path: Path) -> None:
    """The code that made Meta's Llama 3 tokenizer.json from its tokenizer.model, where installed."""
    pytest.importorskip("transformers")
    from transformers.convert_slow_tokenizer import TikTokenConverter

    herd_dir, _, pattern, held_out = herd_tok
    converted = TikTokenConverter(vocab_file=str(herd_dir / "tokenizer.model"), pattern=PATTERNS[pattern],
                                  extra_special_tokens=special_token_names(256)).converted()
    path = tmp_path / "tokenizer.json"
    converted.save(str(path))
    out = _load(tmp_path, path, pattern)
    assert (out / "tokenizer.model").read_bytes() == (herd_dir / "tokenizer.model").read_bytes()
    loaded = load_tokenizer(out)
    for text in held_out[:4] + TEXTS:
        assert loaded.encode(text) == converted.encode(text, add_special_tokens=False).ids


def test_it_is_found_by_content_whatever_its_name(herd_tok, tmp_path: Path) -> None:
    herd_dir, tokenizer_json, pattern, _ = herd_tok
    renamed = tmp_path / "tokenizer.model"
    renamed.write_bytes(b"\xef\xbb\xbf\n  " + tokenizer_json.read_bytes())  # a BOM, blank lines
    assert is_hf_tokenizer_file(renamed) and not is_hf_tokenizer_file(herd_dir / "tokenizer.model")
    out = _load(tmp_path, renamed, pattern)
    assert (out / "tokenizer.model").read_bytes() == (herd_dir / "tokenizer.model").read_bytes()
    rank_file = _load(tmp_path, herd_dir / "tokenizer.model", pattern, name="ranks")  # unchanged
    assert stats_of(rank_file)["format"] == "tiktoken"


def test_a_file_without_special_tokens_gets_herds(herd_tok, tmp_path: Path) -> None:
    herd_dir, tokenizer_json, pattern, _ = herd_tok
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    data["added_tokens"] = []
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    loaded = load_tokenizer(_load(tmp_path, path, pattern, special_tokens=16))
    assert loaded.n_vocab == 716 and loaded.eot_id == 709


# -- what is refused --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama3_json(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """herd's export of a Llama 3-pattern tokenizer: 700 ranks, 256 special tokens."""
    return json.loads(_made(tmp_path_factory, "llama3")[1].read_text(encoding="utf-8"))


def _refused(tmp: Path, data: dict[str, Any] | str, *expected: str, **block: Any) -> str:
    path = tmp / "tokenizer.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False),
                    encoding="utf-8")
    with pytest.raises(JobFailed) as info:
        _load(tmp, path, **block)
    message = str(info.value)
    assert message.startswith(str(path)) and "hint: " in message, message
    for text in expected:
        assert text in message, message
    return message


def _edited(data: dict[str, Any], edit) -> dict[str, Any]:
    data = copy.deepcopy(data)
    edit(data)
    return data


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused(llama3_json, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    unigram = json.loads(Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -2.0)], 0,
                                                  False)).to_str())
    _refused(tmp_path, unigram, "not a byte-level BPE (model type 'Unigram')",
             "herd needs a byte-level BPE like Llama 3's")

    def llama2(data: dict[str, Any]) -> None:  # SentencePiece as tokenizers writes it
        data["model"]["byte_fallback"] = True
        data["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "},
                                                  "content": "▁"}]}
        data["pre_tokenizer"] = None

    _refused(tmp_path, _edited(llama3_json, llama2), "byte fallback",
             "herd needs a byte-level BPE like Llama 3's")
    metaspace = _edited(llama3_json, lambda d: d.update(pre_tokenizer={
        "type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}))
    _refused(tmp_path, metaspace, "no ByteLevel", "herd needs a byte-level BPE like Llama 3's")
    _refused(tmp_path, _edited(llama3_json, lambda d: d["model"]["vocab"].update({"▁the": 699})),
             "not a byte-level BPE (vocabulary entry '▁the'")
    _refused(tmp_path, _edited(llama3_json, lambda d: d.update(normalizer={"type": "NFC"})),
             "it normalizes text first (NFC normalizer)", "herd encodes text as it is")


def test_ranks_must_be_contiguous_and_cover_every_byte(llama3_json, tmp_path: Path) -> None:
    def drop(data: dict[str, Any]) -> None:
        vocab = data["model"]["vocab"]
        del vocab[next(t for t, i in vocab.items() if i == 650)]

    _refused(tmp_path, _edited(llama3_json, drop),
             "the vocabulary ids are not the contiguous range 0..698: no token has id 650")

    def rename_byte(data: dict[str, Any]) -> None:  # byte 0x00 ('Ā') loses its token
        vocab = data["model"]["vocab"]
        vocab["ĀĀĀĀĀĀĀĀ"] = vocab.pop("Ā")

    _refused(tmp_path, _edited(llama3_json, rename_byte), "1 single bytes have no token (e.g. 0x00)",
             "must cover all 256 bytes")


def test_merges_must_follow_the_id_order(llama3_json, tmp_path: Path) -> None:
    def swap_merges(data: dict[str, Any]) -> None:
        merges = data["model"]["merges"]
        merges[10], merges[400] = merges[400], merges[10]

    _refused(tmp_path, _edited(llama3_json, swap_merges), "merge 11 makes",
             "the merge order is not the id order", "merges the pair making the lowest id first")

    def swap_ids(data: dict[str, Any]) -> None:  # two merged tokens trade ids
        vocab = data["model"]["vocab"]
        a, b = ("".join(data["model"]["merges"][k]) for k in (100, 200))
        vocab[a], vocab[b] = vocab[b], vocab[a]

    _refused(tmp_path, _edited(llama3_json, swap_ids), "merge 101 makes", "the merge order is not the id order")
    _refused(tmp_path, _edited(llama3_json, lambda d: d["model"]["merges"].append(["Ā", "Ā"])),
             "merge 444 ('Ā' + 'Ā') uses or makes 'ĀĀ', which is not in the vocabulary")


def test_tiktoken_must_reproduce_the_tokenizers_library(herd_tok, tmp_path: Path) -> None:
    """The last check, on a probe text: here with ranks that disagree with the file's merges."""
    herd_dir, tokenizer_json, pattern, _ = herd_tok
    text = tokenizer_json.read_text(encoding="utf-8")
    ranks = load_ranks(herd_dir / "tokenizer.model")
    _check_probe(tokenizer_json, text, ranks, PATTERNS[pattern])  # the file's own ranks agree
    used = max(tiktoken.Encoding("t", pat_str=PATTERNS[pattern], mergeable_ranks=ranks,
                                 special_tokens={}).encode_ordinary(PROBE))
    a, b = (next(t for t, i in ranks.items() if i == r) for r in (used, 699 if used != 699 else 698))
    ranks[a], ranks[b] = ranks[b], ranks[a]
    with pytest.raises(JobFailed, match="encodes a probe text differently from the tokenizers library"):
        _check_probe(tokenizer_json, text, ranks, PATTERNS[pattern])


def test_malformed_json_is_reported_with_line_and_column(llama3_json, tmp_path: Path) -> None:
    text = json.dumps(llama3_json, indent=1)
    cut = text[: text.index('"merges"') + 30]
    message = _refused(tmp_path, cut, "not valid JSON", "download it again")
    line = cut.count("\n") + 1
    assert message.startswith(f"{tmp_path / 'tokenizer.json'}:{line}:")
    _refused(tmp_path, '{"format": "tiktoken-bpe", "n_ranks": 3}',
             "a herd tokenizer artifact's metadata", "point `file` at the tokenizer.model beside it")
    _refused(tmp_path, "[1, 2]", "not a Hugging Face tokenizer.json")


def test_llama31_special_token_names_are_kept(llama3_json, tmp_path: Path) -> None:
    """Llama 3.1 and 3.2 rename reserved tokens; the file's names are the tokenizer's, and the
    ones herd's chat format uses keep their ids."""
    def llama31(data: dict[str, Any]) -> None:
        for i, name in ((4, "<|finetune_right_pad_id|>"), (8, "<|eom_id|>"), (10, "<|python_tag|>")):
            data["added_tokens"][i]["content"] = name

    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(_edited(llama3_json, llama31)), encoding="utf-8")
    tok = load_tokenizer(_load(tmp_path, path))
    assert tok.special_id("<|finetune_right_pad_id|>") == 704 and tok.special_id("<|python_tag|>") == 710
    assert (tok.bos_id, tok.eot_id, tok.special_id("<|start_header_id|>")) == (700, 709, 706)
    assert tok.encode("<|eom_id|>", allow_special=True) == [708]


def test_special_tokens_must_include_the_chat_formats_and_be_as_many_as_the_block_says(
        llama3_json, tmp_path: Path) -> None:
    def no_eot(data: dict[str, Any]) -> None:
        data["added_tokens"][9]["content"] = "<|end_of_turn|>"

    _refused(tmp_path, _edited(llama3_json, no_eot), "it has no <|eot_id|> special token",
             "herd's chat format and generation use Llama 3's <|begin_of_text|>")

    def twice(data: dict[str, Any]) -> None:
        data["added_tokens"][9]["content"] = "<|begin_of_text|>"

    _refused(tmp_path, _edited(llama3_json, twice), "the special token '<|begin_of_text|>' has two ids")
    _refused(tmp_path, llama3_json, "the file has 256 special tokens but the tokenizer block says "
             "special_tokens = 16", "set `special_tokens = 256`", special_tokens=16)

    def gap(data: dict[str, Any]) -> None:
        data["added_tokens"][3]["id"] = 999

    _refused(tmp_path, _edited(llama3_json, gap), "the special token ids are not contiguous after "
             "the 700 ranks: none has id 703")


def test_the_split_pattern_must_be_the_blocks(llama3_json, tmp_path: Path) -> None:
    _refused(tmp_path, llama3_json, "splits text with herd's 'llama3' pattern but the tokenizer "
             "block says pattern = gpt2", "set `pattern = llama3`", pattern="gpt2")

    def gpt2_builtin(data: dict[str, Any]) -> None:  # ByteLevel's own regex is GPT-2's split
        data["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                 "use_regex": True}

    _refused(tmp_path, _edited(llama3_json, gpt2_builtin), "set `pattern = gpt2`")

    def unknown(data: dict[str, Any]) -> None:
        data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\S+"

    _refused(tmp_path, _edited(llama3_json, unknown), "splits with a regex herd does not know",
             "`pattern = llama3`", "`pattern = gpt2`")

    def prefix(data: dict[str, Any]) -> None:
        data["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = True

    _refused(tmp_path, _edited(llama3_json, prefix), "add_prefix_space", "no prefix space")


def test_the_blocks_vocab_must_be_the_files_rank_count(herd_tok, tmp_path: Path) -> None:
    """The model's vocabulary is `vocab` + `special_tokens`: a `vocab` below the file's would
    give token ids the embedding lacks, an IndexError deep in training."""
    herd_dir, hf_json, pattern, _ = herd_tok
    for file in (hf_json, herd_dir / "tokenizer.model"):
        with pytest.raises(JobFailed, match="the file has 700 ranks but the tokenizer block says vocab = 600"):
            run_job(tmp_path, "tokenizer.load", {"file": str(file), "pattern": pattern, "special_tokens": 256,
                                                 "vocab": 600}, name=f"v600_{file.suffix[1:]}")
        run_job(tmp_path, "tokenizer.load", {"file": str(file), "pattern": pattern, "special_tokens": 256,
                                             "vocab": 700}, name=f"v700_{file.suffix[1:]}")
