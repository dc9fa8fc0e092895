"""examples/python_api.py on the checkpoint the own_data run produced: it loads the model
and its tokenizer, generates, scores a text; a missing or wrong argument is exit 2 and a
message, never a traceback."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .conftest import EXAMPLES, OWN_DATA, herd, run

SCRIPT = EXAMPLES / "python_api.py"


def checkpoint(runs: Path, job: str) -> str:
    out = herd("path", str(OWN_DATA), job, "--runs-dir", str(runs))
    assert out.returncode == 0 and not out.stderr, out.stderr  # no "has not run" note
    return out.stdout.strip()


def test_it_generates_and_scores_with_the_fine_tuned_model(own_data_run: Path) -> None:
    out = run([sys.executable, str(SCRIPT), checkpoint(own_data_run, "post.chat.r1.sft")])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "180,544 parameters" in out.stdout
    answers = re.findall(r"^assistant: '(.*)'$", out.stdout, re.M)
    assert len(answers) == 3 and all(answers), out.stdout
    assert "summer" in answers  # July: the fine-tuned model has learnt its seasons
    assert re.search(r"^\d+\.\d+ nats/token over \d+ tokens", out.stdout, re.M)


def test_it_works_on_a_pretraining_checkpoint_too(own_data_run: Path) -> None:
    """Its tokenizer is not inside it: found through `tokenizer_id`, beside it in the store."""
    out = run([sys.executable, str(SCRIPT), checkpoint(own_data_run, "train.base")])
    assert out.returncode == 0, out.stdout + out.stderr
    continuations = re.findall(r"^'[^']*' -> '(.*)'$", out.stdout, re.M)
    assert len(continuations) == 2 and all(continuations), out.stdout


def test_a_missing_or_wrong_argument_is_exit_2_with_a_message(tmp_path: Path) -> None:
    missing = run([sys.executable, str(SCRIPT)])
    assert missing.returncode == 2 and "checkpoint" in missing.stderr
    for bad in (tmp_path / "nothing-here", tmp_path):
        out = run([sys.executable, str(SCRIPT), str(bad)])
        assert out.returncode == 2 and out.stderr.startswith("error: ") and str(bad) in out.stderr
        assert not out.stdout
