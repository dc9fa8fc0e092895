"""`herd import` brings the model folder's tokenizer along, so `herd generate CKPT` needs nothing else.

The tokenizer is Meta's `original/tokenizer.model` (a tiktoken rank file) or else the Hugging
Face `tokenizer.json`; it becomes a herd tokenizer artifact inside the checkpoint, its
checksums recorded in meta.json. A folder without one imports the weights alone (and the CLI
says so); a tokenizer that does not fit the model, or that herd cannot serve, stops the import
before anything is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.data.tokenizer import (
    checkpoint_tokenizer,
    load_ranks,
    load_tokenizer,
    save_tokenizer,
    train_bpe,
)
from runtime.jobs.context import JobFailed
from runtime.model import (
    CheckpointError,
    export_hf,
    from_config,
    import_hf,
    load_checkpoint,
    save_checkpoint,
)
from runtime.model.checkpoint import read_meta, sha256_file

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"name": "small", "vocab_size": 320, "dim": 32, "layers": 1, "heads": 2, "kv_heads": 1,
         "head_dim": 16, "ffn_dim": 64, "norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
         "tied_embeddings": False, "init_std": 0.02, "max_context": 64, "document_mask": True}
WEIGHTS_ONLY = {"meta.json", "model.safetensors"}
WITH_TOKENIZER = WEIGHTS_ONLY | {"tokenizer.json", "tokenizer.model"}


def herd(*args: object) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "herdlang.cli", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A herd tokenizer (300 ranks + 16 special tokens), a model with a vocabulary of 320
    (padded), and their Hugging Face export; and the export of a model of vocabulary 64."""
    root = tmp_path_factory.mktemp("import-tok")
    (root / "tok").mkdir()
    _, ranks = train_bpe(["def add(a, b):\n    return a + b\n", "héllo wörld 123 日本語"] * 20, 300, "llama3")
    save_tokenizer(root / "tok", ranks, "llama3", 16)
    ckpt = save_checkpoint(from_config(SMALL, seed=0), root / "ckpt")
    small = save_checkpoint(from_config({**SMALL, "vocab_size": 64}, seed=0), root / "small-ckpt")
    return {"tok": root / "tok", "ckpt": ckpt, "hf": export_hf(ckpt, root / "hf", tokenizer_dir=root / "tok"),
            "small": export_hf(small, root / "small")}


def _model_folder(made: dict[str, Path], where: Path, *tokenizer: str, of: str = "hf") -> Path:
    """A copy of an exported model folder with only the named tokenizer files of `made["hf"]`."""
    where.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(made[of] / name, where / name)
    for name in tokenizer:
        target = where / name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = made["tok"] / "tokenizer.model" if name == "original/tokenizer.model" else made["hf"] / name
        shutil.copyfile(source, target)
    return where


def test_import_brings_the_tokenizer_and_generate_and_export_use_it(made, tmp_path: Path) -> None:
    ckpt = tmp_path / "imported"
    out = herd("import", made["hf"], "-o", ckpt)
    assert out.returncode == 0, out.stderr
    assert "(tokenizer from tokenizer.json)" in out.stdout and out.stderr == ""
    assert {p.name for p in ckpt.iterdir()} == WITH_TOKENIZER
    assert (ckpt / "tokenizer.model").read_bytes() == (made["tok"] / "tokenizer.model").read_bytes()
    ours, theirs = load_tokenizer(made["tok"]), load_tokenizer(ckpt)
    assert theirs.special_tokens == ours.special_tokens and theirs.n_vocab == 316
    meta = read_meta(ckpt)
    recorded = meta["extra"]["tokenizer"]
    assert recorded["from"] == "tokenizer.json" and meta["tokenizer_id"] is None
    assert recorded["files"]["tokenizer.model"]["sha256"] == sha256_file(ckpt / "tokenizer.model")
    load_checkpoint(ckpt)  # the weights' checksum is untouched
    assert checkpoint_tokenizer(ckpt, meta) == ckpt

    out = herd("generate", ckpt, "--prompt", "hi", "--max-new-tokens", "3")
    assert out.returncode == 0, out.stderr
    assert "error" not in out.stderr

    out = herd("export", ckpt, "-o", tmp_path / "again")
    assert out.returncode == 0, out.stderr
    assert f"tokenizer from {ckpt}" in out.stdout.replace("\n", "")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert json.loads((tmp_path / "again" / name).read_text()) == json.loads((made["hf"] / name).read_text())


def test_metas_rank_file_gets_the_special_tokens_the_model_has_room_for(made, tmp_path: Path) -> None:
    folder = _model_folder(made, tmp_path / "meta-layout", "original/tokenizer.model")
    ckpt = import_hf(folder, tmp_path / "a")
    tok = load_tokenizer(ckpt)
    assert read_meta(ckpt)["extra"]["tokenizer"]["from"] == "original/tokenizer.model"
    assert tok.n_vocab == 320 and tok.bos_id == 300 and tok.eot_id == 309  # 20 special tokens
    assert load_ranks(ckpt / "tokenizer.model") == load_ranks(made["tok"] / "tokenizer.model")


