"""Evaluations shared by training jobs and eval jobs: held-out loss, unigram baseline,
needle-in-a-haystack retrieval."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.data.loader import IGNORE, PackedLoader, TokenSource
from runtime.model import Llama


@torch.no_grad()
def val_loss(model: Llama, source: Path, name: str, seq_len: int, max_tokens: int,
             batch_size: int = 8) -> dict[str, float]:
    """Mean next-token loss (nats) over the first `max_tokens` of a source's val split, read
    in order at `seq_len`: the same tokens every call, so values compare across steps."""
    loader = PackedLoader({name: source}, {name: 1.0}, seq_len, batch_size, split="val")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in loader:
        n = int((batch.targets != IGNORE).sum())
        if n:
            total += float(model(batch.tokens.to(device), batch.doc_ids.to(device), batch.targets.to(device),
                                 reduction="sum"))
            count += n
        if count >= max_tokens:
            break
    model.train(was_training)
    loss = total / count if count else float("nan")
    return {"loss": loss, "perplexity": math.exp(loss) if count else float("nan"),
            "tokens": float(count)}


def unigram_loss(sources: dict[str, Path], weights: dict[str, float], n_vocab: int,
                 max_tokens: int = 20_000_000) -> float:
    """Entropy (nats) of the mix-weighted training token distribution: the loss of a model
    that ignores context. Learning means validation loss well below it."""
    probs = np.zeros(n_vocab, dtype=np.float64)
    total_w = sum(weights.get(n, 0.0) for n in sources) or 1.0
    for name, directory in sources.items():
        src = TokenSource(name, directory, "train")
        counts = np.zeros(n_vocab, dtype=np.float64)
        left = max_tokens
        for arr in src.arrays:
            part = np.asarray(arr[:left])
            counts += np.bincount(part.astype(np.int64), minlength=n_vocab)[:n_vocab]
            left -= len(part)
            if left <= 0:
                break
        if counts.sum():
            probs += weights.get(name, 0.0) / total_w * counts / counts.sum()
    p = probs[probs > 0]
    return float(-(p * np.log(p)).sum())


def val_tokens(source: Path, name: str) -> np.ndarray:
    """A source's whole validation split as one int64 array, documents end to end."""
    parts = [np.asarray(a, dtype=np.int64) for a in TokenSource(name, source, "val").arrays]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def filler_tokens(source: Path, name: str, count: int, eos_id: int) -> np.ndarray:
    """`count` validation tokens (end-of-text removed, repeated if the split is short)."""
    flat = val_tokens(source, name)
    flat = flat[flat != eos_id]
    if len(flat) == 0:
        raise ValueError(f"{name}: no validation tokens to build needle haystacks from")
    reps = -(-count // len(flat))
    return np.tile(flat, reps)[:count]


@torch.no_grad()
def needle_prompt_tokens(tokenizer: Any) -> int:
    """The most tokens the pass-key sentences take (a haystack must be longer to hold them)."""
    return max(len(tokenizer.encode(f"\nThe pass key is {key}. Remember it.\n"))
               + len(tokenizer.encode("\nWhat is the pass key? The pass key is")) + len(tokenizer.encode(f" {key}"))
               for key in ("10000", "99999", "55555", "12345"))


@torch.no_grad()  # a forward at the extended length: no autograd graph over its logits
def needle(model: Llama, tokenizer: Any, filler: np.ndarray, lengths: list[int],
           depths: list[float], trials: int, seed: int) -> dict[str, Any]:
    """Passkey retrieval: a random 5-digit key stated at `depth` of a `length`-token haystack,
    asked for at the end. A trial passes when the greedy (argmax) prediction of every key
    token after "The pass key is" is right. Returns accuracy per (depth, length) and overall."""
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    grid: list[list[float]] = []
    for depth in depths:
        row = []
        for length in lengths:
            hits = 0
            for _ in range(trials):
                key = str(int(rng.integers(10_000, 100_000)))
                fact = tokenizer.encode(f"\nThe pass key is {key}. Remember it.\n")
                question = tokenizer.encode("\nWhat is the pass key? The pass key is")
                answer = tokenizer.encode(f" {key}")
                room = length - len(fact) - len(question) - len(answer)
                if room < 0:
                    raise ValueError(f"needle: a {length}-token haystack cannot hold the "
                                     f"{length - room}-token pass-key prompt; hint: measure at longer lengths")
                start = int(rng.integers(0, max(1, len(filler) - room)))
                hay = filler[start : start + room].tolist()
                at = round(depth * len(hay))
                seq = hay[:at] + fact + hay[at:] + question + answer
                tokens = torch.tensor([seq[:-1]], device=next(model.parameters()).device)
                logits = model(tokens)
                pred = logits[0, -len(answer):].argmax(-1).tolist()
                hits += int(pred == answer)
            row.append(hits / trials)
        grid.append(row)
    model.train(was_training)
    accuracy = float(np.mean(grid)) if grid else 0.0
    return {"accuracy": accuracy, "grid": grid, "depths": depths, "lengths": lengths,
            "trials": trials}
