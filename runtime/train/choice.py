"""A multiple-choice continuation eval on held-out text: a downstream task any pre-trained
model can be scored on without a chat format or a benchmark download.

Each item is `context` tokens of a validation document; the options are its true next
`continuation` tokens and `options - 1` spans of the same length taken from elsewhere in
the split. The model picks the option with the highest log-likelihood (the way HellaSwag or
ARC are scored as cloze tasks). The result has the two numbers the Llama 3 paper's
accuracy forecast needs: accuracy (chance = 1/options) and the correct option's negative
log-likelihood per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from runtime.model import Llama
from runtime.model.llama import IGNORE_INDEX


@dataclass(frozen=True)
class Item:
    context: np.ndarray  # (context,) token ids
    options: np.ndarray  # (options, continuation) token ids; row `answer` is the true one
    answer: int


def make_items(tokens: np.ndarray, eos_id: int | None, *, items: int, options: int,
               context: int, continuation: int, seed: int) -> list[Item]:
    """Deterministic items from a flat token array. Windows never cross an end-of-text
    token, so a context and its true continuation always come from one document; the
    correct option's position is drawn per item so position bias cannot score."""
    span = context + continuation
    if len(tokens) < span * options:
        raise ValueError(f"choice: {len(tokens):,} validation tokens are too few for items of "
                         f"{span} tokens with {options} options; lower `context`/`continuation` "
                         "or give the data stage a larger val_fraction")
    flat = np.asarray(tokens, dtype=np.int64)
    starts = np.arange(len(flat) - span + 1)
    if eos_id is not None:
        # a window is clean when it holds no eos: prefix sums count eos tokens in each window
        eos = np.concatenate([[0], np.cumsum(flat == eos_id)])
        starts = starts[(eos[starts + span] - eos[starts]) == 0]
    if len(starts) < options:
        raise ValueError("choice: no document in the validation split is long enough for "
                         f"{span}-token items; lower `context`/`continuation`")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(items):
        picked = rng.choice(starts, size=options, replace=False)
        true_start = int(picked[0])
        conts = [flat[true_start + context : true_start + span]]
        conts += [flat[s + context : s + span] for s in picked[1:]]
        answer = int(rng.integers(options))
        conts[0], conts[answer] = conts[answer], conts[0]
        out.append(Item(flat[true_start : true_start + context], np.stack(conts), answer))
    return out


@torch.no_grad()
def score_items(model: Llama, items: list[Item], batch_items: int = 16) -> dict[str, float]:
    """Accuracy and the correct option's NLL per token over `items`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct, nll = 0, 0.0
    for i in range(0, len(items), batch_items):
        chunk = items[i : i + batch_items]
        n_opt, cont = chunk[0].options.shape
        ctx_len = len(chunk[0].context)
        rows = np.concatenate([np.concatenate([np.repeat(it.context[None], n_opt, 0), it.options], 1)
                               for it in chunk])
        seqs = torch.from_numpy(rows).to(device)
        targets = seqs[:, 1:].clone()
        targets[:, : ctx_len - 1] = IGNORE_INDEX  # only the options' tokens are scored
        logp = model.target_logprobs(seqs[:, :-1], targets)
        scores = logp[:, ctx_len - 1 :].sum(-1).view(len(chunk), n_opt)
        answers = torch.tensor([it.answer for it in chunk], device=device)
        correct += int((scores.argmax(-1) == answers).sum())
        nll += float(-scores.gather(1, answers[:, None]).sum()) / cont
    model.train(was_training)
    return {"accuracy": correct / len(items), "nll": nll / len(items),
            "chance": 1.0 / len(items[0].options), "count": len(items)}
