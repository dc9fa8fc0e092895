"""Post-training on a user's own JSONL: the records that used to slip through or go wrong.

Each test is one rule a user can rely on: what counts as a bad record, how duplicates are
split, what happens to conversations longer than the context, and which results refuse to
be computed rather than mean nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from runtime.jobs.context import JobFailed
from runtime.jobs.post_jobs import REFERENCE, _cell, fitting_pairs
from runtime.post import datasets as D


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def test_an_empty_assistant_response_is_a_bad_record(tmp_path):
    """An empty response teaches SFT to stop at once and gives DPO nothing to compare."""
    path = _write(tmp_path / "d.jsonl", [
        {"prompt": "q", "chosen": "", "rejected": "b"},
        {"prompt": "q", "chosen": [{"role": "assistant", "content": "  "}], "rejected": "b"},
        {"prompt": "q", "chosen": "a", "rejected": "b"},
    ])
    good, bad = D.read_jsonl(path, "preferences")
    assert len(good) == 1
    assert "'chosen' is empty" in bad[0] and "chosen[0] is an assistant turn with empty content" in bad[1]
    _, bad = D.read_jsonl(_write(tmp_path / "m.jsonl", [_chat("hi", "")]), "messages")
    assert "messages[1] is an assistant turn with empty content" in bad[0]


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_a_compressed_dataset_reads_like_a_plain_one_and_a_cut_one_says_so(tmp_path, suffix):
    import gzip

    import zstandard

    records = [_chat(f"question {i}", f"answer {i}") for i in range(2000)]
    data = _write(tmp_path / "d.jsonl", records).read_bytes()
    packed = gzip.compress(data) if suffix == ".gz" else zstandard.ZstdCompressor().compress(data)
    (tmp_path / f"d.jsonl{suffix}").write_bytes(packed)
    assert D.read_jsonl(tmp_path / f"d.jsonl{suffix}", "messages") == D.read_jsonl(tmp_path / "d.jsonl", "messages")
    (tmp_path / f"cut.jsonl{suffix}").write_bytes(packed[: len(packed) // 2])
    good, bad = D.read_jsonl(tmp_path / f"cut.jsonl{suffix}", "messages")
    assert len(good) < 2000 and len(bad) == 1 and "unreadable or truncated file" in bad[0]


def test_duplicated_records_stay_in_one_split(job, tmp_path):
    """A copy in train and a copy in val would score the model on what it trained on."""
    records = [_chat(f"q{i}", f"a{i}") for i in range(10)] * 3  # every record three times
    out = job("data.dataset", {"format": "messages", "path": str(_write(tmp_path / "d.jsonl", records)),
                               "val_fraction": 0.3})
    train = {json.dumps(r) for r in D.load(out, "train", "sft")}
    val = {json.dumps(r) for r in D.load(out, "val", "sft")}
    assert val and not train & val
    assert D.load_meta(out)["duplicates"] == 20
    assert "20 duplicated record(s)" in (out / "report.md").read_text()


def test_an_empty_file_says_so(job, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(JobFailed, match="has no records .*empty.*hint: one JSON object per line"):
        job("data.dataset", {"format": "messages", "path": str(tmp_path / "empty.jsonl")})


def test_eval_tasks_refuses_prompts_without_answers(job, tmp_path, checkpoint, tokenizer_dir):
    """Preferences without `answer` have nothing to check: 0% accuracy would be a lie."""
    prefs = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(10)]
    data = job("data.dataset", {"format": "preferences", "val_fraction": 0.5,
                                "path": str(_write(tmp_path / "p.jsonl", prefs))}, name="prefs")
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data}
    with pytest.raises(JobFailed, match="has an answer to check; hint"):
        job("eval.tasks", {"params": {"max_new_tokens": 2}}, inputs)


def test_eval_tasks_skips_prompts_without_an_answer(job, tmp_path, checkpoint, tokenizer_dir):
    prompts = [{"prompt": f"q{i}", **({"answer": "a"} if i % 2 else {})} for i in range(10)]
    data = job("data.dataset", {"format": "prompts", "val_fraction": 1.0,
                                "path": str(_write(tmp_path / "p.jsonl", prompts))}, name="prompts")
    out = job("eval.tasks", {"params": {"max_new_tokens": 2}},
              {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data})
    result = json.loads((out / "eval.json").read_text())
    held_out = D.load(data, "val", "prompts")
    assert result["count"] == sum("answer" in r for r in held_out) > 0
    assert result["skipped_without_answer"] == sum("answer" not in r for r in held_out) > 0
    assert "without an answer skipped" in (out / "report.md").read_text()


def test_a_conversation_longer_than_the_context_cannot_poison_sft(job, tmp_path, checkpoint,
                                                                  tokenizer_dir):
    """Cut to the context, a long prompt leaves no assistant token: a batch of only such rows
    has a NaN loss, and one NaN step used to turn every weight into NaN without an error."""
    long = [_chat("x" * 300, "ok") for _ in range(3)]
    data = job("data.dataset", {"format": "messages", "val_fraction": 0.0,
                                "path": str(_write(tmp_path / "d.jsonl", long + [_chat("hi", "yo")]))},
               name="mixed")
    out = job("post.sft", {"steps": 3, "batch": 1, "lr": 1e-3},
              {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data})
    train = json.loads((out / "train.json").read_text())
    assert train["dropped_too_long"] == 3 and train["rows"] == 1
    assert all(math.isfinite(float(v.abs().max())) for v in load_file(str(out / "model.safetensors")).values())

    only_long = job("data.dataset", {"format": "messages", "val_fraction": 0.0,
                                     "path": str(_write(tmp_path / "l.jsonl", long))}, name="long")
    with pytest.raises(JobFailed, match="longer than the context .* hint"):
        job("post.sft", {"steps": 1}, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir,
                                       "dataset": only_long}, name="sft_long")


def test_pairs_longer_than_the_context_are_left_out_alike_by_reference_and_dpo(
        job, tmp_path, tok, checkpoint, tokenizer_dir):
    prefs = [{"prompt": "q", "chosen": "y" * 300, "rejected": "n"}] + [
        {"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(4)]
    kept, left_out = fitting_pairs(tok, D.derive("preferences", D.read_jsonl(
        _write(tmp_path / "p.jsonl", prefs), "preferences")[0])["preferences"], 128)
    assert left_out == 1 and len(kept) == 4
    data = job("data.dataset", {"format": "preferences", "val_fraction": 0.0,
                                "path": str(tmp_path / "p.jsonl")}, name="prefs")
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data}
    ref = job("post.dpo_reference", {}, inputs)
    assert len(load_file(str(ref / REFERENCE))["chosen"]) == 4
    out = job("post.dpo", {"steps": 2, "batch": 2}, {**inputs, "reference": ref})
    assert json.loads((out / "train.json").read_text())["pairs"] == 4


def test_dpo_refuses_a_reference_from_another_mask_or_model(job, tmp_path, checkpoint, tokenizer_dir):
    """The implicit reward β·(π − r) is only meaningful against the policy DPO starts from."""
    prefs = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(4)]
    data = job("data.dataset", {"format": "preferences", "val_fraction": 0.0,
                                "path": str(_write(tmp_path / "p.jsonl", prefs))}, name="prefs")
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data}
    ref = job("post.dpo_reference", {"mask": "none"}, inputs)
    with pytest.raises(JobFailed, match="mask 'none' but DPO uses 'formatting_tokens'"):
        job("post.dpo", {"steps": 1}, {**inputs, "reference": ref}, name="dpo_mask")
    tensors = load_file(str(ref / REFERENCE))
    # as earlier herd wrote it (one metadata key per field): old references are checked too
    save_file(tensors, str(ref / REFERENCE), metadata={"mask": "none", "checkpoint": "other-model"})
    with pytest.raises(JobFailed, match="come from checkpoint 'other-model'"):
        job("post.dpo", {"steps": 1, "mask": "none"}, {**inputs, "reference": ref}, name="dpo_model")


def test_a_reward_model_that_scores_everything_alike_reports_ties(job, tmp_path, checkpoint,
                                                                  tokenizer_dir):
    """With lr 0 the zero-initialised head scores every response 0: 0% accuracy, all ties."""
    prefs = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(6)]
    data = job("data.dataset", {"format": "preferences", "val_fraction": 0.5,
                                "path": str(_write(tmp_path / "p.jsonl", prefs))}, name="prefs")
    out = job("post.reward_model", {"steps": 1, "batch": 2, "lr": 0.0},
              {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data})
    result = json.loads((out / "eval.json").read_text())
    assert result["accuracy"] == 0.0 and result["ties"] == result["pairs"] == 3
    assert "scored as ties" in (out / "report.md").read_text()


def test_sft_after_rejection_sampling_that_accepted_nothing_explains_itself(
        job, tmp_path, checkpoint, tokenizer_dir):
    data = job("data.dataset", {"format": "prompts", "path": str(_write(
        tmp_path / "p.jsonl", [{"prompt": f"q{i}", "answer": "a"} for i in range(4)]))}, name="prompts")
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "train.sft.jsonl").write_text("")  # what rejection sampling writes when it keeps none
    with pytest.raises(JobFailed, match="rejection sampling accepted no sample; hint"):
        job("post.sft", {"steps": 1}, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir,
                                       "dataset": data, "samples": samples})


def test_report_cells_survive_pipes_and_newlines_in_responses():
    assert _cell("a | b\nc `d`") == "a \\| b⏎c 'd'"
