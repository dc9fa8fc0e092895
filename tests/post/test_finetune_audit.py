"""Fine-tuning a model made elsewhere, as a user gets it wrong: the `model.load` job's
messages and cache, `herd import DIR --blocks` on awkward folders, and a tokenizer block
whose `vocab` is not its file's. Job-level (no CLI start-up), on a 64K-parameter model."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from herdlang.spec import load_text
from runtime.data.hf_tokenizer import load_ranks_or_hf, write_hf_tokenizer
from runtime.data.tokenizer import checkpoint_tokenizer, save_tokenizer
from runtime.executor import external
from runtime.jobs.context import JobFailed
from runtime.model import export_hf, from_config, save_checkpoint
from runtime.model.checkpoint import CheckpointError, load_state, read_meta
from runtime.model.hf_folder import HF_INDEX, HF_WEIGHTS
from runtime.model.spec_blocks import block_name, describe_folder

from .conftest import TINY

SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_context": 64}
MODEL = {**TINY, "rope_theta": 500_000.0, "rope_scaling": SCALING}  # a Llama 3.1-style RoPE


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level tokenizer (256 ranks + 16 specials = TINY's 272 ids), a herd checkpoint
    of MODEL, and its Hugging Face export with the tokenizer."""
    d = tmp_path_factory.mktemp("made")
    (d / "tok").mkdir()
    save_tokenizer(d / "tok", {bytes([i]): i for i in range(256)}, "llama3", 16)
    save_checkpoint(from_config(MODEL, seed=0), d / "herd_ckpt")
    export_hf(d / "herd_ckpt", d / "hf", tokenizer_dir=d / "tok")
    return d


RUNS = iter(range(1_000_000))


def load(job: Callable[..., Path], path: Path, model: dict | None = None, **inputs: Path) -> Path:
    """Run `model.load` for a spec's `checkpoint base { path = PATH }` of MODEL (changed by `model`)."""
    return job("model.load", {"path": str(path), "model": {**MODEL, **(model or {})}}, inputs or None,
               name=f"run{next(RUNS)}/checkpoint.base")


def failure(job: Callable[..., Path], path: Path, model: dict | None = None) -> str:
    with pytest.raises(JobFailed) as err:
        load(job, path, model)
    return str(err.value)


def shard(folder: Path) -> None:
    """Turn model.safetensors into two shards and an index, as `save_pretrained(max_shard_size=...)`."""
    tensors = load_file(folder / HF_WEIGHTS)
    names = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
             "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in parts.items():
        save_file({k: tensors[k] for k in keys}, str(folder / file), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: f for f, keys in parts.items() for k in keys}}
    (folder / HF_INDEX).write_text(json.dumps(index), encoding="utf-8")
    (folder / HF_WEIGHTS).unlink()


def test_a_weights_file_added_beside_the_shards_reloads_the_checkpoint(made: Path, tmp_path: Path,
                                                                        job: Callable[..., Path]) -> None:
    """The loader prefers model.safetensors to the shards: one that appears later holds the
    weights a fresh load would read, so the cached load is out of date."""
    folder = tmp_path / "sharded"
    export_hf(made / "herd_ckpt", folder)
    shard(folder)
    out = load(job, folder)
    assert external.changed(out) is None
    other = from_config(MODEL, seed=1)
    save_checkpoint(other, tmp_path / "other")
    export_hf(tmp_path / "other", tmp_path / "other_hf")
    os.replace(tmp_path / "other_hf" / HF_WEIGHTS, folder / HF_WEIGHTS)
    assert external.changed(out) == f"{folder / HF_WEIGHTS} is new"


def test_a_folder_whose_name_looks_like_a_glob_stays_cached(made: Path, tmp_path: Path,
                                                             job: Callable[..., Path]) -> None:
    folder = tmp_path / "Llama [v3] *"
    export_hf(made / "herd_ckpt", folder)
    out = load(job, folder)
    assert external.changed(out) is None
    (folder / "config.json").touch()
    os.utime(folder / "config.json", ns=(1, 1))
    assert external.changed(out) == f"{folder / 'config.json'} was modified"


def test_a_wrong_theta_hint_keeps_the_scaling(made: Path, job: Callable[..., Path]) -> None:
    """Llama 3.1 and 3.2 scale RoPE: a fix of θ alone that drops the scaling would fail next time."""
    text = failure(job, made / "hf", {"rope_theta": 10_000.0})
    assert "RoPE theta: the spec's model 'tiny' has 10000, the checkpoint 500000" in text
    assert ("hint: describe the checkpoint in the model block: rope = rope(theta = 500000, scaling = "
            "llama3(factor = 8, low_freq_factor = 1, high_freq_factor = 4, original_context = 64))") in text


