"""Tokenizer: trainer and tiktoken agree on ids, text round-trips, rank files load."""

from __future__ import annotations

import base64
import sysconfig
from pathlib import Path

import pytest

from data.helpers import make_ctx, run_job, stats_of, write_docs
from runtime.data.documents import Document
from runtime.data.tokenizer import (
    LLAMA3_PATTERN,
    PATTERNS,
    Tokenizer,
    _byte_decoder,
    load_tokenizer,
    special_token_names,
    token_bytes,
    train_bpe,
)
from runtime.jobs import registry
from runtime.jobs.context import JobFailed

HARD_TEXTS = [
    "日本語のテキストと中文字符，还有한국어.",
    "emoji 😀👍🏽 👨‍👩‍👧 flags 🇫🇷",
    "control \x00\x01\x07\x1b[0m chars\x7f",
    "windows\r\nline\r\nendings\r\n\r\n",
    "  leading spaces, trailing tabs\t\t\n\n\n",
    "numbers 1234567 3.14159 and 'contractions' they're I'LL",
]


@pytest.fixture(scope="module")
def trained() -> tuple[object, dict[bytes, int], list[str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8") for p in sorted(root.glob("*.py"))[:40]]
    hf, ranks = train_bpe(texts + HARD_TEXTS, 1024, LLAMA3_PATTERN)
    return hf, ranks, texts


def test_every_byte_has_a_rank_and_merges_follow_their_parts(trained) -> None:
    _, ranks, _ = trained
    assert len(ranks) == 1024
    assert all(ranks[bytes([b])] == b for b in range(256))


def test_trainer_and_tiktoken_give_the_same_ids(trained) -> None:
    hf, ranks, texts = trained
    tok = Tokenizer(ranks, LLAMA3_PATTERN, special_token_names(256))
    dec = _byte_decoder()
    id_to_rank = {i: ranks[token_bytes(s, dec)] for s, i in hf.get_vocab().items()}
    for text in texts[:20] + HARD_TEXTS:
        assert [id_to_rank[i] for i in hf.encode(text).ids] == tok.encode(text)


@pytest.mark.parametrize("text", HARD_TEXTS + ["", "never seen: ʕ•ᴥ•ʔ \U0010ffff"])
def test_text_round_trips_exactly(trained, text: str) -> None:
    _, ranks, _ = trained
    tok = Tokenizer(ranks, LLAMA3_PATTERN, special_token_names(256))
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch([text, text]) == [tok.encode(text)] * 2


def test_special_tokens_follow_llama3_order_after_the_ranks(trained) -> None:
    _, ranks, _ = trained
    tok = Tokenizer(ranks, LLAMA3_PATTERN, special_token_names(256))
    assert tok.n_vocab == 1024 + 256
    assert (tok.bos_id, tok.eos_id, tok.eot_id) == (1024, 1025, 1033)
    assert tok.special_id("<|start_header_id|>") == 1030
    assert tok.special_id("<|reserved_special_token_250|>") == 1024 + 255
    assert tok.encode("<|eot_id|>") != [tok.eot_id]  # plain text unless allowed
    assert tok.encode("<|eot_id|>", allow_special=True) == [tok.eot_id]
    assert tok.encode("hi", bos=True, eos=True)[0] == tok.bos_id


def _write_rank_file(path: Path, n: int) -> None:
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    lines += [f"{base64.b64encode(f'tok{i:06d}'.encode()).decode()} {i}" for i in range(256, n)]
    path.write_text("\n".join(lines) + "\n")


def test_a_llama3_sized_rank_file_loads_with_the_published_special_ids(tmp_path: Path) -> None:
    model = tmp_path / "tokenizer.model"
    _write_rank_file(model, 128_000)
    out = run_job(tmp_path, "tokenizer.load", {"file": str(model), "pattern": "llama3",
                                               "special_tokens": 256})
    tok = load_tokenizer(out)
    assert tok.n_vocab == 128_256
    assert tok.bos_id == 128_000 and tok.eot_id == 128_009
    assert (out / "tokenizer.model").read_bytes() == model.read_bytes()


def test_bad_rank_files_are_reported_with_file_and_line(tmp_path: Path) -> None:
    model = tmp_path / "tokenizer.model"
    _write_rank_file(model, 300)
    model.write_text(model.read_text() + "not-base64!! 300\n")
    with pytest.raises(JobFailed, match=f"{model}:301"):
        run_job(tmp_path, "tokenizer.load", {"file": str(model)})
    with pytest.raises(JobFailed, match="not found"):
        run_job(tmp_path, "tokenizer.load", {"file": str(tmp_path / "missing.model")}, name="missing")


@pytest.mark.parametrize("pattern", ["llama3", "gpt2"])
def test_train_job_writes_a_rank_file_that_loads(tmp_path: Path, pattern: str) -> None:
    docs = [Document(f"d{i}", t) for i, t in enumerate(HARD_TEXTS * 20)]
    src = write_docs(tmp_path / "in", docs)
    out = run_job(tmp_path, "tokenizer.train", {"vocab": 300, "pattern": pattern,
                                                "special_tokens": 256, "max_bytes": 10_000_000},
                  {"documents": src})
    tok = load_tokenizer(out)
    assert all(tok.decode(tok.encode(t)) == t for t in HARD_TEXTS)
    assert tok.encoding._pat_str == PATTERNS[pattern]  # the split the spec named
    assert stats_of(out)["n_ranks"] == 300 and "MB/s" in (out / "report.md").read_text()


def test_training_a_tokenizer_moves_its_bar_through_reading_counting_and_merging(tmp_path: Path) -> None:
    """Training on tens of MB takes minutes: the bar must move while `tokenizers` counts,
    then say it is merging, instead of sitting at 0% until the end."""
    docs = [Document(f"d{i}", t) for i, t in enumerate(HARD_TEXTS * 20)]
    nbytes = sum(len(d.text.encode()) for d in docs)
    ctx = make_ctx(tmp_path, "tokenizer.train", {"vocab": 300, "max_bytes": 10_000_000},
                   {"documents": write_docs(tmp_path / "in", docs)})
    seen: list[tuple[str, float, float | None]] = []
    ctx.progress.on_change = lambda p: seen.append((p.info.get("phase", ""), p.done, p.total))
    registry.get("tokenizer.train")(ctx)
    phases = [phase for phase, _, _ in seen]
    assert [k for i, k in enumerate(phases) if k and (i == 0 or phases[i - 1] != k)] == [
        "reading", "counting", "merging"]
    assert seen[-1] == ("merging", nbytes, nbytes)
    counting = [done for phase, done, _ in seen if phase == "counting"]
    assert counting == sorted(counting) and len(counting) == len(docs)


def test_unknown_pattern_is_a_clear_error(tmp_path: Path) -> None:
    src = write_docs(tmp_path / "in", [Document("a", "x")])
    with pytest.raises(JobFailed, match="unknown pre-tokenization pattern 'gpt9'"):
        run_job(tmp_path, "tokenizer.train", {"vocab": 300, "pattern": "gpt9"}, {"documents": src})


def test_an_explicit_tokenizer_that_is_not_one_is_refused_not_replaced(tmp_path) -> None:
    """`herd chat CKPT --tokenizer DIR` with a wrong DIR used to fall back silently to the
    checkpoint's own tokenizer; what the user names is used or refused."""
    from runtime.data.tokenizer import checkpoint_tokenizer, save_tokenizer, train_bpe

    ckpt, tok, wrong = tmp_path / "ckpt", tmp_path / "tok", tmp_path / "wrong"
    for d in (ckpt, tok, wrong):
        d.mkdir()
    _, ranks = train_bpe(["hello world"] * 4, 260, "llama3")
    save_tokenizer(ckpt, ranks, "llama3", 16)  # a checkpoint carrying its own copy
    save_tokenizer(tok, ranks, "llama3", 16)
    assert checkpoint_tokenizer(ckpt, {}) == ckpt
    assert checkpoint_tokenizer(ckpt, {}, str(tok)) == tok
    with pytest.raises(JobFailed, match=r"--tokenizer .*wrong: not a herd tokenizer artifact"):
        checkpoint_tokenizer(ckpt, {}, str(wrong))
