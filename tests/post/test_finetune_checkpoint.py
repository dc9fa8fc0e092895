"""Fine-tuning a model made elsewhere: a spec's `checkpoint` block names a Hugging Face
Llama folder (or a herd checkpoint) and post-training continues `from` it — the way a team
fine-tunes a local Llama 3 download. Runs the real CLI on a 64K-parameter model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compiler import compile_file
from runtime.data.tokenizer import save_tokenizer
from runtime.model import export_hf, from_config, save_checkpoint
from runtime.model.checkpoint import load_state

from .conftest import TINY

ROOT = Path(__file__).resolve().parents[2]

SPEC = """
tokenizer bytes {{ file = "tok/tokenizer.model"  vocab = 256  special_tokens = 16 }}
model small {{
  tokenizer = bytes  layers = 2  dim = 48  heads = 4  attention = gqa(kv_heads = 2)
  ffn = swiglu(hidden = 128)  tied = true  context = 128  rope = rope(theta = {theta})
}}
checkpoint base {{ path = "{path}"  model = small }}
dataset tasks {{ format = tasks  generate = tasks(kinds = [add], count = 200, seed = 0) }}
posttrain chat {{
  from = base
  sft {{ data = tasks  lr = 1e-3  steps = 4 steps  batch = 2 }}
  evals = []
}}
run {{ device = cpu  precision = fp32 }}
"""


def herd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "herdlang.cli", *args], cwd=cwd, capture_output=True,
                         text=True, timeout=300, env=env)
    assert "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level tokenizer (256 ranks + 16 specials = TINY's 272 ids), a herd checkpoint
    of TINY at θ = 500,000 and its Hugging Face export."""
    d = tmp_path_factory.mktemp("finetune")
    (d / "tok").mkdir()
    save_tokenizer(d / "tok", {bytes([i]): i for i in range(256)}, "llama3", 16)
    save_checkpoint(from_config({**TINY, "rope_theta": 500_000.0}, seed=0), d / "herd_ckpt")
    export_hf(d / "herd_ckpt", d / "hf")
    return d


def write_spec(folder: Path, name: str, path: str, theta: str = "500_000") -> str:
    (folder / f"{name}.herd").write_text(SPEC.format(path=path, theta=theta), encoding="utf-8")
    return f"{name}.herd"


def artifact(folder: Path, spec: str, job: str) -> Path:
    """Where `herd path` says the job's artifact is (the store entry of its fingerprint)."""
    _, plan = compile_file(folder / spec)
    return folder / "runs" / plan.spec_name / "store" / plan.jobs[job].fingerprint


