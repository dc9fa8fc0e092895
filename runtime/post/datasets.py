"""Post-training data: JSONL in TRL's conventions, validated record by record.

Accepted records (one JSON object per line):

    messages:     {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}
    preferences:  {"prompt": "..." | [messages], "chosen": "..." | [messages],
                   "rejected": "..." | [messages]}      (or chosen/rejected as whole
                   conversations sharing a prefix, TRL's "implicit prompt")
    prompts:      {"prompt": "..." | [messages], "answer": "..." (optional)}
    choices:      {"question": "...", "choices": ["...", "...", ...], "answer": 2 | "C" | "text",
                   "subject": "..." (optional)}      (a multiple-choice benchmark)

Everything is normalised to message lists (a choices record to its question, choices, the
answer's index and subject). A `data.dataset` artifact holds
`{train,val}.{sft,preferences,prompts}.jsonl` plus `dataset.json` (counts, bad records,
and the verifier that checks answers: "tasks" recomputes them, "exact" compares to
`answer`); a choices dataset holds `val.choices.jsonl` instead — a benchmark is all held
out, so its `val_fraction` does not apply.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.data.sources import (
    JSON_LINE_ERRORS,
    decode_errors,
    json_line_reason,
    may_hold_surrogates,
    open_jsonl,
    unencodable,
)
from runtime.post.chat import ROLES

FORMATS = ("messages", "preferences", "prompts", "tasks", "choices")
KINDS = ("sft", "preferences", "prompts")  # the views every dataset has (empty when its format lacks one)
HELD_OUT_ONLY = ("choices",)  # formats whose records are all held out: a benchmark, never trained on
META = "dataset.json"

Record = dict[str, Any]


class BadRecord(ValueError):
    """One record that does not fit its format; the message says what is wrong."""


def _messages(value: Any, field: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        role = "assistant" if field in ("chosen", "rejected") else "user"
        if role == "assistant" and not value.strip():
            raise BadRecord(f"{field!r} is empty; an empty response has nothing to train on")
        return [{"role": role, "content": value}]
    if not isinstance(value, list) or not value:
        raise BadRecord(f"{field!r} must be a string or a non-empty list of messages")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise BadRecord(f"{field}[{i}] is not an object")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise BadRecord(f"{field}[{i}].role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise BadRecord(f"{field}[{i}].content must be a string")
        if role == "assistant" and not content.strip():
            # SFT would teach the model to stop at once; DPO would compare nothing with it.
            raise BadRecord(f"{field}[{i}] is an assistant turn with empty content")
        out.append({"role": role, "content": content})
    return out


def _prompt_fields(prompt: list[dict[str, str]], rec: dict[str, Any]) -> Record:
    users = [m["content"] for m in prompt if m["role"] == "user"]
    out: Record = {"prompt": prompt, "prompt_text": users[-1] if users else prompt[-1]["content"]}
    if rec.get("answer") is not None:  # null: no checkable answer, like a missing field
        if isinstance(rec["answer"], bool) or not isinstance(rec["answer"], str | int | float):
            raise BadRecord("'answer' must be a string or a number (or null for none)")
        out["answer"] = str(rec["answer"])
    if "kind" in rec:
        out["kind"] = str(rec["kind"])
    return out


def parse_sft(rec: Any) -> Record:
    if not isinstance(rec, dict) or "messages" not in rec:
        raise BadRecord("expected an object with 'messages'")
    msgs = _messages(rec["messages"], "messages")
    if not any(m["role"] == "assistant" for m in msgs[1:]):
        raise BadRecord("'messages' has no assistant turn after a prompt turn to train on")
    return {"messages": msgs}


def parse_preference(rec: Any) -> Record:
    if not isinstance(rec, dict) or "chosen" not in rec or "rejected" not in rec:
        raise BadRecord("expected an object with 'chosen' and 'rejected'")
    chosen, rejected = _messages(rec["chosen"], "chosen"), _messages(rec["rejected"], "rejected")
    if "prompt" in rec:
        prompt = _messages(rec["prompt"], "prompt")
    else:  # implicit prompt: the shared prefix of the two conversations
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        if n == 0:
            raise BadRecord("no 'prompt' and 'chosen'/'rejected' share no prefix to use as one")
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    for name, resp in (("chosen", chosen), ("rejected", rejected)):
        if resp[-1]["role"] != "assistant":
            raise BadRecord(f"{name!r} must end with an assistant turn")
    if chosen == rejected:
        raise BadRecord("'chosen' and 'rejected' are identical")
    return {**_prompt_fields(prompt, rec), "chosen": chosen, "rejected": rejected}


def parse_prompt(rec: Any) -> Record:
    if not isinstance(rec, dict) or "prompt" not in rec:
        raise BadRecord("expected an object with 'prompt'")
    prompt = _messages(rec["prompt"], "prompt")
    if prompt[-1]["role"] == "assistant":
        raise BadRecord("'prompt' ends with an assistant turn; nothing is left to generate")
    return _prompt_fields(prompt, rec)


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _answer_index(answer: Any, choices: list[str]) -> int:
    """A choices record's `answer` as an index: an integer index (0-based), a capital letter
    (`"C"` = 2) or the text of one of the choices. A string that reads both ways (choices
    `["B", "A"]`, answer `"A"`) is refused unless both readings agree."""
    n = len(choices)
    if isinstance(answer, bool) or not isinstance(answer, int | str):
        raise BadRecord("'answer' must be an index (0-based integer), a letter (\"A\" = the first "
                        "choice) or the text of a choice")
    if isinstance(answer, int):
        if not 0 <= answer < n:
            raise BadRecord(f"'answer' is index {answer}, but there are {n} choices (0 to {n - 1})")
        return answer
    text = [i for i, c in enumerate(choices) if c.strip() == answer.strip()]
    letter = LETTERS.index(answer) if len(answer) == 1 and answer in LETTERS else None
    if text:
        if letter is not None and letter < n and letter != text[0]:
            raise BadRecord(f"'answer' {answer!r} is both the letter of choices[{letter}] and the text "
                            f"of choices[{text[0]}]; write the index instead")
        return text[0]
    if letter is None:
        raise BadRecord(f"'answer' {answer!r} is neither a letter {LETTERS[0]} to {LETTERS[n - 1]} "
                        "nor the text of a choice")
    if letter >= n:
        raise BadRecord(f"'answer' is letter {answer!r} (choice {letter + 1}), but there are {n} "
                        f"choices ({LETTERS[0]} to {LETTERS[n - 1]})")
    return letter


def parse_choices(rec: Any) -> Record:
    """A multiple-choice question: a non-empty `question`, at least two distinct non-empty
    `choices`, and the `answer` (index, letter or text); optional `subject` (per-subject
    accuracy in the report). Other fields are ignored."""
    if not isinstance(rec, dict) or any(k not in rec for k in ("question", "choices", "answer")):
        raise BadRecord("expected an object with 'question', 'choices' and 'answer'")
    question, choices = rec["question"], rec["choices"]
    if not isinstance(question, str) or not question.strip():
        raise BadRecord("'question' must be a non-empty string")
    if not isinstance(choices, list) or len(choices) < 2:
        raise BadRecord("'choices' must be a list of at least two strings")
    seen: dict[str, int] = {}
    for i, c in enumerate(choices):
        if not isinstance(c, str) or not c.strip():
            raise BadRecord(f"choices[{i}] must be a non-empty string")
        if c.strip() in seen:  # two copies would tie, and an answer given as text is ambiguous
            raise BadRecord(f"choices[{i}] repeats choices[{seen[c.strip()]}] ({c.strip()!r})")
        seen[c.strip()] = i
    out: Record = {"question": question.strip(), "choices": [c.strip() for c in choices],
                   "answer": _answer_index(rec["answer"], choices)}
    if rec.get("subject") is not None:
        if not isinstance(rec["subject"], str) or not rec["subject"].strip():
            raise BadRecord("'subject' must be a non-empty string (or left out)")
        out["subject"] = rec["subject"].strip()
    return out


PARSERS = {"messages": parse_sft, "preferences": parse_preference, "prompts": parse_prompt,
           "choices": parse_choices}


def read_jsonl(path: Path, fmt: str) -> tuple[list[Record], list[str]]:
    """Valid records and 'file:line: problem' for each invalid one (none silently dropped)."""
    good, bad, _ = read_jsonl_lines(path, fmt)
    return good, bad


def read_jsonl_lines(path: Path, fmt: str) -> tuple[list[Record], list[str], list[int]]:
    """`read_jsonl` plus the line number of each valid record."""
    parse = PARSERS[fmt]
    good: list[Record] = []
    bad: list[str] = []
    lines: list[int] = []
    lineno = 0
    try:  # bytes: one line of bad UTF-8 is one bad record, not a crash; .gz/.bz2/.xz/.zst decompressed
        with open_jsonl(path) as f:
            for lineno, raw in enumerate(f, start=1):  # noqa: B007 - lineno used after the loop
                if lineno == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    bad.append(f"{path}:{lineno}: not UTF-8 (byte {e.start + 1})")
                    continue
                try:
                    record = parse(json.loads(line))
                except json.JSONDecodeError as e:
                    bad.append(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})")
                    continue
                except BadRecord as e:
                    bad.append(f"{path}:{lineno}: {e}")
                    continue
                except JSON_LINE_ERRORS as e:  # too deep, or a number too long, for Python
                    bad.append(f"{path}:{lineno}: {json_line_reason(e)}")
                    continue
                if may_hold_surrogates(raw) and (why := unencodable(record, "record")):
                    bad.append(f"{path}:{lineno}: {why}")  # written as UTF-8, it would end the job
                    continue
                good.append(record)
                lines.append(lineno)
    except decode_errors() as e:  # a cut download, or a file named .gz that is not
        bad.append(f"{path}:{lineno + 1}: unreadable or truncated file ({e})")
    return good, bad, lines


def read_choices(path: Path) -> tuple[list[Record], list[str]]:
    """A multiple-choice benchmark: `read_jsonl` with format choices, and a question asked
    again with the same choices but another answer is a bad record (which copy is right
    cannot be told; keeping both would score one of them wrong whatever the model says).
    Exact copies stay, as duplicates do in every format."""
    records, bad, lines = read_jsonl_lines(path, "choices")
    first: dict[str, tuple[int, int]] = {}  # (question, choices) -> (answer, line)
    kept = []
    for rec, lineno in zip(records, lines, strict=True):
        key = json.dumps([rec["question"], rec["choices"]])
        answer, line = first.setdefault(key, (rec["answer"], lineno))
        if answer != rec["answer"]:
            bad.append(f"{path}:{lineno}: repeats the question and choices of line {line} with another "
                       f"answer (choice {rec['answer']} here, {answer} there)")
            continue
        kept.append(rec)
    prefix = len(f"{path}:")
    bad.sort(key=lambda message: int(message[prefix:].split(":", 1)[0]))  # in file order
    return kept, bad


def derive(fmt: str, records: list[Record]) -> dict[str, list[Record]]:
    """The SFT, preference and prompt views a format supports."""
    if fmt == "messages":
        prompts = []
        for r in records:
            last = max(i for i, m in enumerate(r["messages"]) if m["role"] == "assistant")
            prompts.append({**_prompt_fields(r["messages"][:last], {}),
                             "answer": r["messages"][last]["content"]})
        return {"sft": records, "preferences": [], "prompts": prompts}
    if fmt == "preferences":
        sft = [{"messages": r["prompt"] + r["chosen"]} for r in records]
        prompts = [{k: v for k, v in r.items() if k not in ("chosen", "rejected")} for r in records]
        return {"sft": sft, "preferences": records, "prompts": prompts}
    if fmt == "choices":
        return {"sft": [], "preferences": [], "prompts": [], "choices": records}
    return {"sft": [], "preferences": [], "prompts": records}


def from_tasks(tasks: list[Record]) -> dict[str, list[Record]]:
    """Generated tasks as SFT conversations, (correct, incorrect) pairs and prompts."""
    sft, prefs, prompts = [], [], []
    for t in tasks:
        prompt = [{"role": "user", "content": t["prompt"]}]
        sft.append({"messages": prompt + [{"role": "assistant", "content": t["answer"]}]})
        base = {"prompt": prompt, "prompt_text": t["prompt"], "answer": t["answer"], "kind": t["kind"]}
        prefs.append({**base, "chosen": [{"role": "assistant", "content": t["answer"]}],
                      "rejected": [{"role": "assistant", "content": t["rejected"]}]})
        prompts.append(base)
    return {"sft": sft, "preferences": prefs, "prompts": prompts}


def split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices: a seeded shuffle, at least one validation item when asked for."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = min(n - 1, max(1 if val_fraction > 0 else 0, round(n * val_fraction))) if n > 1 else 0
    return sorted(order[n_val:]), sorted(order[:n_val])


def split_unique(views: dict[str, list[Record]], val_fraction: float, seed: int
                 ) -> tuple[list[int], list[int], int]:
    """(train, val, duplicates): a `split` over the distinct source records, so copies of one
    record all land in the same split — a duplicate in both would put a validation record in
    training. Without duplicates this is exactly `split(n, ...)`. `val_fraction` >= 1 holds
    every record out (a benchmark)."""
    n = max(len(v) for v in views.values())
    keys = [json.dumps([v[i] if i < len(v) else None for v in views.values()], sort_keys=True)
            for i in range(n)]
    first: dict[str, int] = {}
    for key in keys:
        first.setdefault(key, len(first))
    if val_fraction >= 1:
        return [], list(range(n)), n - len(first)
    train_u, val_u = split(len(first), val_fraction, seed)
    in_val = set(val_u)
    train = [i for i in range(n) if first[keys[i]] not in in_val]
    val = [i for i in range(n) if first[keys[i]] in in_val]
    return train, val, n - len(first)


def write_dataset(out: Path, views: dict[str, list[Record]], val_fraction: float, seed: int,
                  meta: dict[str, Any]) -> dict[str, Any]:
    """Write the artifact; every view splits by the same source indices (no val leakage),
    duplicated records kept together (`duplicates` in the metadata counts the extra copies)."""
    train_idx, val_idx, duplicates = split_unique(views, val_fraction, seed)
    counts: dict[str, int] = {}
    for kind in KINDS + tuple(k for k in views if k not in KINDS):
        recs = views.get(kind, [])
        for name, idx in (("train", train_idx), ("val", val_idx)):
            rows = [recs[i] for i in idx] if recs else []
            with open(out / f"{name}.{kind}.jsonl", "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
            counts[f"{name}.{kind}"] = len(rows)
    full = {**meta, "duplicates": duplicates, "counts": counts}
    (out / META).write_text(json.dumps(full, indent=1) + "\n", encoding="utf-8")
    return full


def load_meta(directory: Path) -> dict[str, Any]:
    return json.loads((Path(directory) / META).read_text(encoding="utf-8"))


def iter_records(directory: Path, split_name: str, kind: str) -> Iterator[Record]:
    path = Path(directory) / f"{split_name}.{kind}.jsonl"
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load(directory: Path, split_name: str, kind: str) -> list[Record]:
    return list(iter_records(directory, split_name, kind))


def verifier(meta: dict[str, Any]) -> str | None:
    return meta.get("verifier")
