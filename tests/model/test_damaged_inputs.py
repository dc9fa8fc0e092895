"""A damaged checkpoint, Hugging Face folder or silly sampling option is a clear message, never
a traceback, a hang or lost data.

Each case names the file (meta.json, config.json, tokenizer.json) and the key that is wrong,
exits 1 (a bad input) or 2 (an output that may not be written) and writes nothing:
NaN weights, tiny temperatures, values no model can have, a billion layers, JSON nested
deeper than Python's parser goes, and an output folder inside the input.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from herdlang.cli import main
from runtime.data.tokenizer import save_tokenizer, train_bpe
from runtime.model import (
    CheckpointError,
    export_hf,
    from_config,
    import_hf,
    load_checkpoint,
    save_checkpoint,
)
from runtime.model.checkpoint import average_checkpoints, expected_shapes, sha256_file
from runtime.model.generation import NonFiniteOutputs, sample_next
from runtime.model.hf import read_hf
from runtime.model.llama import Llama
from runtime.model.spec_blocks import describe_folder

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"name": "small", "vocab_size": 320, "dim": 32, "layers": 2, "heads": 2, "kv_heads": 1,
         "head_dim": 16, "ffn_dim": 64, "norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
         "tied_embeddings": False, "init_std": 0.02, "max_context": 64, "document_mask": True}
DEEP = "[" * 100_000 + "]" * 100_000


def herd(*args: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the command line, run in this process."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


def herd_process(*args: object) -> subprocess.CompletedProcess[str]:
    """The command line in its own process, for cases that used to hang: a timeout fails the
    test instead of hanging the suite."""
    out = subprocess.run([sys.executable, "-m", "herdlang.cli", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tokenizer, a healthy checkpoint, one with NaN weights, and the healthy one's
    Hugging Face export (read-only for the tests: each copies what it damages)."""
    root = tmp_path_factory.mktemp("damaged")
    (root / "tok").mkdir()
    _, ranks = train_bpe(["def add(a, b):\n    return a + b\n", "hello world 123"] * 20, 300, "llama3")
    save_tokenizer(root / "tok", ranks, "llama3", 16)
    model = from_config(SMALL, seed=0)
    ckpt = save_checkpoint(model, root / "ckpt")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))  # what training at lr 1e4 leaves behind
    nan = save_checkpoint(model, root / "nan")
    return {"tok": root / "tok", "ckpt": ckpt, "nan": nan, "hf": export_hf(ckpt, root / "hf")}


def _copy(source: Path, where: Path) -> Path:
    shutil.copytree(source, where)
    return where


def _edit_meta(ckpt: Path, **model: Any) -> Path:
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["model"].update(model)
    (ckpt / "meta.json").write_text(json.dumps(meta))  # NaN is written as NaN, which json reads
    return ckpt


def _edit_config(folder: Path, **changes: Any) -> Path:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


# -- sampling --------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"temperature": 1e-300}, {"temperature": 1e-45}, {"temperature": 1e-39},
                                      {"top_p": 1e-300}, {"temperature": 1e-300, "top_p": 1e-300, "top_k": 2}])
def test_tiny_temperatures_and_top_p_pick_the_best_token(settings: dict[str, float]) -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.5], [9.0, -2.0, 8.9, 0.0]])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert sample_next(logits, generator=g, **settings).tolist() == [1, 0]


def test_a_huge_temperature_samples_evenly_instead_of_failing() -> None:
    logits = torch.tensor([[0.0, 30.0, -30.0]])
    g = torch.Generator().manual_seed(0)
    seen = {int(sample_next(logits, temperature=1e30, generator=g)) for _ in range(60)}
    assert seen == {0, 1, 2}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_logits_that_are_not_finite_are_a_checkpoint_error(bad: float, temperature: float) -> None:
    logits = torch.tensor([[0.0, bad, 1.0]])
    with pytest.raises(NonFiniteOutputs, match=r"not finite \(NaN/inf\).*damaged or training diverged\nhint:"):
        sample_next(logits, temperature=temperature)
    assert issubclass(NonFiniteOutputs, CheckpointError)  # what herd generate and chat report


@pytest.mark.parametrize("temperature", ["0", "0.8"])
def test_generate_on_nan_weights_says_the_model_is_damaged_and_prints_no_text(
        made: dict[str, Path], capsys: pytest.CaptureFixture[str], temperature: str) -> None:
    code, out, err = herd("generate", made["nan"], "--prompt", "def", "--tokenizer", made["tok"],
                          "--temperature", temperature, "--max-new-tokens", "4", capsys=capsys)
    assert code == 1
    assert f"{made['nan']}: the model's outputs are not finite (NaN/inf)" in err and "hint:" in err
    assert out == ""  # no NUL bytes from argmax over NaNs


