"""`herd generate` and `herd chat`: talk to a checkpoint from the terminal, tokens streamed.

The tokenizer is found next to the weights: a post-training checkpoint carries a copy of
its tokenizer; otherwise `--tokenizer DIR`, or the store entry named by the checkpoint's
`tokenizer_id` (a sibling directory in the same store; every training job records it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import torch

from runtime.data.tokenizer import Tokenizer, checkpoint_tokenizer, load_tokenizer
from runtime.jobs.context import JobFailed, resolve_device
from runtime.model import CheckpointError, load_checkpoint
from runtime.model.generation import generate
from runtime.model.hf_folder import PADDING_AT_MOST
from runtime.model.llama import Llama
from runtime.post.chat import encode_prompt


class StreamDecoder:
    """Turns tokens into text as they arrive, holding back bytes of an unfinished UTF-8
    character (a byte-level BPE token can end mid-character)."""

    def __init__(self, tok: Tokenizer, out: TextIO) -> None:
        self.tok, self.out, self.pending = tok, out, b""
        self.text = ""

    def push(self, token: int) -> None:
        if token >= self.tok.n_vocab:  # padded vocabulary: nothing to print
            return
        self.pending += self.tok.decode_bytes([token])
        for cut in range(len(self.pending), max(-1, len(self.pending) - 4), -1):
            try:
                piece = self.pending[:cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
            self.pending = self.pending[cut:]
            self._emit(piece)
            return

    def flush(self) -> None:
        if self.pending:
            self._emit(self.pending.decode("utf-8", errors="replace"))
            self.pending = b""

    def _emit(self, piece: str) -> None:
        self.text += piece
        self.out.write(piece)
        self.out.flush()


def find_tokenizer(checkpoint: Path, meta: dict[str, object], explicit: str | None) -> Path:
    found = checkpoint_tokenizer(checkpoint, meta, explicit)
    if found is None:
        raise JobFailed(f"{checkpoint}: no tokenizer found (not inside it"
                        + (f", not in {explicit}" if explicit else "")
                        + (f", no store entry {meta['tokenizer_id']!r} beside it" if meta.get("tokenizer_id") else "")
                        + "); hint: pass --tokenizer DIR")
    return found


def _load(args: argparse.Namespace) -> tuple[Llama, Tokenizer, torch.Generator]:
    """The checkpoint on its device, its tokenizer, and a seeded generator on that device."""
    checkpoint = Path(args.checkpoint)
    device = resolve_device(getattr(args, "device", None) or "auto")
    model, meta = load_checkpoint(checkpoint, device=device)
    model.eval()
    tok_dir = find_tokenizer(checkpoint, meta, getattr(args, "tokenizer", None))
    tok = load_tokenizer(tok_dir)
    vocab = model.args.vocab_size
    if tok.n_vocab > vocab:  # ids the model cannot embed
        raise JobFailed(f"{tok_dir}: this tokenizer has {tok.n_vocab:,} tokens but the model in "
                        f"{checkpoint} has a vocabulary of {vocab:,}; hint: pass the tokenizer "
                        "it was trained with (--tokenizer DIR)")
    if vocab - tok.n_vocab >= PADDING_AT_MOST:  # padding rounds up by less than this
        print(f"warning: {tok_dir}: this tokenizer has {tok.n_vocab:,} tokens but the model has "
              f"a vocabulary of {vocab:,}, more than padding explains; ids past the tokenizer's "
              "are never printed (pass the model's own tokenizer with --tokenizer DIR)",
              file=sys.stderr)
    generator = torch.Generator(device=device).manual_seed(int(getattr(args, "seed", 0) or 0))
    return model, tok, generator


def _complete(model: Llama, tok: Tokenizer, prompt: list[int], args: argparse.Namespace,
              out: TextIO, generator: torch.Generator) -> str:
    budget = model.args.max_context - len(prompt)
    if budget <= 0:
        raise JobFailed(f"the prompt is {len(prompt)} tokens; the model's context is "
                        f"{model.args.max_context}")
    stream = StreamDecoder(tok, out)
    generate(model, [prompt], max_new_tokens=min(int(args.max_new_tokens), budget),
             temperature=float(args.temperature), top_p=float(args.top_p), top_k=int(args.top_k),
             stop_tokens=[tok.eot_id, tok.eos_id], generator=generator,
             on_token=lambda _row, t: stream.push(t))
    stream.flush()
    return stream.text


def _messages(args: argparse.Namespace, user: str) -> list[dict[str, str]]:
    system = getattr(args, "system", None)
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}]


def generate_cli(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """One completion of --prompt: raw continuation, or an assistant reply with --chat."""
    out = out or sys.stdout
    try:
        model, tok, generator = _load(args)
        if getattr(args, "chat", False):
            prompt = encode_prompt(tok, _messages(args, args.prompt))
        else:
            prompt = tok.encode(args.prompt, bos=True)
        _complete(model, tok, prompt, args, out, generator)
        out.write("\n")
    except (JobFailed, CheckpointError) as e:
        print(f"herd: error: {e}", file=sys.stderr)
        return 1
    return 0


CHAT_HELP = ("commands: /reset clears the conversation, /exit ends it (so does EOF), /help "
             "shows this; start a line with // to send one that begins with /\n")


def chat_cli(args: argparse.Namespace, inp: TextIO | None = None, out: TextIO | None = None) -> int:
    """An interactive conversation in the Llama 3 chat format; /reset clears it, /exit ends it.
    The oldest turns are dropped when the conversation outgrows the model's context."""
    inp, out = inp or sys.stdin, out or sys.stdout
    try:
        model, tok, generator = _load(args)
    except (JobFailed, CheckpointError) as e:
        print(f"herd: error: {e}", file=sys.stderr)
        return 1
    system = _messages(args, "")[:-1]
    history: list[dict[str, str]] = []
    while True:
        out.write("> ")
        out.flush()
        line = inp.readline()
        command = line.strip()
        if not line or command == "/exit":
            return 0
        if command == "/reset":
            history = []
            out.write("(conversation cleared)\n")
            continue
        if command.startswith("/") and not command.startswith("//"):
            out.write(CHAT_HELP if command == "/help" else
                      f"unknown command {command.split()[0]}; {CHAT_HELP}")
            continue
        if not command:
            continue
        text = line.rstrip("\n")
        history.append({"role": "user", "content": text[1:] if command.startswith("//") else text})
        limit = model.args.max_context - int(args.max_new_tokens)
        while len(history) > 1 and len(encode_prompt(tok, system + history)) > limit:
            history = history[2:] if len(history) > 2 else history[1:]
        try:
            reply = _complete(model, tok, encode_prompt(tok, system + history), args, out, generator)
        except JobFailed as e:
            print(f"herd: error: {e}", file=sys.stderr)
            history = []
            continue
        out.write("\n")
        history.append({"role": "assistant", "content": reply})
