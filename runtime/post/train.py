"""The maths of post-training: packing, LR schedule, sequence log-probs, DPO and BT losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from runtime.model.attention import document_mask
from runtime.model.llama import Llama
from runtime.model.rope import rope_tables
from runtime.post.chat import IGNORE


def pack(examples: list[tuple[list[int], list[int]]], context: int
         ) -> list[tuple[list[int], list[int], list[int]]]:
    """Greedy first-fit packing of (inputs, targets) into rows of <= context tokens, with a
    document id per example so attention and positions never cross conversations.
    Examples longer than `context` are truncated (their tail is lost, counted by the caller)."""
    rows: list[tuple[list[int], list[int], list[int]]] = []
    for inp, tgt in sorted(examples, key=lambda e: -len(e[0])):
        inp, tgt = inp[:context], tgt[:context]
        for row in rows:
            if len(row[0]) + len(inp) <= context:
                doc = row[2][-1] + 1
                row[0].extend(inp)
                row[1].extend(tgt)
                row[2].extend([doc] * len(inp))
                break
        else:
            rows.append((list(inp), list(tgt), [0] * len(inp)))
    return rows


def pad_rows(rows: list[tuple[list[int], list[int], list[int]]]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad packed rows into tensors; padding is its own document and never a target."""
    width = max(len(r[0]) for r in rows)
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    docs = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (inp, tgt, doc) in enumerate(rows):
        n = len(inp)
        tokens[i, :n], targets[i, :n], docs[i, :n] = torch.tensor(inp), torch.tensor(tgt), torch.tensor(doc)
        docs[i, n:] = (doc[-1] + 1) if doc else 0
    return tokens, targets, docs


def sequence_logprobs(model: Llama, tokens: torch.Tensor, targets: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p(target) over non-ignored targets, number of them) for each row, in fp32,
    never holding the logits (`Llama.target_logprobs`)."""
    return model.target_logprobs(tokens, targets).sum(-1), (targets != IGNORE).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, chosen_len: torch.Tensor,
             beta: float, nll: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO with the Llama 3 paper's NLL term on chosen responses (normalised by length):
    mean of -logsigmoid(beta*((pc-rc)-(pr-rr))) + nll * (-pc / len_c). The info's means stay
    on the device (detached): the training loop reads them with the loss, in one wait."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    pref = -F.logsigmoid(chosen_reward - rejected_reward)
    nll_term = -policy_chosen / chosen_len.clamp(min=1)
    loss = (pref + nll * nll_term).mean()
    margin = (chosen_reward - rejected_reward).detach()
    return loss, {"dpo_loss": pref.detach().mean(), "nll": nll_term.detach().mean(),
                  "reward_margin": margin.mean(), "reward_accuracy": (margin > 0).float().mean()}


def hidden_states(model: Llama, tokens: torch.Tensor) -> torch.Tensor:
    """The final-norm hidden states (B, T, dim): what the LM head (or a reward head) reads."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    mask = document_mask(None, model.attention_backend)
    cos, sin = rope_tables(model.inv_freq, positions)
    return model.trunk(model.tok_embeddings(tokens), cos, sin, mask)


class RewardModel(nn.Module):
    """A Llama body with a scalar head reading the last real token's hidden state."""

    def __init__(self, base: Llama) -> None:
        super().__init__()
        self.base = base
        self.head = nn.Linear(base.args.dim, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = hidden_states(self.base, tokens)
        last = h[torch.arange(tokens.shape[0], device=h.device), lengths.to(h.device) - 1]
        return self.head(last.to(self.head.weight.dtype)).squeeze(-1).float()


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected): the preference likelihood under Bradley–Terry."""
    return -F.logsigmoid(chosen - rejected).mean()


def pad_sequences(seqs: list[list[int]], fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), fill, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out, torch.tensor([len(s) for s in seqs])