@pytest.mark.parametrize("option", [["--temperature", "1e-300"], ["--temperature", "1e-45"],
                                    ["--top-p", "1e-300"]])
def test_generate_with_a_tiny_temperature_or_top_p_is_greedy(
        made: dict[str, Path], capsys: pytest.CaptureFixture[str], option: list[str]) -> None:
    common = ["generate", made["ckpt"], "--prompt", "def", "--tokenizer", made["tok"], "--max-new-tokens", "6"]
    code, greedy, _ = herd(*common, "--temperature", "0", capsys=capsys)
    assert code == 0
    code, out, err = herd(*common, *option, capsys=capsys)
    assert code == 0, err
    assert out == greedy  # what sampling tends to as either falls (top-p keeps the best token)


# -- meta.json values no model can have ------------------------------------------------


@pytest.mark.parametrize("field, value, says", [
    ("rope_theta", float("nan"), "model.rope_theta must be a finite number above 0, got nan"),
    ("rope_theta", -5.0, "model.rope_theta must be a finite number above 0, got -5.0"),
    ("norm_eps", -1.0, "model.norm_eps must be a finite number above 0, got -1.0"),
    ("norm_eps", 0, "model.norm_eps must be a finite number above 0, got 0"),
    ("layers", "four", 'model.layers must be a whole number above 0 (sizes and counts are whole numbers), got "four"'),
    ("layers", 2.5, "model.layers must be a whole number above 0"),
    ("dim", -32, "model.dim must be a whole number above 0"),
    ("max_context", 0, "model.max_context must be a whole number above 0"),
    ("rope_scaling", [1, 2], "model.rope_scaling must be null or an object, got list"),
])
def test_meta_json_values_no_model_can_have_are_refused_by_name(
        made: dict[str, Path], tmp_path: Path, field: str, value: Any, says: str) -> None:
    ckpt = _edit_meta(_copy(made["ckpt"], tmp_path / "ckpt"), **{field: value})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt)
    assert str(info.value).startswith(f"{ckpt / 'meta.json'}: {says}")
    assert "\nhint: herd writes this file itself" in str(info.value)


