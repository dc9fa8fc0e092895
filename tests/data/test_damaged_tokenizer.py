"""A damaged tokenizer artifact (its tokenizer.json edited or corrupted) is refused when it is
loaded, naming the file with a hint, by `herd generate`, `herd chat` and `herd export`: never
tiktoken's regex error, a KeyError for a special token at the first prompt, or special-token
ids silently renumbered."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from herdlang.cli import main
from runtime.data.tokenizer import LLAMA3_PATTERN, Tokenizer, load_tokenizer, save_tokenizer
from runtime.jobs.context import JobFailed

N_RANKS, N_SPECIAL = 256, 16
SMALL = {"name": "small", "vocab_size": 320, "dim": 32, "layers": 1, "heads": 2, "kv_heads": 1,
         "head_dim": 16, "ffn_dim": 64, "norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
         "tied_embeddings": False, "init_std": 0.02, "max_context": 64, "document_mask": True}
HINT = "hint: the tokenizer artifact is damaged: train or load it again"


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        meta[key] = value
    return edit


def _special(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        meta["special_tokens"][name] = value
    return edit


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        del meta["special_tokens"][name]
    return edit


#: (edit of tokenizer.json, what the message says after the file's name)
DAMAGE = {
    "pattern that does not compile": (_set("pattern", "((("), ": its pattern '(((' is not one of herd's "
                                      "pre-tokenization splits (llama3, gpt2)"),
    "pattern that matches nothing": (_set("pattern", "(?=x)"), ": its pattern '(?=x)' is not one of herd's"),
    "no special tokens": (_set("special_tokens", {}), " has no special token <|begin_of_text|>: herd's chat "
                          "format and generation use Llama 3's"),
    "no start_header_id": (_drop("<|start_header_id|>"), " has no special token <|start_header_id|>"),
    "a huge id": (_special("<|eot_id|>", 10**30), ": special token <|eot_id|> has id 1e+30, past the "
                  f"tokenizer's {N_RANKS + N_SPECIAL} ids (special tokens take {N_RANKS} to "
                  f"{N_RANKS + N_SPECIAL - 1})"),
    "a rank's id": (_special("<|eot_id|>", 5), f": special token <|eot_id|> has id 5, which is the id of a "
                    f"rank in tokenizer.model (0 to {N_RANKS - 1})"),
    "a negative id": (_special("<|eot_id|>", -1), ": special token <|eot_id|> has id -1, which is negative"),
    "a shared id": (_special("<|eot_id|>", N_RANKS), f": special tokens <|begin_of_text|> and <|eot_id|> "
                    f"share id {N_RANKS}"),
    "a bool id": (_special("<|eot_id|>", True), " is unreadable (special_tokens must map names to ids"),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tokenizer artifact and a checkpoint whose vocabulary fits it (read-only: each test
    copies what it damages)."""
    from runtime.model import from_config, save_checkpoint

    root = tmp_path_factory.mktemp("tok")
    (root / "tok").mkdir()
    ranks = {bytes([b]): b for b in range(N_RANKS)}  # the bytes alone: a byte-level BPE without merges
    save_tokenizer(root / "tok", ranks, "llama3", N_SPECIAL)
    return {"tok": root / "tok", "ckpt": save_checkpoint(from_config(SMALL, seed=0), root / "ckpt")}


def _damaged(made: dict[str, Path], where: Path, case: str) -> Path:
    """A copy of the tokenizer artifact with `case` done to its tokenizer.json."""
    shutil.copytree(made["tok"], where)
    meta = json.loads((where / "tokenizer.json").read_text(encoding="utf-8"))
    DAMAGE[case][0](meta)
    (where / "tokenizer.json").write_text(json.dumps(meta), encoding="utf-8")
    return where


def herd(*args: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the command line, run in this process."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


@pytest.mark.parametrize("case", list(DAMAGE))
def test_load_tokenizer_names_the_damage_and_the_file(made: dict[str, Path], tmp_path: Path, case: str) -> None:
    tok = _damaged(made, tmp_path / "tok", case)
    with pytest.raises(JobFailed) as caught:
        load_tokenizer(tok)
    message = str(caught.value)
    assert message.startswith(f"{tok / 'tokenizer.json'}{DAMAGE[case][1]}"), message
    assert HINT in message and "--tokenizer" in message


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("case", ["pattern that does not compile", "no special tokens", "a huge id",
                                  "a rank's id"])
def test_generate_with_a_damaged_tokenizer_exits_1_naming_it(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, chat: bool) -> None:
    tok = _damaged(made, tmp_path / "tok", case)
    code, out, err = herd("generate", made["ckpt"], "--prompt", "hi", "--max-new-tokens", "2", "--tokenizer", tok,
                          *(["--chat"] if chat else []), capsys=capsys)
    assert code == 1 and out == ""
    assert f"{tok / 'tokenizer.json'}{DAMAGE[case][1]}" in err and HINT in err


def test_chat_with_a_damaged_tokenizer_exits_1_naming_it(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    tok = _damaged(made, tmp_path / "tok", "no special tokens")
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    code, _, err = herd("chat", made["ckpt"], "--tokenizer", tok, capsys=capsys)
    assert code == 1 and f"{tok / 'tokenizer.json'} has no special token <|begin_of_text|>" in err


@pytest.mark.parametrize("case", ["pattern that does not compile", "no special tokens", "a shared id"])
def test_export_refuses_a_checkpoints_damaged_tokenizer_before_writing(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    ckpt = shutil.copytree(made["ckpt"], tmp_path / "ckpt")
    tok = _damaged(made, tmp_path / "tok", case)
    for name in ("tokenizer.json", "tokenizer.model"):  # a post-training checkpoint carries its own
        shutil.copy(tok / name, ckpt / name)
    code, _, err = herd("export", ckpt, "-o", tmp_path / "out", capsys=capsys)
    assert code == 1 and f"{ckpt / 'tokenizer.json'}{DAMAGE[case][1]}" in err and HINT in err
    assert not (tmp_path / "out").exists()


def test_a_healthy_tokenizer_keeps_its_ids_and_exports(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = load_tokenizer(made["tok"])
    recorded = json.loads((made["tok"] / "tokenizer.json").read_text(encoding="utf-8"))["special_tokens"]
    assert tok.special_tokens == recorded and tok.bos_id == N_RANKS
    code, _, err = herd("export", made["ckpt"], "-o", tmp_path / "out", "--tokenizer", made["tok"], capsys=capsys)
    assert code == 0, err


def test_a_tokenizer_built_without_llama3_specials_says_which_is_missing() -> None:
    tok = Tokenizer({bytes([b]): b for b in range(256)}, LLAMA3_PATTERN, ["<|x|>"])
    for which, name in (("bos_id", "begin_of_text"), ("eos_id", "end_of_text"), ("eot_id", "eot_id")):
        with pytest.raises(JobFailed, match=rf"this tokenizer has no special token <\|{name}\|>; hint: herd's chat"):
            getattr(tok, which)
