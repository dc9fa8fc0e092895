"""herd's tiktoken BPE written as a Hugging Face tokenizer gives the same ids for any text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer

from runtime.data.hf_tokenizer import _split, write_hf_tokenizer
from runtime.data.tokenizer import load_tokenizer, save_tokenizer, train_bpe
from runtime.post.chat import encode_dialog, encode_prompt

ROOT = Path(__file__).resolve().parents[2]
ODD_TEXTS = [
    "héllo wörld  \n\n\t 12345678 ünïcödé 日本語のテキスト 🙂🙂 ... ",
    "   leading spaces", "trailing   ", "a\r\nb\r\n\r\n", "", " ", "\n", "x" * 500,
    "I'm sure THEY'LL say it's 3.14159265 or 1,000,000", "\x00\x01 control \x7f",
]


def _corpus() -> list[str]:
    files = sorted((ROOT / "runtime").rglob("*.py")) + sorted((ROOT / "docs").glob("*.md"))
    return [p.read_text(encoding="utf-8") for p in files]


@pytest.fixture(scope="module", params=["llama3", "gpt2"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    texts = _corpus()
    herd_dir, out = tmp_path_factory.mktemp("herd-tok"), tmp_path_factory.mktemp("hf-tok")
    _, ranks = train_bpe(texts[::2], 1500, request.param)  # held out: the odd files
    save_tokenizer(herd_dir, ranks, request.param, 256)
    assert write_hf_tokenizer(herd_dir, out, max_context=2048) == ["tokenizer.json",
                                                                    "tokenizer_config.json"]
    return load_tokenizer(herd_dir), out, texts[1::2]


def test_every_text_gets_the_same_ids_as_herds_tokenizer(exported) -> None:
    herd, out, held_out = exported
    hf = HFTokenizer.from_file(str(out / "tokenizer.json"))
    assert hf.get_vocab_size() == herd.n_vocab
    # herd's encode() reads "<|eot_id|>" in a document as plain text; Hugging Face parses
    # special-token strings unless told not to (see the next test for that difference)
    hf.encode_special_tokens = True
    for text in held_out + ODD_TEXTS:
        ids = herd.encode(text)
        assert hf.encode(text, add_special_tokens=False).ids == ids
        assert hf.decode(ids, skip_special_tokens=False) == text


def test_special_token_strings_in_text_are_parsed_as_hugging_face_does(exported) -> None:
    herd, out, _ = exported
    hf = HFTokenizer.from_file(str(out / "tokenizer.json"))
    text = "<|begin_of_text|>question<|eot_id|>answer<|end_of_text|>"
    assert hf.encode(text, add_special_tokens=False).ids == herd.encode(text, allow_special=True)
    assert hf.token_to_id("<|eot_id|>") == herd.eot_id


def test_each_merged_token_splits_into_two_lower_ranked_parts() -> None:
    ranks = {bytes([b]): b for b in range(256)}
    for token in (b"ab", b"abc", b"bc", b"abcbc"):
        ranks[token] = len(ranks)
    assert _split(b"abc", ranks) == (b"ab", b"c")
    assert _split(b"abcbc", ranks) == (b"abc", b"bc")
    ranks[b"xyz"] = len(ranks)  # no "xy" or "yz": not from byte-pair merging
    with pytest.raises(ValueError, match="not the merge of two lower-ranked tokens"):
        _split(b"xyz", ranks)


def test_transformers_loads_it_with_herds_chat_format(exported) -> None:
    transformers = pytest.importorskip("transformers")
    herd, out, held_out = exported
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 2048 and tok.eos_token == "<|eot_id|>"
    plain = ODD_TEXTS[0] + ODD_TEXTS[8]
    assert tok(plain)["input_ids"] == herd.encode(plain)  # no BOS added, as in pre-training
    dialog = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "add 2 3"},
              {"role": "assistant", "content": "5"}]

    def ids(encoded) -> list[int]:  # a list, or a BatchEncoding in newer transformers
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)

    if config_pattern(out) != "llama3":
        # GPT-2's split reads the header's "\n\n" + "Be" as "\n", "\n", "Be" when joined, and
        # herd (like Meta's reference) encodes the header apart from the content
        return
    assert ids(tok.apply_chat_template(dialog, tokenize=True)) == encode_dialog(herd, dialog).tokens
    prompt = tok.apply_chat_template(dialog[:2], tokenize=True, add_generation_prompt=True)
    assert ids(prompt) == encode_prompt(herd, dialog[:2])


def config_pattern(out: Path) -> str:
    split = json.loads((out / "tokenizer.json").read_text())["pre_tokenizer"]["pretokenizers"][0]
    return "llama3" if "[\\r\\n]+" in split["pattern"]["Regex"] else "gpt2"


def test_it_writes_no_code(exported) -> None:
    """The export is data only: no tokenizer class to import, no remote code."""
    _, out, _ = exported
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and "auto_map" not in config
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
