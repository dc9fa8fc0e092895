"""Fraction of a document's words that appear in a word list (one entry per line, `#` comments).

The list's *content* (not its path) is part of the scoring key: editing the file re-scores.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from runtime.data.filters import Filter, Scores, register_filter
from runtime.data.text import words
from runtime.jobs.context import JobFailed


def load_word_list(path: str) -> frozenset[str]:
    """The list's words, lower-cased; a missing, folder or unreadable list is a user error
    that says which of these it is."""
    p = Path(path)
    if p.is_dir():
        try:
            inside = sorted(f.name for f in p.iterdir() if f.is_file())
        except OSError:  # an unreadable folder: the generic example will do
            inside = []
        example = next((n for n in inside if n.endswith(".txt")), inside[0] if inside else "en.txt")
        raise JobFailed(f"dirty_words: word list {path!r} is a folder, not a file; hint: name a "
                        f"file in it (list = \"{path.rstrip('/')}/{example}\")")
    if not p.is_file():
        raise JobFailed(f"dirty_words: word list {path!r} not found; hint: give an existing file "
                        "with one word per line (list = \"words/en.txt\")")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise JobFailed(f"{path}: word list is not UTF-8 ({e})") from None
    except OSError as e:  # unreadable: permissions, or removed since the check
        raise JobFailed(f"{path}: word list is unreadable ({e.strerror or e}); hint: check the "
                        "file's permissions") from None
    entries = set()
    for line in lines:
        line = line.split("#", 1)[0].strip().lower()
        entries.update(words(line))
    return frozenset(entries)


@register_filter
class DirtyWords(Filter):
    name = "dirty_words"

    def check_params(self, params: dict[str, Any]) -> None:
        if "list" not in params:
            raise JobFailed("dirty_words: needs list = \"path/to/words.txt\"")
        load_word_list(params["list"])

    def outside_files(self, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        return [], [str(params["list"])]

    def scoring_params(self, params: dict[str, Any]) -> dict[str, Any]:
        data = Path(params["list"]).read_bytes()
        return {"list_sha256": hashlib.sha256(data).hexdigest(), "list": params["list"]}

    def prepare(self, scoring: dict[str, Any], shards: list[Path]) -> Any:
        return load_word_list(scoring["list"])

    def score(self, text: str, scoring: dict[str, Any], state: Any) -> Scores:
        tokens = words(text)
        if not tokens:
            return {"dirty_fraction": 0.0}
        return {"dirty_fraction": sum(t in state for t in tokens) / len(tokens)}

    def keep(self, scores: Scores, params: dict[str, Any]) -> tuple[bool, str]:
        limit = float(params.get("max_fraction", 0.01))
        if scores["dirty_fraction"] > limit:
            return False, f"dirty_fraction={scores['dirty_fraction']:.3f}>{limit:g}"
        return True, ""