def test_a_missing_scaling_hint_names_theta(made: Path, job: Callable[..., Path]) -> None:
    text = failure(job, made / "hf", {"rope_scaling": None})
    assert "rope = rope(theta = 500000, scaling = llama3(factor = 8," in text and "theta = ..." not in text


def test_a_wrong_dim_asks_for_dim_alone(made: Path, job: Callable[..., Path]) -> None:
    """head_dim follows from dim and heads in the spec: once dim is right, so is it."""
    text = failure(job, made / "hf", {"dim": 96, "head_dim": 24})
    assert "dim: the spec's model 'tiny' has 96, the checkpoint 48" in text
    assert "model block: dim = 48 (`herd import" in text and "head_dim = 12" not in text
    explicit = failure(job, made / "hf", {"dim": 96, "head_dim": 16})  # a head size the spec sets itself
    assert "dim = 48  head_dim = 12" in explicit


def test_a_wrong_vocabulary_points_at_the_tokenizer_block(made: Path, job: Callable[..., Path]) -> None:
    text = failure(job, made / "hf", {"vocab_size": 266})
    assert "vocab = 272 (a model's vocabulary is its tokenizer block's vocab + special_tokens" in text


def test_the_import_command_in_a_hint_is_quoted(made: Path, tmp_path: Path, job: Callable[..., Path]) -> None:
    folder = tmp_path / "my models" / "Llama 3"
    export_hf(made / "herd_ckpt", folder)
    text = failure(job, folder, {"layers": 3})
    assert f"`herd import '{folder}' --blocks` prints a model block that matches" in text


def test_a_missing_folder_and_a_file_are_told_apart(made: Path, tmp_path: Path, job: Callable[..., Path]) -> None:
    text = failure(job, tmp_path / "nope")
    assert f"{tmp_path / 'nope'} does not exist" in text and "relative to the spec's folder" in text
    text = failure(job, made / "hf" / "config.json")
    assert f"{made / 'hf' / 'config.json'} is a file, not a folder" in text
    assert f"the one that holds this file is {made / 'hf'}" in text


