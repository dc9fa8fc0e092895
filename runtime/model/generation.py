"""Batched incremental decoding: the engine behind rejection sampling, evals and `herd generate`.

Prompts of different lengths are left-padded so every row writes the same KV-cache slot
each step; each row carries its own RoPE positions (its first real token is position 0)
and a validity mask that hides its padding, so a row decodes exactly as it would alone.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from runtime.model.attention import AttentionMask
from runtime.model.kv_cache import KVCache
from runtime.model.llama import Llama
from runtime.model.meta import CheckpointError


@dataclass
class Completion:
    """What one prompt produced: new tokens (the stop token excluded) and why it ended."""

    tokens: list[int]
    finish_reason: Literal["stop", "length"]
    stop_token: int | None = None


class NonFiniteOutputs(CheckpointError):
    """A model whose logits hold NaN or inf: damaged weights, or training that diverged.

    A CheckpointError (a user error), because the cause is the checkpoint: `herd generate`
    and `herd chat` print it with a hint, and a job that samples fails with it, instead of
    a sampler traceback or text of token 0 picked out of NaNs."""


#: temperatures below this are greedy: as a float32 divisor they would round to 0
SMALLEST_TEMPERATURE = torch.finfo(torch.float32).tiny

NON_FINITE = ("the model's outputs are not finite (NaN/inf): its weights are damaged or training "
              "diverged\nhint: use an earlier checkpoint of the run, or train again with a lower "
              "learning rate (a loss that turned NaN in the run's metrics shows where it diverged)")


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row from logits (B, V): greedy when temperature <= 0, else softmax
    sampling at `temperature` restricted to the top_k tokens and the top_p nucleus.

    Safe for any temperature and top_p: the best logit is subtracted before dividing, so
    scores are 0 for the best token and finite or -inf for the rest, never inf - inf = NaN; a
    temperature too small to be a float32 divisor (below float32's smallest normal number,
    where it would round to 0 and give 0 / 0) is greedy, which is what sampling tends to as
    the temperature falls; and the nucleus always keeps the best token (a top_p that rounds
    to 0 would otherwise drop every token). Logits that are not finite raise
    `NonFiniteOutputs`: no token can be chosen from them.
    """
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteOutputs(NON_FINITE)
    if temperature < SMALLEST_TEMPERATURE:  # 0 and below: greedy, by definition
        return logits.argmax(dim=-1)
    scores = logits.float()
    scores = (scores - scores.max(dim=-1, keepdim=True).values) / temperature  # <= 0, the best 0
    if 0 < top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the first
        # always stays (a tiny top_p rounds to 0 in float32, and 0 >= 0).
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _stop_sets(stop_tokens: Iterable[int] | Sequence[Iterable[int]] | None, rows: int) -> list[set[int]]:
    """One stop set for every row, or one per row."""
    if stop_tokens is None:
        return [set() for _ in range(rows)]
    items = list(stop_tokens)
    if all(isinstance(t, numbers.Integral) for t in items):  # numpy ints too
        return [{int(t) for t in items} for _ in range(rows)]
    if len(items) != rows:
        raise ValueError(f"stop_tokens has {len(items)} per-row sets for {rows} prompts")
    return [{int(t) for t in row} for row in items]


def _check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """Settings that would make every token impossible (NaN probabilities) are refused."""
    if math.isnan(temperature):
        raise ValueError("temperature must be a number (<= 0 is greedy), got nan")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 is no limit), got {top_k}")