def test_tokenizer_json_comes_first_and_the_rank_file_stands_in_when_it_cannot_be_served(
        made, tmp_path: Path) -> None:
    """tokenizer.json keeps the file's special-token names (Llama 3.1's <|eom_id|>, ...),
    which Meta's rank file does not carry; a tokenizer.json herd cannot serve gives way."""
    folder = _model_folder(made, tmp_path / "both", "original/tokenizer.model")
    shutil.copyfile(made["hf"] / "tokenizer.json", folder / "tokenizer.json")
    assert read_meta(import_hf(folder, tmp_path / "b"))["extra"]["tokenizer"]["from"] == "tokenizer.json"
    (folder / "tokenizer.json").write_text('{"model": {"type": "Unigram"}}')
    assert read_meta(import_hf(folder, tmp_path / "c"))["extra"]["tokenizer"]["from"] == "original/tokenizer.model"


def test_a_folder_without_a_tokenizer_imports_the_weights_and_says_so(made, tmp_path: Path) -> None:
    folder = _model_folder(made, tmp_path / "bare")
    out = herd("import", folder, "-o", tmp_path / "a")
    assert out.returncode == 0, out.stderr
    assert "weights only" in out.stdout
    [note] = out.stderr.splitlines()
    assert note.startswith("note: no tokenizer imported") and "tokenizer.json or original/tokenizer.model" in note
    assert "hint: pass --tokenizer DIR to herd generate and herd chat" in note
    assert {p.name for p in (tmp_path / "a").iterdir()} == WEIGHTS_ONLY
    out = herd("import", made["hf"], "-o", tmp_path / "b", "--no-tokenizer")
    assert out.returncode == 0 and "(--no-tokenizer)" in out.stderr
    assert {p.name for p in (tmp_path / "b").iterdir()} == WEIGHTS_ONLY


def test_a_tokenizer_that_does_not_fit_the_vocabulary_stops_the_import(made, tmp_path: Path) -> None:
    folder = _model_folder(made, tmp_path / "mismatch", "tokenizer.json", of="small")
    out = herd("import", folder, "-o", tmp_path / "out")
    assert out.returncode == 1
    assert ("316 in all, but config.json gives the model a vocabulary of 64: it is not this "
            "model's tokenizer") in out.stderr
    assert "hint: pass --no-tokenizer" in out.stderr
    assert not (tmp_path / "out").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(CheckpointError, match="vocabulary of 64"):
        import_hf(folder, mine, force=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    # more room than padding explains: not this model's tokenizer either
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 316 + 128}))
    with pytest.raises(CheckpointError, match="vocabulary of 444"):
        import_hf(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_herd_cannot_serve_stops_the_import_unless_left_out(made, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    folder = _model_folder(made, tmp_path / "unigram")
    Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0, False)).save(str(folder / "tokenizer.json"))
    with pytest.raises(CheckpointError) as info:
        import_hf(folder, tmp_path / "out")
    assert "not a byte-level BPE (model type 'Unigram')" in str(info.value)
    assert "hint: pass --no-tokenizer" in str(info.value)
    assert not (tmp_path / "out").exists()
    ckpt = import_hf(folder, tmp_path / "out", tokenizer=False)
    assert {p.name for p in ckpt.iterdir()} == WEIGHTS_ONLY


def test_a_changed_tokenizer_in_an_imported_checkpoint_is_noticed(made, tmp_path: Path) -> None:
    ckpt = import_hf(made["hf"], tmp_path / "ckpt")
    meta = json.loads((ckpt / "tokenizer.json").read_text())
    (ckpt / "tokenizer.json").write_text(json.dumps({**meta, "pattern_name": "gpt2"}))
    with pytest.raises(JobFailed, match="tokenizer.json has changed: it fails the sha256 its checkpoint's meta.json records"):
        checkpoint_tokenizer(ckpt, read_meta(ckpt))
    (ckpt / "tokenizer.json").unlink()
    (ckpt / "tokenizer.model").unlink()
    assert checkpoint_tokenizer(ckpt, read_meta(ckpt)) is None  # then none is found, as before


def test_a_weights_only_import_never_keeps_an_older_tokenizer(made, tmp_path: Path) -> None:
    ckpt = import_hf(made["hf"], tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    with pytest.raises(CheckpointError, match="is in the way: this import brings no tokenizer"):
        import_hf(_model_folder(made, tmp_path / "bare"), ckpt, force=True)
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before
    import_hf(made["hf"], ckpt, force=True)  # with its tokenizer, the files are replaced
    assert {p.name for p in ckpt.iterdir()} == WITH_TOKENIZER