def test_a_config_of_another_architecture_names_the_folder(made: Path, tmp_path: Path,
                                                            job: Callable[..., Path]) -> None:
    folder = tmp_path / "mistral"
    export_hf(made / "herd_ckpt", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    text = failure(job, folder)
    assert f"checkpoint 'base': {folder}: config.json has model_type 'mistral'" in text


def test_the_loaded_checkpoint_names_its_tokenizer(made: Path, tmp_path: Path, job: Callable[..., Path]) -> None:
    """With the tokenizer job as an input, `herd generate`, `chat` and `export` of the loaded
    checkpoint find the tokenizer beside it in the store, as for a trained one."""
    store = tmp_path / "store"
    (store / "0123456789abcdef0123").mkdir(parents=True)
    tok = store / "0123456789abcdef0123"
    save_tokenizer(tok, {bytes([i]): i for i in range(256)}, "llama3", 16)
    out = load(job, made / "hf", tokenizer=tok)
    meta = read_meta(out)
    assert meta["tokenizer_id"] == tok.name
    entry = store / "fedcba9876543210fedc"  # where the executor puts the artifact: beside the tokenizer
    os.replace(out, entry)
    assert checkpoint_tokenizer(entry, read_meta(entry)) == tok
    weights, _ = load_state(entry)
    original, _ = load_state(made / "herd_ckpt")
    assert all(torch.equal(original[k], weights[k]) for k in original)


# -- herd import DIR --blocks ----------------------------------------------------------------


def blocks_of(text: str) -> dict:
    """The blocks' settings as the spec parser reads them."""
    spec = load_text(text)
    return {d.name: d for d in spec.order}


def test_blocks_of_a_folder_with_quotes_and_backslashes_parse_to_its_path(made: Path, tmp_path: Path) -> None:
    for name in ('say "hi"', "back\\slash", "new\\nline"):
        folder = tmp_path / name
        export_hf(made / "herd_ckpt", folder, tokenizer_dir=made / "tok")
        text = describe_folder(folder, "m")
        found = blocks_of(text)
        assert found["m_base"].config.path == str(folder)
        assert found["m_tokenizer"].config.file == f"{folder}/tokenizer.json"


@pytest.mark.parametrize(("name", "suggestion"), [("3b", "m_3b"), ("my-model", "my_model"),
                                                  ("true", "true_model"), ("a b", "a_b")])
def test_blocks_refuse_a_name_that_is_not_a_herd_name(made: Path, name: str, suggestion: str) -> None:
    with pytest.raises(CheckpointError, match=f"is not a herd name.*\nhint: e.g. --name {suggestion}$"):
        describe_folder(made / "hf", name)


def test_blocks_of_a_file_or_nothing_say_so(made: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config.json is a file: herd import --blocks takes the model's "
                                              r"folder\nhint: herd import .*/hf --blocks"):
        describe_folder(made / "hf" / "config.json")
    with pytest.raises(CheckpointError, match="nope does not exist"):
        describe_folder(tmp_path / "nope")


def test_blocks_are_named_after_the_folder_the_user_names(made: Path, tmp_path: Path) -> None:
    """A symlink's own name, not its target's; a Hugging Face cache snapshot by its model, not
    its commit hash."""
    (tmp_path / "llama-3.2-1b").symlink_to(made / "hf")
    assert block_name(tmp_path / "llama-3.2-1b") == "llama_3_2_1b"
    snapshot = tmp_path / "hub" / "models--meta-llama--Llama-3.2-1B" / "snapshots" / "4e20de362430cd3b72f3"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(made / "hf")
    assert block_name(snapshot) == "llama_3_2_1b"
    assert "checkpoint llama_3_2_1b_base {" in describe_folder(snapshot)


# -- a tokenizer block's vocab against its file ------------------------------------------------


def test_a_tokenizer_block_vocab_that_is_not_the_files_is_refused(made: Path, tmp_path: Path) -> None:
    """A smaller `vocab` gives the model fewer embeddings than the file has ids: training
    would stop at an IndexError. (The plan must pass `vocab` to tokenizer.load for this.)"""
    write_hf_tokenizer(made / "tok", tmp_path, 128)
    for file in (tmp_path / "tokenizer.json", made / "tok" / "tokenizer.model"):
        ranks, _, _ = load_ranks_or_hf(file, "llama3", 16, 256)
        assert len(ranks) == 256
        with pytest.raises(JobFailed, match=r"the file has 256 ranks but the tokenizer block says vocab = 200; "
                                            r"hint: set `vocab = 256` in the tokenizer block"):
            load_ranks_or_hf(file, "llama3", 16, 200)
    assert load_ranks_or_hf(made / "tok" / "tokenizer.model", "llama3", 16)[1] == "tiktoken"  # no vocab: unchecked


@pytest.mark.parametrize("folder", ["hf", "herd_ckpt"])
def test_loading_moves_a_bar_over_every_pass_of_the_weights(made: Path, tmp_path: Path, folder: str) -> None:
    """An 8B model is a minute of reading, writing and checksumming: the bar moves through
    each pass in bytes, names it, and ends full."""
    from runtime.jobs import registry

    from .conftest import make_ctx

    ctx = make_ctx(tmp_path, "model.load", {"path": str(made / folder), "model": MODEL}, {},
                   f"bar-{folder}/checkpoint.base", "cpu")
    seen: list[tuple[str, float, float | None]] = []
    ctx.progress.on_change = lambda p: seen.append((p.info.get("phase", ""), p.done, p.total))
    registry.get("model.load")(ctx)
    phases = [phase for phase, _, _ in seen if phase]
    assert list(dict.fromkeys(phases)) == ["reading", "writing", "done"]
    weights = sum(f.stat().st_size for f in (made / folder).glob("*.safetensors"))
    total = seen[0][2]
    assert total == (4 if folder == "herd_ckpt" else 3) * weights
    done = [d for _, d, _ in seen]
    assert done == sorted(done) and seen[-1][1] == total
    assert all(d <= total for d in done)  # the estimate holds: no bar past 100%


def test_blocks_import_no_torch(made: Path) -> None:
    """`herd import DIR --blocks` reads config.json and the tokenizer only: it used to take
    3-4 s importing torch through the runtime.model package; the package now loads lazily."""
    import subprocess
    import sys

    code = ("import sys; from herdlang.cli import main; rc = main(['import', sys.argv[1], '--blocks']); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(made / "hf")], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert "\ncheckpoint " in out.stdout and "\nmodel " in out.stdout
