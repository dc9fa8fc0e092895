"""Write this example's post-training data: questions about the Python standard library,
answered from the running interpreter's own docstrings (no downloads).

    python examples/finetune/make_data.py      # rewrites chats.jsonl, prefs.jsonl and quiz.jsonl

- chats.jsonl (`format = messages`): "What does json.dumps do?" → the docstring's first sentence.
- prefs.jsonl (`format = preferences`): the same question, the right answer as `chosen` and
  another function's answer as `rejected`.
- quiz.jsonl (`format = choices`): held-out functions (every third one, never trained on),
  each asked with its own sentence among three other held-out functions' — a multiple-choice
  benchmark of what the model knows about functions it was not fine-tuned on.

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
    "os.listdir", "os.getcwd", "os.path.exists", "os.path.isdir", "os.path.abspath", "os.path.dirname",
    "shutil.move", "shutil.which", "json.dump", "json.load", "re.match", "re.search", "re.split",
    "math.sqrt", "math.floor", "math.ceil", "math.log", "statistics.stdev", "itertools.product",
    "itertools.permutations", "itertools.groupby", "functools.lru_cache", "functools.wraps",
    "collections.namedtuple", "collections.deque", "collections.OrderedDict", "textwrap.indent",
    "random.randint", "random.sample", "heapq.heappop", "heapq.heapify", "bisect.insort",
    "hashlib.md5", "base64.b64decode", "zlib.decompress", "csv.writer", "time.time", "time.strftime",
    "datetime.timedelta", "tempfile.NamedTemporaryFile", "subprocess.check_output", "urllib.parse.quote",
    "urllib.parse.urlencode", "difflib.SequenceMatcher", "operator.attrgetter", "copy.copy", "pprint.pprint",
    "fnmatch.fnmatch", "struct.pack", "struct.unpack", "uuid.uuid4", "secrets.token_hex", "inspect.getdoc",
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
    held_out = names[2::3]
    quiz = []
    for name in held_out:
        # distractors from held-out functions too: a trained answer would win by being familiar
        wrong = rng.sample([found[n] for n in held_out if n != name and found[n] != found[name]], 3)
        at = rng.randrange(4)
        quiz.append({"question": f"What does {name} do?", "choices": wrong[:at] + [found[name]] + wrong[at:],
                     "answer": at})
    chats, prefs = [], []
    for name in (n for n in names if n not in held_out):
        for question in (f"What does {name} do?", f"In one sentence, what is {name} for?"):
            chats.append({"messages": [{"role": "user", "content": question},
                                       {"role": "assistant", "content": found[name]}]})
            wrong = rng.choice([n for n in names if n != name and found[n] != found[name]])
            prefs.append({"prompt": question, "chosen": found[name], "rejected": found[wrong]})
    for path, records in ((HERE / "chats.jsonl", chats), (HERE / "prefs.jsonl", prefs), (HERE / "quiz.jsonl", quiz)):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        print(f"wrote {len(records)} records to {path.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
