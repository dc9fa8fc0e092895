"""The Llama 3 chat format and the masks that decide which tokens are trained on.

    <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>

Only assistant content and its closing <|eot_id|> are targets (the model must learn when
to stop). DPO additionally masks the formatting tokens (headers, eot), as the Llama 3
paper does, so the preference signal is about content only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.data.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant", "ipython")
IGNORE = -100


@dataclass
class Encoded:
    """A tokenised conversation: `target[i]` says whether token i is predicted by the loss;
    `formatting[i]` whether token i is a header or end-of-turn token."""

    tokens: list[int]
    target: list[bool]
    formatting: list[bool]

    def __len__(self) -> int:
        return len(self.tokens)


def _header(tok: Tokenizer, role: str) -> list[int]:
    return ([tok.special_id("<|start_header_id|>")] + tok.encode(role)
            + [tok.special_id("<|end_header_id|>")] + tok.encode("\n\n"))


def encode_dialog(tok: Tokenizer, messages: list[dict[str, Any]], *, bos: bool = True,
                  train_roles: tuple[str, ...] = ("assistant",)) -> Encoded:
    """Encode whole turns; content of `train_roles` turns plus their eot are targets."""
    enc = Encoded([tok.bos_id] if bos else [], [False] if bos else [], [True] if bos else [])
    for msg in messages:
        head = _header(tok, msg["role"])
        body = tok.encode(str(msg["content"]))
        trained = msg["role"] in train_roles
        enc.tokens += head + body + [tok.eot_id]
        enc.target += [False] * len(head) + [trained] * (len(body) + 1)
        enc.formatting += [True] * len(head) + [False] * len(body) + [True]
    return enc


def encode_prompt(tok: Tokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """The conversation so far plus an open assistant header: what generation continues."""
    return encode_dialog(tok, messages).tokens + _header(tok, "assistant")


def encode_completion(tok: Tokenizer, prompt: list[dict[str, Any]],
                      response: list[dict[str, Any]]) -> Encoded:
    """Prompt turns (never targets) followed by response turns (targets)."""
    return encode_dialog(tok, list(prompt) + list(response))


def shifted(enc: Encoded, mask_formatting: bool = False) -> tuple[list[int], list[int]]:
    """(inputs, targets) for next-token training: targets are -100 where not trained."""
    keep = [t and not (mask_formatting and f) for t, f in zip(enc.target, enc.formatting, strict=True)]
    targets = [tok if k else IGNORE for tok, k in zip(enc.tokens[1:], keep[1:], strict=True)]
    return enc.tokens[:-1], targets
