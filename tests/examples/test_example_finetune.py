"""examples/finetune/: post-training a model made elsewhere from a `checkpoint` block.

`tiny_finetune.herd` expects the embedded default's model exported to `tiny-llama/`. A real one takes
`make run`; here a model of the same shape (random weights, a BPE of the same size) is
exported into a copy of the folder, and the example runs there unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import EXAMPLES, herd

FINETUNE = EXAMPLES / "finetune"
TINY_MODEL = {  # specs/tiny.herd's model after its extension to 1K (`herd compile` says so)
    "name": "tiny", "vocab_size": 2304, "dim": 128, "layers": 4, "heads": 4, "kv_heads": 2, "head_dim": 32,
    "ffn_dim": 352, "norm_eps": 1e-5, "rope_theta": 10_000.0, "rope_scaling": None, "tied_embeddings": True,
    "max_context": 1024, "document_mask": True, "init_std": 0.02,
}


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/finetune/ with `tiny-llama/` exported as the README says."""
    from runtime.data.tokenizer import save_tokenizer, train_bpe
    from runtime.model import export_hf, from_config, save_checkpoint

    folder = tmp_path_factory.mktemp("finetune")
    for name in ("tiny_finetune.herd", "chats.jsonl", "prefs.jsonl", "quiz.jsonl"):
        shutil.copy(FINETUNE / name, folder / name)
    texts = [p.read_text(encoding="utf-8") for p in sorted((EXAMPLES.parent / "docs").glob("*.md"))]
    _, ranks = train_bpe(texts, 2048, "llama3")
    (folder / "tok").mkdir()
    save_tokenizer(folder / "tok", ranks, "llama3", 256)
    save_checkpoint(from_config(TINY_MODEL, seed=0), folder / "ckpt")
    export_hf(folder / "ckpt", folder / "tiny-llama", tokenizer_dir=folder / "tok")
    return folder


def test_the_tiny_example_fine_tunes_the_exported_model(example: Path) -> None:
    out = herd("run", str(example / "tiny_finetune.herd"), "--runs-dir", str(example / "runs"), timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    for job in ("checkpoint.tiny_base", "post.docs_assistant.r1.sft", "post.docs_assistant.r1.dpo",
                "eval.docs_assistant.r0.docs_quiz", "eval.docs_assistant.summary"):
        assert f"done     {job}" in out.stdout
    quiz = herd("path", str(example / "tiny_finetune.herd"), "eval.docs_assistant.r1.dpo.docs_quiz", "--runs-dir",
                str(example / "runs")).stdout.strip()
    result = json.loads((Path(quiz) / "eval.json").read_text())
    assert result["count"] == 31 and result["chance"] == 0.25 and 0 <= result["accuracy"] <= 1
    dpo = herd("path", str(example / "tiny_finetune.herd"), "post.docs_assistant.r1.dpo", "--runs-dir",
               str(example / "runs")).stdout.strip()
    trained = json.loads((Path(dpo) / "train.json").read_text())
    assert trained["pairs"] > 0 and trained["steps"] > 0
    summary = herd("path", str(example / "tiny_finetune.herd"), "eval.docs_assistant.summary", "--runs-dir",
                   str(example / "runs")).stdout.strip()
    stats = json.loads((Path(summary) / "stats.json").read_text())
    assert stats["last_response_loss"] < stats["first_response_loss"] - 0.5  # SFT taught the replies
    loaded = herd("path", str(example / "tiny_finetune.herd"), "eval.as_loaded.summary", "--runs-dir",
                  str(example / "runs")).stdout.strip()
    as_loaded = json.loads((Path(loaded) / "stats.json").read_text())  # the evaluate block: the same numbers
    assert as_loaded["first_response_loss"] == stats["first_response_loss"]
    assert "### Evaluations of tiny_base" in (Path(loaded) / "report.md").read_text()


def test_import_blocks_prints_the_examples_three_blocks(example: Path) -> None:
    """The comment in tiny_finetune.herd says `herd import ... --blocks --name tiny` prints its blocks."""
    printed = herd("import", str(example / "tiny-llama"), "--blocks", "--name", "tiny").stdout
    spec = (FINETUNE / "tiny_finetune.herd").read_text(encoding="utf-8")
    body = printed.split("\n", 1)[1].replace(str(example / "tiny-llama"), "tiny-llama")
    assert body.strip() in spec


def test_the_llama_example_compiles_to_llama_32_1b() -> None:
    out = herd("compile", str(FINETUNE / "llama32_1b.herd"), "--format", "json")
    plan = json.loads(out.stdout)
    assert plan["models"]["llama32_1b"]["params"] == 1_235_814_400
    assert [j["kind"] for j in plan["jobs"] if j["id"] == "checkpoint.base"] == ["model.load"]
