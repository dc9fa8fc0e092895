"""Checkpoints: exact round trips, and a clear CheckpointError for every kind of damage."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from runtime.model import (
    CheckpointError,
    average_checkpoints,
    from_config,
    load_checkpoint,
    load_optimizer_state,
    save_checkpoint,
    save_optimizer_state,
)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def saved(tmp_path, tiny_config):
    model = from_config(tiny_config, seed=0)
    directory = save_checkpoint(model, tmp_path / "ckpt", step=42, tokenizer_id="tok-abc",
                                fingerprint="f00d", extra={"loss": 1.5})
    return model, directory


def test_round_trip_restores_weights_config_and_metadata(saved):
    model, directory = saved
    loaded, meta = load_checkpoint(directory)
    assert same_weights(model, loaded)
    assert loaded.config == model.config
    assert (meta["step"], meta["tokenizer_id"], meta["fingerprint"]) == (42, "tok-abc", "f00d")
    assert meta["extra"] == {"loss": 1.5} and meta["dtype"] == "float32"
    tokens = torch.randint(0, 256, (1, 9))
    torch.testing.assert_close(loaded(tokens), model(tokens), rtol=0, atol=0)


def test_bf16_weights_stay_bf16_and_tied_heads_are_stored_once(tmp_path, tiny_config):
    model = from_config({**tiny_config, "tied_embeddings": True}, seed=0, dtype=torch.bfloat16)
    loaded, meta = load_checkpoint(save_checkpoint(model, tmp_path / "c"))
    assert meta["dtype"] == "bfloat16" and loaded.tok_embeddings.weight.dtype == torch.bfloat16
    assert "output.weight" not in load_file(tmp_path / "c" / "model.safetensors")
    assert same_weights(model, loaded)


def test_saving_over_a_checkpoint_replaces_it_and_leaves_no_temporaries(saved, tiny_config):
    _, directory = saved
    other = from_config(tiny_config, seed=1)
    save_checkpoint(other, directory, step=43)
    loaded, meta = load_checkpoint(directory)
    assert meta["step"] == 43 and same_weights(other, loaded)
    assert [p.name for p in directory.parent.iterdir()] == ["ckpt"]


def test_a_failed_save_leaves_the_previous_checkpoint_intact(saved, monkeypatch):
    model, directory = saved
    import runtime.model.checkpoint as ck

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, directory, step=99)
    assert load_checkpoint(directory)[1]["step"] == 42
    assert [p.name for p in directory.parent.iterdir()] == ["ckpt"]


def test_truncated_weights_are_reported(saved):
    _, directory = saved
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(directory)


def test_a_flipped_byte_fails_the_checksum(saved):
    _, directory = saved
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-7] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(directory)


@pytest.mark.parametrize("name", ["model.safetensors", "meta.json"])
def test_missing_files_are_named(saved, name):
    _, directory = saved
    (directory / name).unlink()
    with pytest.raises(CheckpointError, match="missing|no meta.json"):
        load_checkpoint(directory)


def test_missing_directory_gives_a_hint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_bad_json_is_reported(saved):
    _, directory = saved
    (directory / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(directory)


def test_weights_of_another_shape_are_rejected_even_with_a_valid_checksum(saved, tiny_config):
    """A consistent-looking checkpoint whose config does not describe its tensors."""
    _, directory = saved
    meta = json.loads((directory / "meta.json").read_text())
    meta["model"]["ffn_dim"] = 192
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"wrong shapes: .*feed_forward"):
        load_checkpoint(directory)


def test_a_tensor_missing_from_the_weights_is_named(saved):
    from runtime.model.checkpoint import sha256_file

    _, directory = saved
    weights = directory / "model.safetensors"
    tensors = load_file(weights)
    del tensors["norm.weight"]
    save_file(tensors, weights)
    meta = json.loads((directory / "meta.json").read_text())
    meta["weights"].update(sha256=sha256_file(weights), bytes=weights.stat().st_size)
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="missing tensors: norm.weight"):
        load_checkpoint(directory)


def train_steps(model, optimizer, steps: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        tokens = torch.randint(0, 256, (2, 16), generator=g)
        loss = model(tokens, targets=tokens.roll(-1, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_resuming_from_model_and_optimizer_state_continues_exactly(tmp_path, tiny_config):
    model = from_config(tiny_config, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    train_steps(model, opt, 3, seed=1)
    save_checkpoint(model, tmp_path / "ckpt", step=3)
    save_optimizer_state(opt, tmp_path / "ckpt" / "optimizer.safetensors")
    expected = train_steps(model, opt, 3, seed=2)

    resumed, _ = load_checkpoint(tmp_path / "ckpt")
    opt2 = torch.optim.AdamW(resumed.parameters(), lr=5.0)  # hyper-parameters come from the file
    load_optimizer_state(opt2, tmp_path / "ckpt" / "optimizer.safetensors")
    assert opt2.param_groups[0]["betas"] == (0.9, 0.95) and opt2.param_groups[0]["lr"] == 1e-3
    assert train_steps(resumed, opt2, 3, seed=2) == expected


def test_optimizer_state_errors_are_clear(tmp_path, tiny_config):
    model = from_config(tiny_config, seed=0)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(CheckpointError, match="does not exist"):
        load_optimizer_state(opt, tmp_path / "none.safetensors")
    save_file({"x": torch.zeros(1)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not an optimizer state"):
        load_optimizer_state(opt, tmp_path / "plain.safetensors")


def test_averaging_is_the_exact_weighted_mean(tmp_path, tiny_config):
    models = [from_config(tiny_config, seed=s) for s in range(3)]
    dirs = [save_checkpoint(m, tmp_path / f"c{i}", step=10 * (i + 1)) for i, m in enumerate(models)]
    averaged, meta = load_checkpoint(average_checkpoints(dirs, tmp_path / "avg", weights=[1, 2, 1]))
    for name, tensor in averaged.state_dict().items():
        parts = [m.state_dict()[name].double() for m in models]
        expected = (parts[0] + 2 * parts[1] + parts[2]) / 4
        torch.testing.assert_close(tensor.double(), expected, rtol=0, atol=1e-7)
    assert meta["step"] == 30 and meta["extra"]["weights"] == [1.0, 2.0, 1.0]


def test_averaging_a_checkpoint_with_itself_changes_nothing(saved, tmp_path):
    model, directory = saved
    averaged, _ = load_checkpoint(average_checkpoints([directory, directory], tmp_path / "avg"))
    assert same_weights(model, averaged)


def test_averaging_different_shapes_is_refused(saved, tmp_path, tiny_config):
    _, directory = saved
    other = save_checkpoint(from_config({**tiny_config, "ffn_dim": 192}, seed=0), tmp_path / "o")
    with pytest.raises(CheckpointError, match="different model shape"):
        average_checkpoints([directory, other], tmp_path / "avg")


# -- what a save may replace, and what a load may read ---------------------------------


def test_a_save_replaces_an_older_checkpoint_or_an_empty_folder(tmp_path, tiny_config):
    model = from_config(tiny_config, seed=0)
    save_checkpoint(model, tmp_path / "ckpt", step=1)
    save_checkpoint(model, tmp_path / "ckpt", step=2)  # an older checkpoint: replaced
    assert load_checkpoint(tmp_path / "ckpt")[1]["step"] == 2
    (tmp_path / "empty").mkdir()
    save_checkpoint(model, tmp_path / "empty")
    assert (tmp_path / "empty" / "meta.json").is_file()


def test_a_save_never_deletes_a_folder_or_file_that_is_not_a_checkpoint(tmp_path, tiny_config):
    model = from_config(tiny_config, seed=0)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not a herd checkpoint"):
        save_checkpoint(model, tmp_path / "notes")
    assert (tmp_path / "notes" / "thesis.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("keep me too")
    with pytest.raises(CheckpointError, match="a file is in the way"):
        save_checkpoint(model, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep me too"


def test_a_model_on_the_meta_device_cannot_be_saved(tmp_path, tiny_config):
    with pytest.raises(CheckpointError, match="meta device"):
        save_checkpoint(from_config(tiny_config, device="meta"), tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_meta_json_cannot_point_at_weights_outside_the_checkpoint(saved, tmp_path, tiny_config):
    _, saved = saved
    other = save_checkpoint(from_config(tiny_config, seed=1), tmp_path / "other")
    meta = json.loads((saved / "meta.json").read_text())
    meta["weights"] = json.loads((other / "meta.json").read_text())["weights"]
    meta["weights"]["file"] = "../other/model.safetensors"
    (saved / "meta.json").write_text(json.dumps(meta))
    for verify in (True, False):
        with pytest.raises(CheckpointError, match="not a file name inside the checkpoint"):
            load_checkpoint(saved, verify=verify)


@pytest.mark.parametrize("value", ["four", None])
def test_a_hand_edited_config_with_a_non_number_is_a_checkpoint_error(saved, value):
    _, saved = saved
    meta = json.loads((saved / "meta.json").read_text())
    meta["model"]["heads"] = value
    (saved / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="whole numbers"):
        load_checkpoint(saved)


def test_integer_weights_and_non_float_dtypes_are_refused(tmp_path, saved, tiny_config):
    from runtime.model.checkpoint import write_checkpoint

    _, saved = saved
    state = load_file(saved / "model.safetensors")
    state["norm.weight"] = state["norm.weight"].to(torch.int32)
    write_checkpoint(state, tiny_config, tmp_path / "ints")
    with pytest.raises(CheckpointError, match=r"norm.weight \(int32\)"):
        load_checkpoint(tmp_path / "ints")
    with pytest.raises(CheckpointError, match="dtype must be"):
        load_checkpoint(saved, dtype=torch.int8)
    with pytest.raises(CheckpointError, match="dtype must be"):
        load_checkpoint(saved, dtype="bfloat16")  # a string is not a dtype


def test_the_same_weights_give_the_same_bytes_every_time(tmp_path, tiny_config):
    """A rebuilt artifact with unchanged content keeps its dependents cached, which needs
    byte-identical files. safetensors writes a metadata map in hash order (each map seeded
    anew, so two saves in one process differ too): a checkpoint carries one metadata key."""
    model = from_config(tiny_config, seed=0)
    files = {save_checkpoint(model, tmp_path / f"c{i}").joinpath("model.safetensors").read_bytes()
             for i in range(12)}
    assert len(files) == 1


@pytest.mark.parametrize("files, says", [
    ({"config.json": "{}"}, "it is a Hugging Face model folder: `herd import"),
    ({"tokenizer.model": "", "tokenizer.json": "{}"}, "it holds a tokenizer, not a model"),
    ({"manifest.json": "{}", "eval.json": "{}"}, "it is a store entry of another kind of job"),
    ({"notes.txt": ""}, "made by something else or damaged"),
])
def test_a_folder_that_is_no_checkpoint_says_what_it_is(tmp_path, files, says):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(CheckpointError, match="has no meta.json") as info:
        load_checkpoint(tmp_path)
    assert says in str(info.value)
