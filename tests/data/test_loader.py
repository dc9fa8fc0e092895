"""PackedLoader: packing with document ids, masking, mixing by weight, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.data.loader import IGNORE, PackedLoader
from runtime.data.token_shards import FORMAT
from runtime.jobs.context import JobFailed

EOS = 0


def make_tokens(directory: Path, train: list[list[int]], val: list[list[int]] | None = None,
                seed: int | None = None) -> Path:
    """A tokens artifact in the data.tokenize format, from explicit documents (EOS appended);
    `seed` is the data stage's, as data.tokenize records it (None: not recorded)."""
    directory.mkdir(parents=True)
    meta = {"format": FORMAT, "dtype": "uint32", "eos_id": EOS, "bos_id": 1, "n_vocab": 1 << 20,
            "splits": {}}
    if seed is not None:
        meta["seed"] = seed
    for split, docs in (("train", train), ("val", val or [])):
        arrays = [np.asarray(d + [EOS], dtype=np.uint32) for d in docs]
        index = np.r_[0, np.cumsum([len(a) for a in arrays])].astype(np.int64)
        np.save(directory / f"part-00000.{split}.tokens.npy",
                np.concatenate(arrays) if arrays else np.empty(0, np.uint32))
        np.save(directory / f"part-00000.{split}.index.npy", index)
        meta["splits"][split] = {"docs": len(docs), "tokens": int(index[-1]), "shards": [
            {"tokens": f"part-00000.{split}.tokens.npy", "index": f"part-00000.{split}.index.npy"}]}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def docs_of(source: int, n: int, length: int) -> list[list[int]]:
    """Documents whose tokens encode (source, doc, position) so tests can trace them."""
    return [[source * 1_000_000 + d * 1000 + p + 1 for p in range(length + d % 7)] for d in range(n)]


@pytest.fixture
def two_sources(tmp_path: Path) -> dict[str, Path]:
    return {"web": make_tokens(tmp_path / "web", docs_of(1, 50, 30), docs_of(1, 3, 10)),
            "code": make_tokens(tmp_path / "code", docs_of(2, 40, 20), docs_of(2, 2, 10))}


def take(loader: PackedLoader, n: int) -> list:
    return [next(loader) for _ in range(n)]


def same(a, b) -> bool:
    return all(torch.equal(x.tokens, y.tokens) and torch.equal(x.targets, y.targets)
               and torch.equal(x.doc_ids, y.doc_ids) for x, y in zip(a, b, strict=True))


def test_resuming_from_a_saved_state_continues_exactly(two_sources) -> None:
    weights = {"web": 0.7, "code": 0.3}
    reference = take(PackedLoader(two_sources, weights, seq_len=16, batch_size=3, seed=5), 12)
    first = PackedLoader(two_sources, weights, seq_len=16, batch_size=3, seed=5)
    head = take(first, 7)
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    resumed = PackedLoader(two_sources, weights, seq_len=16, batch_size=3, seed=5)
    resumed.load_state_dict(state)
    assert same(head + take(resumed, 5), reference)


def test_targets_are_next_tokens_masked_across_documents(two_sources) -> None:
    batch = next(PackedLoader(two_sources, {"web": 1, "code": 1}, seq_len=32, batch_size=4))
    tokens, targets, ids = batch.tokens, batch.targets, batch.doc_ids
    assert tokens.shape == (4, 32)
    same_doc = ids[:, 1:] == ids[:, :-1]
    assert torch.equal(targets[:, :-1][same_doc], tokens[:, 1:][same_doc])
    assert bool((targets[:, :-1][~same_doc] == IGNORE).all())
    # the end-of-text token is a target (models learn to stop); what follows it is not
    eos_inputs = tokens[:, 1:] == EOS
    assert bool((targets[:, :-1][eos_inputs] == EOS).all())
    assert bool((ids[:, 0] == 0).all()) and bool((ids[:, 1:] >= ids[:, :-1]).all())


def test_consecutive_rows_share_one_token_so_every_token_is_a_target(tmp_path: Path) -> None:
    src = make_tokens(tmp_path / "long", [list(range(1, 101))])
    loader = PackedLoader({"a": src}, {"a": 1}, seq_len=8, batch_size=1)
    a, b = next(loader), next(loader)
    assert a.tokens[0].tolist() == list(range(1, 9)) and a.targets[0].tolist() == list(range(2, 10))
    assert int(b.tokens[0, 0]) == int(a.targets[0, -1]) == 9


def test_long_documents_continue_in_the_next_row(tmp_path: Path) -> None:
    src = make_tokens(tmp_path / "long", [list(range(1, 101))])
    loader = PackedLoader({"a": src}, {"a": 1}, seq_len=10, batch_size=1, max_epochs=1)
    rows = [next(loader) for _ in range(10)]
    stream = [int(rows[0].tokens[0, 0])] + [int(t) for r in rows for t in r.targets[0]]
    assert stream[:101] == list(range(1, 101)) + [EOS]