@pytest.mark.parametrize("path", ["hf", "herd_ckpt"])
def test_post_training_fine_tunes_a_checkpoint_made_elsewhere(folder: Path, path: str) -> None:
    spec = write_spec(folder, f"ft_{path}", path)
    out = herd("run", spec, cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    loaded = artifact(folder, spec, "checkpoint.base")
    stats = json.loads((loaded / "stats.json").read_text())
    assert stats["format"] == ("hf" if path == "hf" else "herd") and stats["params"] == 63_984
    original, _ = load_state(folder / "herd_ckpt")
    weights, meta = load_state(loaded)
    assert all(torch.equal(original[k], weights[k]) for k in original)  # loaded exactly
    assert meta["model"]["name"] == "small" and meta["extra"]["loaded_from"] == str((folder / path).resolve())
    tuned, _ = load_state(artifact(folder, spec, "post.chat.r1.sft"))
    assert not torch.equal(tuned["tok_embeddings.weight"], original["tok_embeddings.weight"])  # it trained
    assert "checkpoint base" in (folder / "runs" / f"ft_{path}" / "report.md").read_text()
    assert herd("path", spec, "checkpoint.base", cwd=folder).stdout.strip() == str(loaded.relative_to(folder))


def test_a_checkpoint_that_is_not_the_declared_model_fails_with_the_fix(folder: Path) -> None:
    """θ differs: no shape tells, so the loader compares the settings and names the fix."""
    spec = write_spec(folder, "wrong_theta", "hf", theta="10_000")
    out = herd("run", spec, cwd=folder)
    assert out.returncode == 1
    assert ("does not hold model 'small':\n  RoPE theta: the spec's model 'small' has 10000, the checkpoint "
            "500000\nhint: describe the checkpoint in the model block: rope = rope(theta = 500000) (`herd import "
            f"{folder / 'hf'} --blocks` prints a model block that matches)") in out.stdout
    assert "skipped  post.chat.r1.sft: upstream job checkpoint.base failed" in out.stdout


def test_a_folder_that_holds_no_checkpoint_is_named(folder: Path) -> None:
    (folder / "empty").mkdir(exist_ok=True)
    out = herd("run", write_spec(folder, "empty_dir", "empty"), cwd=folder)
    assert out.returncode == 1
    assert "is neither a Hugging Face model folder (no config.json) nor a herd checkpoint (no meta.json)" in out.stdout


def test_a_checkpoint_whose_meta_json_misrecords_its_size_is_a_clear_failure(folder: Path) -> None:
    import shutil

    shutil.copytree(folder / "herd_ckpt", folder / "bad_meta", dirs_exist_ok=True)
    meta = json.loads((folder / "bad_meta" / "meta.json").read_text())
    meta["weights"]["bytes"] = "lots"
    (folder / "bad_meta" / "meta.json").write_text(json.dumps(meta))
    out = herd("run", write_spec(folder, "bad_meta", "bad_meta"), cwd=folder)
    assert out.returncode == 1
    assert "checkpoint 'base'" in out.stdout and "meta.json records lots" in out.stdout


def test_replacing_the_checkpoint_files_reloads_it_and_retrains(folder: Path, tmp_path: Path) -> None:
    """A fingerprint hashes the path, not the weights: the files are recorded and checked."""
    spec = write_spec(folder, "replaced", "hf2")
    export_hf(folder / "herd_ckpt", folder / "hf2")
    assert herd("run", spec, cwd=folder).returncode == 0
    other = from_config({**TINY, "rope_theta": 500_000.0}, seed=1)
    save_checkpoint(other, tmp_path / "other")
    export_hf(tmp_path / "other", tmp_path / "other_hf")
    os.replace(tmp_path / "other_hf" / "model.safetensors", folder / "hf2" / "model.safetensors")
    dry = herd("run", spec, "--dry-run", cwd=folder).stdout
    assert "its input files changed since it ran" in dry and "hf2/model.safetensors" in dry
    assert herd("run", spec, cwd=folder).returncode == 0
    weights, _ = load_state(artifact(folder, spec, "checkpoint.base"))
    assert torch.equal(weights["tok_embeddings.weight"], other.state_dict()["tok_embeddings.weight"])


EXTEND = """
tokenizer bytes {{ file = "tok/tokenizer.model"  vocab = 256  special_tokens = 16 }}
model small {{
  tokenizer = bytes  layers = 2  dim = 48  heads = 4  attention = gqa(kv_heads = 2)
  ffn = swiglu(hidden = 128)  tied = true  context = 128  rope = rope(theta = 500_000)
}}
checkpoint base {{ path = "hf"  model = small  context = 64 }}
data notes {{ source jsonl("notes/*.jsonl") {{ text = "text" }} }}
extend long {{
  from = base  context = 64 -> 128  tokens = 4K tokens  data = notes
  batch = 512 tokens  optimizer = adamw(lr = 1e-3)
  gate {{ {gate} }}
}}
anneal final {{ from = long  tokens = 2K tokens  data = notes }}
run {{ device = cpu  precision = fp32 }}
"""


def test_a_checkpoint_is_extended_and_annealed_and_a_needle_too_long_for_its_haystacks_is_skipped(
        folder: Path) -> None:
    """The pass-key prompt takes 81 byte tokens: at 64 it cannot be measured, at 128 it is;
    a needle gate that no length can measure fails with what to do, not a ValueError."""
    (folder / "notes").mkdir(exist_ok=True)
    words = "model data token layer loss small train text value".split()
    (folder / "notes" / "a.jsonl").write_text("".join(
        json.dumps({"text": " ".join(words[(i * j) % len(words)] for j in range(60))}) + "\n"
        for i in range(200)), encoding="utf-8")
    (folder / "extend.herd").write_text(EXTEND.format(gate="short_context_recovery >= 0.0"), encoding="utf-8")
    out = herd("run", "extend.herd", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    gates = json.loads((artifact(folder, "extend.herd", "train.long.128") / "gates.json").read_text())
    assert gates["needle"]["lengths"] == [128]  # 64 skipped
    assert "needle: not measured at 64 tokens" in (folder / "runs" / "extend" / "logs" / "train.long.128.log").read_text()
    (folder / "short.herd").write_text(EXTEND.format(gate="needle >= 0.5").replace("64 -> 128", "64 -> 80"),
                                       encoding="utf-8")
    out = herd("run", "short.herd", cwd=folder)
    assert out.returncode == 1
    assert "the needle gate cannot be measured: the pass-key prompt takes" in out.stdout
    assert "hint: gate on short_context_recovery alone at these lengths, or extend to longer contexts" in out.stdout


LLAMA_32_1B = {  # config.json of meta-llama/Llama-3.2-1B (transformers 4.45 layout)
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32, "num_hidden_layers": 16,
    "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0, "tie_word_embeddings": True, "vocab_size": 128256, "torch_dtype": "bfloat16",
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "bos_token_id": 128000, "eos_token_id": 128001,
}


def test_import_blocks_prints_a_model_block_that_matches_the_folder(folder: Path, tmp_path: Path) -> None:
    """`herd import DIR --blocks` writes the blocks a `checkpoint` needs, from config.json and
    the tokenizer alone: pasted into a spec, they load the folder without a difference."""
    export_hf(folder / "herd_ckpt", tmp_path / "with_tok", tokenizer_dir=folder / "tok")
    blocks = herd("import", "with_tok", "--blocks", "--name", "small", cwd=tmp_path).stdout
    assert 'file           = "with_tok/tokenizer.json"' in blocks and "special_tokens = 16" in blocks
    (tmp_path / "ft.herd").write_text(blocks + """
dataset tasks { format = tasks  generate = tasks(kinds = [add], count = 100, seed = 0) }
posttrain chat { from = small_base  sft { data = tasks  steps = 2 steps  batch = 2 }  evals = [] }
run { device = cpu  precision = fp32 }
""", encoding="utf-8")
    assert herd("fmt", "--check", "ft.herd", cwd=tmp_path).returncode == 0
    out = herd("run", "ft.herd", cwd=tmp_path)
    assert out.returncode == 0, out.stdout

    big = tmp_path / "Llama-3.2-1B"  # config.json and the weights' header are all --blocks reads
    big.mkdir()
    (big / "config.json").write_text(json.dumps(LLAMA_32_1B), encoding="utf-8")
    _header_only(big / "model.safetensors", 16)
    blocks = herd("import", "Llama-3.2-1B", "--blocks", cwd=tmp_path).stdout
    assert "model llama_3_2_1b {" in blocks and "checkpoint llama_3_2_1b_base {" in blocks
    assert "theta = 500_000," in blocks and ("scaling = llama3(factor = 32, low_freq_factor = 1, "
                                             "high_freq_factor = 4, original_context = 8K)") in blocks
    (tmp_path / "l.herd").write_text(blocks, encoding="utf-8")
    _, plan = compile_file(tmp_path / "l.herd")
    assert plan.models["llama_3_2_1b"]["params"] == 1_235_814_400


def _header_only(path: Path, layers: int) -> None:
    """A safetensors file's header naming `layers` layers' tensors, without their bytes."""
    names = ["model.embed_tokens.weight", *(f"model.layers.{i}.input_layernorm.weight" for i in range(layers))]
    header = json.dumps({"__metadata__": {"format": "pt"},
                         **{n: {"dtype": "BF16", "shape": [2048], "data_offsets": [0, 4096]} for n in names}})
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode())


def test_import_blocks_refuses_a_config_with_another_layer_count_than_the_weights(tmp_path: Path) -> None:
    """--blocks compares config.json's layer count with the weight files' headers (a few KB,
    no torch): a config.json from another model is refused before a spec is written from it.
    A folder whose weights have not arrived yet gets its blocks and a comment saying so."""
    big = tmp_path / "Llama-3.2-1B"
    big.mkdir()
    (big / "config.json").write_text(json.dumps(LLAMA_32_1B), encoding="utf-8")
    out = herd("import", "Llama-3.2-1B", "--blocks", cwd=tmp_path)
    assert out.returncode == 0 and "# no weights in the folder yet" in out.stdout
    _header_only(big / "model.safetensors", 28)
    out = herd("import", "Llama-3.2-1B", "--blocks", cwd=tmp_path)
    assert out.returncode == 1 and not out.stdout
    assert ("config.json says num_hidden_layers = 16, but the weights hold 28 layers (layers 0 to 27)"
            in out.stderr) and "hint: the weights and config.json come from different models" in out.stderr
    (big / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    out = herd("import", "Llama-3.2-1B", "--blocks", cwd=tmp_path)
    assert out.returncode == 1 and "model.safetensors is not a readable safetensors file" in out.stderr
    assert "Traceback" not in out.stderr
    (big / "model.safetensors").write_bytes(b"version https://git-lfs.github.com/spec/v1\nsize 2471645608\n")
    out = herd("import", "Llama-3.2-1B", "--blocks", cwd=tmp_path)
    assert out.returncode == 1 and "is a git-lfs pointer, not the weights" in out.stderr
    assert "hint: fetch them (`git lfs pull`" in out.stderr


def test_import_blocks_refuses_output_options_and_a_folder_that_is_no_model(folder: Path) -> None:
    out = herd("import", "hf", "--blocks", "-o", "x", cwd=folder)
    assert out.returncode == 2 and "--blocks prints spec blocks and writes nothing" in out.stderr
    out = herd("import", "tok", "--blocks", cwd=folder)
    assert out.returncode == 1 and "is neither a Hugging Face model folder (no config.json)" in out.stderr
