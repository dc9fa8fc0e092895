"""Use a checkpoint a run produced from Python: load it, find its tokenizer, generate, score.

    herd run examples/own_data/own_data.herd
    python examples/python_api.py "$(herd path examples/own_data/own_data.herd post.chat.r1.sft)"

Any checkpoint works: a pre-training result (`train.base`), an annealed or averaged one, a
post-training policy. `herd path SPEC JOB` prints a job's store entry; from Python, the
same path is `RUNS_DIR / plan.spec_name / "store" / plan.jobs[JOB].fingerprint` with
`_, plan = compiler.compile_file(SPEC)`.

Exit status: 0 done, 2 when the argument is missing or is not a herd checkpoint.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from runtime.data.tokenizer import Tokenizer, checkpoint_tokenizer, load_tokenizer
from runtime.model import CheckpointError, Llama, generate, load_checkpoint
from runtime.post.chat import encode_prompt

TEXT_PROMPTS = ["The town council voted", "Heat the oil in a large pan"]
CHAT_PROMPTS = ["Which season is July in?", "How many days are there in April?",
                "What month follows October?"]
SCORED = ("Volunteers spent the weekend clearing branches along Station Road, and the council "
          "has opened a rest centre at the town hall.")


def load(path: Path) -> tuple[Llama, dict, Tokenizer]:
    """The model, its metadata and the tokenizer it was trained with."""
    model, meta = load_checkpoint(path, device="cpu")  # checks shapes, dtypes and the checksum
    model.eval()
    # a post-training checkpoint carries a copy of its tokenizer; the others name theirs
    # (`tokenizer_id`), a store entry beside them
    tok_dir = checkpoint_tokenizer(path, meta)
    if tok_dir is None:
        raise CheckpointError(f"{path}: no tokenizer inside it or beside it in the store\n"
                              "hint: pass a checkpoint from a herd run's store, e.g. "
                              '"$(herd path examples/own_data/own_data.herd train.base)"')
    return model, meta, load_tokenizer(tok_dir)


def complete(model: Llama, tok: Tokenizer, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    """Greedy continuations (temperature 0), stopping at the end of a turn or a document."""
    budget = min(max_new_tokens, model.args.max_context - max(len(p) for p in prompts))
    out = generate(model, prompts, max_new_tokens=budget, temperature=0,
                   stop_tokens=[tok.eot_id, tok.eos_id])
    return [tok.decode(c.tokens) for c in out]


@torch.no_grad()
def loss_of(model: Llama, tok: Tokenizer, text: str) -> tuple[float, int]:
    """Mean next-token loss (nats per token) of `text` as a document, and its token count."""
    ids = tok.encode(text, eos=True)[: model.args.max_context + 1]  # documents end with <|end_of_text|>
    tokens = torch.tensor([ids[:-1]])
    targets = torch.tensor([ids[1:]])
    doc_ids = torch.zeros_like(tokens)  # one document: attention and positions as in training
    return float(model(tokens, doc_ids, targets)), len(ids) - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint folder, e.g. $(herd path SPEC JOB)")
    args = parser.parse_args(argv)  # a missing argument: usage and exit status 2
    path = Path(args.checkpoint)
    try:
        model, meta, tok = load(path)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    config = meta["model"]
    print(f"checkpoint  {path}")
    print(f"model       {config.get('name', '?')}: {model.num_params():,} parameters, "
          f"{config['layers']} layers, dim {config['dim']}, context {config['max_context']}, "
          f"step {meta.get('step')}")
    print(f"tokenizer   {tok.n_vocab:,} tokens")

    print("\n# text continuation (greedy)")
    for prompt, text in zip(TEXT_PROMPTS, complete(model, tok, [tok.encode(p, bos=True) for p in TEXT_PROMPTS], 24),
                            strict=True):
        print(f"{prompt!r} -> {text!r}")

    print("\n# chat (the Llama 3 format, greedy)")
    chats = [encode_prompt(tok, [{"role": "user", "content": q}]) for q in CHAT_PROMPTS]
    for question, answer in zip(CHAT_PROMPTS, complete(model, tok, chats, 16), strict=True):
        print(f"user: {question}\nassistant: {answer!r}")

    loss, n = loss_of(model, tok, SCORED)
    print("\n# loss")
    print(f"{loss:.3f} nats/token over {n} tokens (perplexity {math.exp(loss):.1f}; "
          f"a uniform guess over the vocabulary: {math.log(model.args.vocab_size):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
