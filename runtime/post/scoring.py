"""Log-likelihood of many target spans under a model, in batches that fit memory.

Evals that score text rather than generate it (multiple choice, held-out response loss)
share this: each sequence is (inputs, targets) with IGNORE where nothing is scored; rows are
sorted by length and right-padded in batches of about `batch_tokens` tokens. The model's own
per-token loss (`reduction="none"`) is used, so on the Triton backend the fused
cross-entropy never holds a batch's full logits; padding never changes a causal model's
earlier positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from runtime.kernels.dispatch import backend_for
from runtime.model.llama import Llama
from runtime.post.chat import IGNORE
from runtime.post.train import pad_sequences

BATCH_TOKENS = 1 << 14  # tokens per forward pass where the fused cross-entropy never holds all logits
LOGIT_BUDGET = 1 << 26  # elsewhere (the torch reference), logits held at once: ~256 MiB in fp32

Scored = tuple[list[int], list[int]]  # (inputs, targets); a target of IGNORE is not scored


def batch_tokens(model: Llama) -> int:
    """Tokens per forward pass: one chunk of the logits at a time on the Triton backend,
    all of them otherwise."""
    if backend_for(model.head_weight) == "triton":
        return BATCH_TOKENS
    return max(1, LOGIT_BUDGET // model.args.vocab_size)


def plan_batches(model: Llama, sequences: Sequence[Scored]) -> list[list[int]]:
    """Indexes of `sequences` per forward pass: longest first, about `batch_tokens` tokens
    each (padded to the longest in the batch). Every rank plans the same batches, so ranks
    can share them out and still run forward passes in step."""
    order = sorted(range(len(sequences)), key=lambda k: -len(sequences[k][0]))
    budget = batch_tokens(model)
    batches: list[list[int]] = []
    i = 0
    while i < len(order):
        width = max(1, len(sequences[order[i]][0]))  # the longest in the batch
        batches.append(order[i : i + max(1, budget // width)])
        i += len(batches[-1])
    return batches


@torch.no_grad()
def score_batch(model: Llama, sequences: Sequence[Scored], batch: list[int]) -> list[tuple[float, int]]:
    """(summed log-probability of the scored targets, their count) of each sequence in
    `batch`, in one forward pass."""
    device = next(model.parameters()).device
    tokens, _ = pad_sequences([sequences[k][0] for k in batch])
    target, _ = pad_sequences([sequences[k][1] for k in batch], fill=IGNORE)
    target = target.to(device)
    logp, count = model.target_logprobs(tokens.to(device), target).sum(-1), (target != IGNORE).sum(-1)
    return [(float(lp), int(n)) for lp, n in zip(logp.tolist(), count.tolist(), strict=True)]


def target_logprobs(model: Llama, sequences: Sequence[Scored]) -> list[tuple[float, int]]:
    """(summed log-probability of the scored targets, their count) for each sequence, in
    the order given."""
    out: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
    for batch in plan_batches(model, sequences):
        for k, scored in zip(batch, score_batch(model, sequences, batch), strict=True):
            out[k] = scored
    return out
