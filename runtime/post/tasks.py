"""Generated tasks with checkable answers: the embedded default post-training data.

Each task is a short prompt whose answer a program computes, so a model's reply can be
verified exactly (the reward in rejection sampling, the metric in `eval.tasks`). Wrong
answers for preference pairs are near misses (off by a little, two items swapped), so a
preference signal has to be learnt rather than read off the length.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

KINDS = ("add", "subtract", "multiply", "sort", "count", "reverse", "compare")
_LETTERS = "abcdefghij"


def _number(rng: random.Random, difficulty: int) -> int:
    return rng.randint(0, 10 ** (difficulty + 1) - 1)


def _items(rng: random.Random, difficulty: int) -> list[int]:
    return [rng.randint(0, 9 * difficulty) for _ in range(rng.randint(3, 2 + 2 * difficulty))]


def _word(rng: random.Random, difficulty: int) -> str:
    return "".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 2 + 3 * difficulty)))


def make_prompt(kind: str, rng: random.Random, difficulty: int) -> str:
    if kind in ("add", "subtract", "multiply", "compare"):
        a, b = _number(rng, difficulty), _number(rng, difficulty)
        if kind == "multiply":
            a, b = a % (10 ** difficulty * 3), b % 10 ** difficulty
        return f"{kind} {a} {b}"
    if kind == "sort":
        return "sort " + " ".join(map(str, _items(rng, difficulty)))
    if kind == "count":
        word = _word(rng, difficulty) + rng.choice(_LETTERS[:3])
        return f"count {rng.choice(_LETTERS[:3])} in {word}"
    if kind == "reverse":
        return f"reverse {_word(rng, difficulty)}"
    raise ValueError(f"unknown task kind {kind!r}; known: {', '.join(KINDS)}")


def solve(prompt: str) -> str:
    """The answer to a task prompt, computed from the prompt alone (the verifier's truth)."""
    words = prompt.split()
    kind, args = words[0], words[1:]
    if kind == "add":
        return str(int(args[0]) + int(args[1]))
    if kind == "subtract":
        return str(int(args[0]) - int(args[1]))
    if kind == "multiply":
        return str(int(args[0]) * int(args[1]))
    if kind == "compare":
        a, b = int(args[0]), int(args[1])
        return ">" if a > b else "<" if a < b else "="
    if kind == "sort":
        return " ".join(map(str, sorted(int(x) for x in args)))
    if kind == "count":
        return str(args[2].count(args[0]))
    if kind == "reverse":
        return args[0][::-1]
    raise ValueError(f"not a task prompt: {prompt!r}")


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def verify(prompt: str, response: str) -> bool:
    """Is `response` the right answer to the task `prompt`? Whitespace is not significant."""
    try:
        return normalize(response) == solve(prompt)
    except (ValueError, IndexError):
        return False


def _near_miss(answer: str, rng: random.Random) -> str:
    if re.fullmatch(r"-?\d+", answer):
        return str(int(answer) + rng.choice([-1, 1]) * rng.randint(1, 10))
    if answer in "<>=":
        return rng.choice([s for s in "<>=" if s != answer])
    parts = answer.split()
    if len(parts) > 1 and len(set(parts)) > 1:
        while True:
            i, j = rng.sample(range(len(parts)), 2)
            if parts[i] != parts[j]:
                parts[i], parts[j] = parts[j], parts[i]
                return " ".join(parts)
    if len(set(answer)) > 1:
        return answer[::-1] if answer[::-1] != answer else answer[1:] + answer[0]
    return answer + rng.choice(_LETTERS)


def wrong_answer(prompt: str, rng: random.Random) -> str:
    """A plausible incorrect answer (verified to be incorrect)."""
    answer = solve(prompt)
    for _ in range(20):
        bad = _near_miss(answer, rng)
        if not verify(prompt, bad):
            return bad
    return answer + " 0"


def generate_tasks(kinds: list[str], count: int, difficulty: int, seed: int) -> list[dict[str, Any]]:
    """`count` distinct tasks cycling through `kinds`: {"prompt", "answer", "rejected", "kind"}."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown task kinds {unknown}; known: {', '.join(KINDS)}")
    if difficulty < 1:
        raise ValueError(f"difficulty must be >= 1, got {difficulty}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    attempts = 0
    while len(out) < count and attempts < count * 50:
        kind = kinds[len(out) % len(kinds)]
        attempts += 1
        prompt = make_prompt(kind, rng, difficulty)
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append({"kind": kind, "prompt": prompt, "answer": solve(prompt),
                    "rejected": wrong_answer(prompt, rng)})
    return out


VERIFIERS: dict[str, Callable[[dict[str, Any], str], bool]] = {
    "tasks": lambda rec, resp: verify(rec["prompt_text"], resp),
    "exact": lambda rec, resp: normalize(resp) == normalize(str(rec["answer"])),
}
