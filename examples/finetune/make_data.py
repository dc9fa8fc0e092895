"""Write this example's post-training data: questions about the Python standard library,
answered from the running interpreter's own docstrings (no downloads).

    python examples/finetune/make_data.py      # rewrites chats.jsonl and prefs.jsonl

- chats.jsonl (`format = messages`): "What does json.dumps do?" → the docstring's first sentence.
- prefs.jsonl (`format = preferences`): the same question, the right answer as `chosen` and
  another function's answer as `rejected`.

The output depends only on the functions listed below and their docstrings, so it is the
same on every run with the same Python.
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
FUNCTIONS = [
    "json.dumps", "json.loads", "os.path.join", "os.path.splitext", "os.path.basename", "os.makedirs",
    "shutil.copyfile", "shutil.rmtree", "glob.glob", "re.sub", "re.findall", "re.compile", "math.isclose",
    "math.gcd", "statistics.median", "statistics.mean", "itertools.chain", "itertools.islice",
    "functools.reduce", "functools.partial", "collections.Counter", "textwrap.dedent", "textwrap.wrap",
    "random.shuffle", "random.choice", "heapq.heappush", "heapq.nsmallest", "bisect.bisect_left",
    "hashlib.sha256", "base64.b64encode", "zlib.compress", "gzip.open", "csv.reader", "time.sleep",
    "datetime.date", "pathlib.Path", "tempfile.mkdtemp", "subprocess.run", "urllib.parse.urlparse",
    "difflib.unified_diff", "string.capwords", "operator.itemgetter", "copy.deepcopy", "pprint.pformat",
]


def first_sentence(obj: object) -> str | None:
    doc = inspect.getdoc(obj)
    if not doc:
        return None
    text = " ".join(doc.strip().split("\n\n")[0].split())
    if "(" in text.split(" ", 1)[0]:  # a C signature line such as "dumps(obj, ...)"
        text = " ".join(doc.strip().split("\n\n")[1].split()) if "\n\n" in doc else ""
    end = text.find(". ")
    text = text[: end + 1] if end > 0 else text
    return text if 12 <= len(text) <= 240 else None


def answers() -> dict[str, str]:
    out = {}
    for name in FUNCTIONS:
        module, _, attr = name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        sentence = first_sentence(obj)
        if sentence:
            out[name] = sentence
    return out


def main() -> None:
    found = answers()
    rng = random.Random(0)
    names = sorted(found)
    chats, prefs = [], []
    for name in names:
        for question in (f"What does {name} do?", f"In one sentence, what is {name} for?"):
            chats.append({"messages": [{"role": "user", "content": question},
                                       {"role": "assistant", "content": found[name]}]})
            wrong = rng.choice([n for n in names if n != name])
            prefs.append({"prompt": question, "chosen": found[name], "rejected": found[wrong]})
    for path, records in ((HERE / "chats.jsonl", chats), (HERE / "prefs.jsonl", prefs)):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        print(f"wrote {len(records)} records to {path.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