def _check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int, context: int) -> list[list[int]]:
    """Prompts as lists of in-vocabulary ids, each shorter than the model's context."""
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.tolist()
    out: list[list[int]] = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, torch.Tensor):
            prompt = prompt.tolist()
        if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence) or not all(
            isinstance(t, numbers.Integral) for t in prompt
        ):
            raise ValueError(f"prompt {i} must be a list of token ids (one list per prompt), got "
                             f"{type(prompt).__name__}\nhint: encode text with the tokenizer first")
        if len(prompt) == 0:
            raise ValueError("every prompt needs at least one token (e.g. the BOS token)")
        bad = next((int(t) for t in prompt if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise ValueError(f"prompt {i} holds token id {bad}, outside the model's vocabulary "
                             f"[0, {vocab_size})\nhint: use the tokenizer the model was trained with")
        if len(prompt) > context:
            raise ValueError(f"prompt {i} is {len(prompt)} tokens, longer than the model's context "
                             f"of {context}\nhint: shorten it, e.g. keep its last {context} tokens")
        out.append([int(t) for t in prompt])
    return out


def _decode_mask(valid: torch.Tensor, start: int, length: int) -> AttentionMask:
    """Queries in slots [start, start+length) see valid, earlier keys; a padding query sees
    itself only (a row with nothing to attend to would turn into NaNs)."""
    end = start + length
    keys = torch.arange(end, device=valid.device)
    queries = torch.arange(start, end, device=valid.device)
    allowed = valid[:, None, :end] & (keys[None, None, :] <= queries[None, :, None])
    allowed = allowed | (keys[None, None, :] == queries[None, :, None])
    return AttentionMask("dense", dense=allowed.unsqueeze(1))


@torch.no_grad()
def generate(
    model: Llama,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop_tokens: Iterable[int] | Sequence[Iterable[int]] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    on_token: Callable[[int, int], None] | None = None,
    pad_id: int = 0,
) -> list[Completion]:
    """Continue every prompt by up to max_new_tokens tokens.

    temperature <= 0 is greedy. stop_tokens: one collection for all rows, or one per row;
    a row stops at its first stop token (not included in its tokens). on_token(row, token)
    is called for every kept token as it is produced (streaming). A row also ends
    ("length") when it fills the model's context: positions past `max_context` were never
    trained, so decoding there would be silent extrapolation. A prompt longer than the
    context, a token id outside the vocabulary or top_p outside (0, 1] is a ValueError;
    a model whose outputs turn NaN or inf (damaged weights) is a `NonFiniteOutputs`.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    _check_sampling(temperature, top_k, top_p)
    prompts = _check_prompts(prompts, model.args.vocab_size, model.args.max_context)
    if not prompts:
        return []
    device = model.tok_embeddings.weight.device
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    rows = len(prompts)
    stops = _stop_sets(stop_tokens, rows)
    results = [Completion(tokens=[], finish_reason="length") for _ in range(rows)]
    # Each row may grow to the model's context, as it could alone.
    budgets = [min(max_new_tokens, model.args.max_context - len(p)) for p in prompts]
    max_new_tokens = max(budgets)
    if max_new_tokens == 0:
        return results

    lengths = torch.tensor([len(p) for p in prompts], device=device)
    width = int(lengths.max())
    pad = width - lengths
    tokens = torch.full((rows, width), pad_id, dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
    capacity = width + max_new_tokens
    slots = torch.arange(capacity, device=device)
    valid = slots[None, :] >= pad[:, None]
    positions = (slots[None, :width] - pad[:, None]).clamp(min=0)

    args = model.args
    cache = KVCache(
        args.layers, rows, args.kv_heads, args.head_dim, capacity,
        dtype=model.tok_embeddings.weight.dtype, device=device,
    )
    logits = model(
        tokens, positions=positions, mask=_decode_mask(valid, 0, width),
        kv_cache=cache, last_only=True,
    )[:, -1]
    done = [budget == 0 for budget in budgets]
    for step in range(max_new_tokens):
        try:
            chosen = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        except NonFiniteOutputs:
            source = getattr(model, "loaded_from", None)  # set by load_checkpoint: name the file
            if source is None:
                raise
            raise NonFiniteOutputs(f"{source}: {NON_FINITE}") from None
        for row, token in enumerate(chosen.tolist()):
            if done[row]:
                continue
            if token in stops[row]:
                results[row].finish_reason, results[row].stop_token = "stop", token
                done[row] = True
                continue
            results[row].tokens.append(token)
            if on_token is not None:
                on_token(row, token)
            if len(results[row].tokens) == budgets[row]:
                done[row] = True
        if all(done) or step == max_new_tokens - 1:
            break
        start = cache.length
        logits = model(
            chosen[:, None],
            positions=(lengths + step)[:, None],
            mask=_decode_mask(valid, start, 1),
            kv_cache=cache,
        )[:, -1]
    return results