def test_generate_refuses_a_nan_rope_theta_before_sampling(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _edit_meta(_copy(made["ckpt"], tmp_path / "ckpt"), rope_theta=math.nan)
    code, out, err = herd("generate", ckpt, "--prompt", "def", "--tokenizer", made["tok"], capsys=capsys)
    assert code == 1 and "meta.json: model.rope_theta must be a finite number above 0" in err and out == ""


def test_blocks_refuses_a_meta_json_whose_layers_is_not_a_number(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _edit_meta(_copy(made["ckpt"], tmp_path / "ckpt"), layers="four")
    code, out, err = herd("import", ckpt, "--blocks", capsys=capsys)
    assert code == 1 and out == ""
    assert 'meta.json: model.layers must be a whole number above 0 (sizes and counts are whole numbers), got "four"' in err


# -- a billion layers fails fast -------------------------------------------------------


def test_expected_shapes_are_those_of_the_model_without_building_it() -> None:
    for config in (SMALL, {**SMALL, "tied_embeddings": True}, {**SMALL, "kv_heads": 2, "head_dim": 8}):
        model = Llama.from_config(config, device="meta")
        assert expected_shapes(config) == {k: v.shape for k, v in model.state_dict().items()}
        assert list(expected_shapes(config)) == list(model.state_dict())


@pytest.fixture
def huge(made: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """A checkpoint whose meta.json, and a Hugging Face folder whose config.json, claim a
    billion layers over weights that hold two."""
    ckpt = _edit_meta(_copy(made["ckpt"], tmp_path / "ckpt"), layers=1_000_000_000)
    hf = _edit_config(_copy(made["hf"], tmp_path / "hf"), num_hidden_layers=1_000_000_000)
    return {"ckpt": ckpt, "hf": hf}


def test_a_billion_layers_in_meta_json_fails_at_once_in_python(huge: dict[str, Path], made: dict[str, Path],
                                                               tmp_path: Path) -> None:
    start = time.monotonic()
    for action in (lambda: load_checkpoint(huge["ckpt"]),
                   lambda: average_checkpoints([made["ckpt"], huge["ckpt"]], tmp_path / "avg"),
                   lambda: read_hf(huge["hf"]),
                   lambda: import_hf(huge["hf"], tmp_path / "imported")):
        with pytest.raises(CheckpointError, match=r"layers = 1,000,000,000, but the weights hold 2 layers "
                                                  r"\(layers.0 to layers.1\)"):
            action()
    assert time.monotonic() - start < 20
    assert not (tmp_path / "avg").exists() and not (tmp_path / "imported").exists()


def test_a_billion_layers_fails_at_once_on_the_command_line(huge: dict[str, Path], made: dict[str, Path],
                                                            tmp_path: Path) -> None:
    for args, file in ((["generate", huge["ckpt"], "--prompt", "hi", "--tokenizer", made["tok"]], "meta.json"),
                       (["export", huge["ckpt"], "-o", tmp_path / "out"], "meta.json"),
                       (["import", huge["hf"], "-o", tmp_path / "out"], "config.json")):
        out = herd_process(*args)
        assert out.returncode == 1, out.stderr
        key = "num_hidden_layers" if file == "config.json" else "layers"
        assert f"{file} says {key} = 1,000,000,000, but the weights hold 2 layers" in out.stderr
        assert f"hint: the weights and {file} come from different models" in out.stderr
    assert not (tmp_path / "out").exists()


# -- a damaged Hugging Face config.json ------------------------------------------------


@pytest.mark.parametrize("changes, says", [
    ({"rope_scaling": [1, 2]}, "config.json: rope_scaling must be an object or null, got list"),
    ({"rope_parameters": "x"}, "config.json: rope_parameters must be an object or null, got str"),
    ({"num_hidden_layers": 4.5}, "config.json: num_hidden_layers must be a whole number above 0"),
    ({"num_hidden_layers": "2"}, 'config.json: num_hidden_layers must be a whole number above 0 (sizes and '
                                 'counts are whole numbers), got "2"'),
    ({"hidden_size": -32}, "config.json: hidden_size must be a whole number above 0"),
    ({"rope_theta": math.nan}, "config.json: rope_theta must be a finite number above 0, got nan"),
    ({"rms_norm_eps": 0}, "config.json: rms_norm_eps must be a finite number above 0, got 0"),
    ({"tie_word_embeddings": "no"}, 'config.json: tie_word_embeddings must be true or false, got "no"'),
    ({"eos_token_id": "x"}, "config.json: eos_token_id must be a token id or a list of them"),
    ({"num_key_value_heads": 3}, "config.json: model config: num_attention_heads (2) must be a multiple of "
                                 "num_key_value_heads (3)"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": "8K"}},
     "config.json: rope_scaling.original_max_position_embeddings must be a whole number above 0"),
])
def test_config_json_values_are_checked_by_key_on_import_blocks_and_load(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        changes: dict[str, Any], says: str) -> None:
    folder = _edit_config(_copy(made["hf"], tmp_path / "hf"), **changes)
    with pytest.raises(CheckpointError, match="hint: config.json is written by transformers") as info:
        read_hf(folder)  # what a spec's `checkpoint` block loads with
    assert f"{folder}: {says}" in str(info.value)
    for args in (["import", folder, "-o", tmp_path / "out"], ["import", folder, "--blocks"]):
        code, out, err = herd(*args, capsys=capsys)
        assert code == 1 and out == "" and f"{folder}: {says}" in err
    assert not (tmp_path / "out").exists()


def test_a_config_json_that_is_not_utf8_is_refused_by_import_and_blocks(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(made["hf"], tmp_path / "hf")
    (folder / "config.json").write_bytes(b"\xff\xfe")
    for args in (["import", folder, "-o", tmp_path / "out"], ["import", folder, "--blocks"]):
        code, out, err = herd(*args, capsys=capsys)
        assert code == 1 and f"{folder / 'config.json'} is not valid JSON ('utf-8' codec" in err
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        read_hf(folder)
    assert not (tmp_path / "out").exists()


def test_a_shape_mismatch_in_a_hugging_face_folder_blames_config_json(made: dict[str, Path], tmp_path: Path) -> None:
    folder = _edit_config(_copy(made["hf"], tmp_path / "hf"), intermediate_size=96)
    with pytest.raises(CheckpointError, match="wrong shapes") as info:
        import_hf(folder, tmp_path / "out")
    assert "hint: the weights and config.json come from different models" in str(info.value)
    assert "meta.json" not in str(info.value)


# -- JSON nested deeper than Python's parser goes --------------------------------------


def test_deeply_nested_json_is_reported_as_invalid_wherever_it_is_read(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _copy(made["ckpt"], tmp_path / "ckpt")
    (ckpt / "meta.json").write_text(DEEP)
    for args in (["generate", ckpt, "--prompt", "hi", "--tokenizer", made["tok"]],
                 ["export", ckpt, "-o", tmp_path / "out"], ["import", ckpt, "--blocks"]):
        code, _, err = herd(*args, capsys=capsys)
        assert code == 1 and f"{ckpt / 'meta.json'} is not valid JSON (nested too deeply to read)" in err

    hf = _copy(made["hf"], tmp_path / "hf")
    (hf / "config.json").write_text(DEEP)
    for args in (["import", hf, "-o", tmp_path / "out"], ["import", hf, "--blocks"]):
        code, _, err = herd(*args, capsys=capsys)
        assert code == 1 and f"{hf / 'config.json'} is not valid JSON (nested too deeply to read)" in err

    tok = _copy(made["hf"], tmp_path / "tok")
    (tok / "tokenizer.json").write_text(DEEP)
    for args in (["import", tok, "-o", tmp_path / "out"], ["import", tok, "--blocks"]):
        code, _, err = herd(*args, capsys=capsys)
        assert code == 1 and f"{tok / 'tokenizer.json'}: not valid JSON (nested too deeply to read)" in err
    assert not (tmp_path / "out").exists()


# -- where the output may go -----------------------------------------------------------


def test_an_output_inside_the_input_is_refused_even_when_it_does_not_exist_yet(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hf, ckpt = _copy(made["hf"], tmp_path / "hf"), _copy(made["ckpt"], tmp_path / "ckpt")
    before = {p: sorted(q.name for q in p.iterdir()) for p in (hf, ckpt)}
    for args in (["import", hf, "-o", hf / "sub"], ["import", hf, "-o", hf / "sub" / "deeper"],
                 ["export", ckpt, "-o", ckpt / "sub"], ["export", ckpt, "-o", tmp_path / "x" / ".." / "ckpt" / "y"]):
        code, _, err = herd(*args, capsys=capsys)
        assert code == 2 and "is inside the input" in err and "hint: choose an output outside" in err
    link = tmp_path / "link"
    link.symlink_to(ckpt)  # the same folder by another name
    code, _, err = herd("export", link, "-o", ckpt / "sub", capsys=capsys)
    assert code == 2 and "is inside the input" in err
    assert {p: sorted(q.name for q in p.iterdir()) for p in (hf, ckpt)} == before


# -- what a folder that is no checkpoint is called --------------------------------------


def test_a_folder_without_a_checkpoint_says_what_it_holds_not_that_a_save_was_cut_short(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "other" / "deep").mkdir(parents=True)
    code, _, err = herd("export", tmp_path / "empty", "-o", tmp_path / "out", capsys=capsys)
    assert code == 1 and "has no meta.json: the folder is empty" in err and "interrupted" not in err
    code, _, err = herd("export", tmp_path / "other", "-o", tmp_path / "out", capsys=capsys)
    assert code == 1 and "has no meta.json and no model.safetensors (it holds deep/)" in err
    assert "interrupted" not in err and "hint: " in err
    code, _, err = herd("export", tmp_path / "missing", "-o", tmp_path / "out", capsys=capsys)
    assert code == 1 and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_weights_without_meta_json_still_get_the_interrupted_save_hint(made: dict[str, Path], tmp_path: Path) -> None:
    ckpt = _copy(made["ckpt"], tmp_path / "ckpt")
    (ckpt / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="an interrupted save never produces a partial directory"):
        load_checkpoint(ckpt)


def test_a_healthy_checkpoint_and_folder_still_load_and_describe(made: dict[str, Path], tmp_path: Path) -> None:
    model, _ = load_checkpoint(made["ckpt"])
    tensors, config = read_hf(made["hf"])
    assert config["layers"] == 2 and set(tensors) == set(model.state_dict())
    assert "layers    = 2" in describe_folder(made["hf"]) and "layers    = 2" in describe_folder(made["ckpt"])
    # a file rewritten with other values of the right types loads as before
    ckpt = _copy(made["ckpt"], tmp_path / "ckpt")
    weights = load_file(ckpt / "model.safetensors")
    save_file(weights, ckpt / "model.safetensors")
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["weights"].update(sha256=sha256_file(ckpt / "model.safetensors"),
                           bytes=(ckpt / "model.safetensors").stat().st_size)
    meta["model"].update(rope_theta=500000, norm_eps=1e-6)
    (ckpt / "meta.json").write_text(json.dumps(meta))
    assert load_checkpoint(ckpt)[0].args.rope_theta == 500000


@pytest.mark.parametrize("meta", ['{"pattern": "llama3"', '{"pattern": 3, "special_tokens": {}}',
                                  '{"special_tokens": {"<|x|>": 5}}', "[" * 100_000 + "]" * 100_000])
def test_a_damaged_tokenizer_artifact_is_named_not_a_traceback(tmp_path, meta):
    from runtime.data.tokenizer import load_tokenizer
    from runtime.jobs.context import JobFailed

    (tmp_path / "tokenizer.json").write_text(meta)
    with pytest.raises(JobFailed, match=r"tokenizer.json (lacks|is unreadable).*hint: the tokenizer artifact is damaged"):
        load_tokenizer(tmp_path)
