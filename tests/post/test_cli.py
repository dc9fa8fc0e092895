"""`herd generate` / `herd chat` helpers on a post-training checkpoint."""

from __future__ import annotations

import argparse
import io

import pytest
import torch

from runtime.chat import StreamDecoder, chat_cli, generate_cli
from runtime.model import generate, load_checkpoint, save_checkpoint
from runtime.model.llama import Llama
from runtime.post.chat import encode_prompt


def _args(checkpoint, **kw):
    base = {"checkpoint": str(checkpoint), "prompt": "add 1 2", "max_new_tokens": 6,
            "temperature": 0.0, "top_p": 1.0, "top_k": 0, "chat": True, "seed": 0, "system": None}
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture
def sft_checkpoint(job, checkpoint, tokenizer_dir):
    data = job("data.dataset", {"format": "tasks", "generate": {"kinds": ["add"], "count": 10}},
               name="data")
    return job("post.sft", {"lr": 1e-3, "steps": 2, "batch": 4},
               {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data})


def test_stream_decoder_holds_back_partial_utf8(tok):
    out = io.StringIO()
    stream = StreamDecoder(tok, out)
    for t in tok.encode("é!"):  # two byte tokens for é, then !
        stream.push(t)
        assert "\ufffd" not in out.getvalue()
    stream.flush()
    assert out.getvalue() == "é!"


def test_generate_cli_prints_the_greedy_chat_reply(sft_checkpoint, tok):
    out = io.StringIO()
    assert generate_cli(_args(sft_checkpoint), out=out) == 0
    model, _ = load_checkpoint(sft_checkpoint)
    prompt = encode_prompt(tok, [{"role": "user", "content": "add 1 2"}])
    ids = generate(model, [prompt], max_new_tokens=6, temperature=0,
                   stop_tokens=[tok.eot_id, tok.eos_id])[0].tokens
    assert out.getvalue() == tok.decode([t for t in ids if t < tok.n_vocab]) + "\n"


def test_chat_cli_answers_each_line_until_exit(sft_checkpoint):
    out = io.StringIO()
    assert chat_cli(_args(sft_checkpoint), inp=io.StringIO("add 1 2\n/reset\nsort 3 1\n/exit\n"),
                    out=out) == 0
    assert out.getvalue().count("> ") == 4
    assert "(conversation cleared)" in out.getvalue()


def test_chat_commands_are_never_sent_to_the_model_by_mistake(sft_checkpoint):
    out = io.StringIO()
    assert chat_cli(_args(sft_checkpoint), inp=io.StringIO("/rest\n/help\n"), out=out) == 0
    text = out.getvalue()
    assert "unknown command /rest; commands: /reset" in text
    assert text.count("commands: /reset clears the conversation") == 2  # the error and /help
    assert out.getvalue().count("> ") == 3  # no reply was generated


def test_a_missing_checkpoint_is_an_error_not_a_traceback(tmp_path, capsys):
    assert generate_cli(_args(tmp_path / "nope")) == 1
    assert capsys.readouterr().err.startswith("herd: error: ")  # as every other herd command


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")
def test_device_cuda_without_one_is_an_error_not_a_traceback(sft_checkpoint, capsys):
    assert generate_cli(_args(sft_checkpoint, device="cuda")) == 1
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_generate_runs_on_cuda(sft_checkpoint, tok):
    out = io.StringIO()
    assert generate_cli(_args(sft_checkpoint, device="cuda"), out=out) == 0
    assert out.getvalue().endswith("\n")


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused(sft_checkpoint, tmp_path, capsys):
    model, _ = load_checkpoint(sft_checkpoint)
    small_model = tmp_path / "small"
    save_checkpoint(Llama({**model.config, "vocab_size": 200}), small_model)
    assert generate_cli(_args(small_model, tokenizer=str(sft_checkpoint))) == 1
    err = capsys.readouterr().err
    assert "has a vocabulary of 200" in err and "--tokenizer" in err


def test_a_much_smaller_tokenizer_warns_but_padding_does_not(sft_checkpoint, tmp_path, capsys):
    assert generate_cli(_args(sft_checkpoint), out=io.StringIO()) == 0
    assert "warning" not in capsys.readouterr().err  # 266 tokens, vocabulary padded to 272
    model, _ = load_checkpoint(sft_checkpoint)
    big = tmp_path / "big"
    save_checkpoint(Llama({**model.config, "vocab_size": 1024}), big)
    assert generate_cli(_args(big, tokenizer=str(sft_checkpoint)), out=io.StringIO()) == 0
    assert "more than padding explains" in capsys.readouterr().err
