"""A Hugging Face folder whose weight files herd cannot read (a damaged index, pickle only, a
missing shard) is refused with the file named and a hint, by `herd import DIR -o OUT` and
`herd import DIR --blocks` alike: never a traceback, never blocks that pass it off as a folder
whose weights are "not there yet". A file cut short is refused by `-o` and warned of by
`--blocks`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from herdlang.cli import main
from runtime.model import CheckpointError, export_hf, from_config, save_checkpoint
from runtime.model.hf_folder import header_names, incomplete, weight_files

SMALL = {"name": "small", "vocab_size": 320, "dim": 32, "layers": 2, "heads": 2, "kv_heads": 1,
         "head_dim": 16, "ffn_dim": 64, "norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
         "tied_embeddings": False, "init_std": 0.02, "max_context": 64, "document_mask": True}
INDEX = "model.safetensors.index.json"
INDEX_HINT = "hint: the index is written by transformers' save_pretrained"


def herd(*args: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the command line, run in this process."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A healthy Hugging Face folder (read-only for the tests: each copies what it damages)."""
    root = tmp_path_factory.mktemp("hf")
    return export_hf(save_checkpoint(from_config(SMALL, seed=0), root / "ckpt"), root / "hf")


def _config_only(hf: Path, where: Path) -> Path:
    """A folder with the model's config.json and no weights."""
    where.mkdir()
    shutil.copy(hf / "config.json", where / "config.json")
    return where


def _both_refuse(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *says: str) -> None:
    """`import -o` and `import --blocks` exit 1 saying each of `says`, print no blocks and
    write nothing."""
    for command in (["import", folder, "-o", tmp_path / "out"], ["import", folder, "--blocks"]):
        code, out, err = herd(*command, capsys=capsys)
        assert code == 1, (command, err)
        assert err.startswith("herd: error: ") and "hint: " in err, err
        for text in says:
            assert text in err, (command, err)
        assert out == "" and "no weights in the folder yet" not in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, why", [
    (b"\xff", "'utf-8' codec can't decode byte 0xff"),
    (("[" * 100_000 + "]" * 100_000).encode(), "nested too deeply to read"),
    (b'{"weight_map": ', "Expecting value"),
    (b"[1, 2]", "it holds a JSON list, not an object"),
    (b'{"metadata": {}}', "it has no weight_map"),
])
def test_a_damaged_index_is_named_with_a_hint_by_import_and_blocks(
        hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str) -> None:
    folder = _config_only(hf, tmp_path / "hv")
    (folder / INDEX).write_bytes(content)
    _both_refuse(folder, tmp_path, capsys, f"{folder / INDEX} is not a valid safetensors index (", why,
                 INDEX_HINT)
    with pytest.raises(CheckpointError, match="is not a valid safetensors index"):
        weight_files(folder)  # what a spec's `checkpoint` block reads it with, too


def test_an_index_listing_a_missing_shard_is_refused_by_blocks_too(
        hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _config_only(hf, tmp_path / "hv")
    (folder / INDEX).write_text(json.dumps({"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}))
    _both_refuse(folder, tmp_path, capsys, f"{folder / INDEX} lists model-00001-of-00002.safetensors, which is "
                 "missing", "hint: the download is incomplete")


def test_pickle_only_weights_are_refused_by_blocks_as_by_import(
        hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _config_only(hf, tmp_path / "pk")
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    _both_refuse(folder, tmp_path, capsys, f"{folder} has only pickle weights (.bin/.pth)",
                 "hint: convert with transformers")


@pytest.mark.parametrize("change", ["truncate", "append"])
def test_a_weight_file_cut_short_or_grown_is_warned_of_by_blocks_and_refused_by_import(
        hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str) -> None:
    """--blocks reads headers alone (a header without its tensors stands in for weights not
    downloaded yet), so a file whose size is not what its header says is a warning there,
    naming the file and what `import -o` does with it, and an error for `import -o`."""
    folder = _config_only(hf, tmp_path / "tr")
    data = (hf / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2] if change == "truncate" else data + b"xx")
    what = "is cut short" if change == "truncate" else "is longer than its header describes"
    code, out, err = herd("import", folder, "--blocks", capsys=capsys)
    assert code == 0 and "checkpoint tr_base {" in out and "no weights in the folder yet" not in out
    assert err.startswith(f"warning: {folder / 'model.safetensors'} {what}: ")
    assert "`herd import -o` and a spec's checkpoint block refuse it\nhint: the download or copy was cut short" in err
    code, out, err = herd("import", folder, "-o", tmp_path / "out", capsys=capsys)
    assert code == 1 and f"{folder / 'model.safetensors'} is not a readable safetensors file" in err
    assert not (tmp_path / "out").exists()
    assert incomplete(folder / "model.safetensors").startswith(f"{folder / 'model.safetensors'} {what}: ")


def test_a_folder_without_weights_still_gets_its_blocks_and_a_healthy_one_is_described(
        hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _config_only(hf, tmp_path / "cfg")
    code, out, err = herd("import", folder, "--blocks", capsys=capsys)
    assert code == 0 and "# no weights in the folder yet" in out and "model cfg {" in out
    code, out, err = herd("import", hf, "--blocks", capsys=capsys)
    assert code == 0 and "no weights in the folder yet" not in out and "checkpoint hf_base {" in out
    assert err == ""
    assert incomplete(hf / "model.safetensors") is None  # a healthy file is as long as its header says
    names = header_names(hf / "model.safetensors")
    assert "model.layers.1.mlp.up_proj.weight" in names and "__metadata__" not in names