def test_mixing_follows_the_weights_in_tokens(two_sources) -> None:
    loader = PackedLoader(two_sources, {"web": 0.75, "code": 0.25}, seq_len=64, batch_size=8, seed=1)
    tokens = torch.cat([b.tokens.flatten() for b in take(loader, 5)])  # below web's epoch cap
    real = tokens[tokens != EOS]
    web = float(((real // 1_000_000) == 1).float().mean())
    assert abs(web - 0.75) < 0.03


def test_the_seed_changes_document_order_but_not_the_mix(two_sources) -> None:
    a = take(PackedLoader(two_sources, {"web": 1, "code": 1}, seq_len=16, batch_size=2, seed=0), 3)
    b = take(PackedLoader(two_sources, {"web": 1, "code": 1}, seq_len=16, batch_size=2, seed=1), 3)
    assert not same(a, b)


def doc_order(batches: list, source: int) -> list[int]:
    """The documents of `source` in the order the batches start them (see `docs_of`)."""
    tokens = torch.cat([b.tokens.flatten() for b in batches])
    docs = (tokens[(tokens // 1_000_000) == source] // 1000 % 1000).tolist()
    return list(dict.fromkeys(docs))


def test_a_sources_data_seed_reorders_its_own_documents(tmp_path: Path) -> None:
    code = make_tokens(tmp_path / "code", docs_of(2, 40, 20))

    def orders(name: str, seed: int | None) -> tuple[list[int], list[int]]:
        web = make_tokens(tmp_path / name, docs_of(1, 50, 30), seed=seed)
        batches = take(PackedLoader({"web": web, "code": code}, {"web": 1, "code": 1},
                                    seq_len=16, batch_size=4, seed=5), 60)  # > one epoch of web
        return doc_order(batches, 1), doc_order(batches, 2)

    web_1, code_1 = orders("web-1", 1)
    assert orders("web-1-again", 1) == (web_1, code_1)  # the same seed: the same order
    web_2, code_2 = orders("web-2", 2)
    assert sorted(web_2) == sorted(web_1) == list(range(50)) and web_2 != web_1  # reordered
    assert code_2 == code_1  # the other source keeps its order
    # seed 0 adds nothing: artifacts tokenized before the seed was recorded read alike
    assert orders("web-0", 0) == orders("web-unrecorded", None)


def test_set_batch_size_changes_rows_per_batch_not_the_stream(two_sources) -> None:
    fixed = PackedLoader(two_sources, {"web": 1, "code": 1}, seq_len=16, batch_size=2)
    ramp = PackedLoader(two_sources, {"web": 1, "code": 1}, seq_len=16, batch_size=2)
    rows_fixed = torch.cat([b.tokens for b in take(fixed, 6)])
    first = take(ramp, 1)
    ramp.set_batch_size(5)
    second = take(ramp, 2)
    assert second[0].tokens.shape == (5, 16)
    assert torch.equal(torch.cat([first[0].tokens] + [b.tokens for b in second])[:12], rows_fixed)


def test_upsampling_is_capped_by_max_epochs(tmp_path: Path) -> None:
    small = make_tokens(tmp_path / "small", [[5, 6, 7]] * 4)  # 16 tokens per epoch
    loader = PackedLoader({"s": small}, {"s": 1}, seq_len=4, batch_size=1, max_epochs=2.0)
    batches = []
    with pytest.raises(JobFailed, match="max_epochs"):
        while True:
            batches.append(next(loader))
    # 32 tokens: 7 full rows (5 + 6 * 4 tokens), then the 3 left over in a padded row
    assert len(batches) == 8 and loader.epochs() == {"s": 2.0}
    assert batches[-1].targets[0, -1] == IGNORE  # the padding is never a target


def test_validation_is_finite_ordered_and_padded(two_sources) -> None:
    batches = list(PackedLoader(two_sources, {}, seq_len=16, batch_size=2, split="val"))
    targets = torch.cat([b.targets.flatten() for b in batches])
    ids = torch.cat([b.doc_ids.flatten() for b in batches])
    n_val_tokens = (3 * 10 + 0 + 1 + 2 + 3) + (2 * 10 + 0 + 1 + 2)  # docs_of lengths + EOS each
    assert int((targets != IGNORE).sum()) <= n_val_tokens
    assert int((ids == -1).sum()) > 0  # the tail is padding
    assert list(PackedLoader(two_sources, {}, seq_len=16, batch_size=2, split="val"))[-1].tokens.shape[1] == 16


def test_state_from_another_configuration_is_refused(two_sources) -> None:
    a = PackedLoader(two_sources, {"web": 1, "code": 1}, seq_len=16, batch_size=2, seed=0)
    b = PackedLoader(two_sources, {"web": 1, "code": 1}, seq_len=32, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="seq_len"):
        b.load_state_dict(a.state_dict())
