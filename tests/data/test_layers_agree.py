"""The spec schema and the runtime name the same things: every component a spec may use has a
runtime implementation under the same name, and the configs the compiler writes run.

(A quality classifier once validated as `ngram_logreg` in specs but ran as another name, so
every Llama 3 spec's quality job failed at run time; these tests keep the two lists joined.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler import compile_file
from data.helpers import run_job, write_docs
from herdlang import components
from herdlang.schema import TokenizerBlock, literal_values
from runtime.data.documents import Document, read_documents
from runtime.data.filters import filter_names, get_filter
from runtime.data.quality import get_classifier
from runtime.data.sources import plan_shards
from runtime.data.tokenizer import META_FILE, save_tokenizer
from runtime.jobs import registry

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.herd"))


def test_every_filter_and_quality_classifier_in_the_schema_runs_under_its_name() -> None:
    assert set(components.names("filter")) <= set(filter_names())
    for name in components.names("quality"):
        assert get_classifier(name).name == name


@pytest.mark.parametrize("category", ["dedup", "eval"])
def test_every_dedup_and_eval_in_the_schema_has_a_job_kind(category: str) -> None:
    prefix = "data.dedup." if category == "dedup" else "eval."
    missing = {n for n in components.names(category)} - {
        k.removeprefix(prefix) for k in registry.kinds() if k.startswith(prefix)
    }
    assert not missing


def test_every_source_in_the_schema_is_read_by_the_runtime(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    for name in components.names("source"):
        shards = plan_shards({"source": name, "paths": [str(tmp_path / "a.*")], "limit_docs": 1}, 0)
        assert shards and shards[0].kind == name


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_compiled_job_kind_is_registered(spec: Path) -> None:
    _, plan = compile_file(spec)
    assert {job.kind for job in plan.jobs.values()} <= set(registry.kinds())


def test_a_compiled_quality_step_runs_as_written(tmp_path: Path) -> None:
    import json
    from pydoc_data.topics import topics

    good = [topics[k] for k in sorted(topics)]
    (tmp_path / "ref.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in good[6:40]))
    spec = tmp_path / "q.herd"
    spec.write_text(
        "data d {\n"
        "  source text { paths = [\"*.md\"] }\n"
        "  quality ngram_logreg { min_score = 0.5  features = 4096  reference = \"ref.jsonl\" }\n"
        "}\n"
    )
    _, plan = compile_file(spec)
    job = next(j for j in plan.jobs.values() if j.kind == "data.quality")
    assert job.config["params"]["reference"] == str(tmp_path / "ref.jsonl")
    docs = [Document(f"doc{i}", text) for i, text in enumerate(good[:6])]
    docs += [Document(f"junk{i}", " ".join(f"q{j}z{i}" for j in range(120))) for i in range(6)]
    out = run_job(tmp_path, "data.quality", job.config,
                  {"documents": write_docs(tmp_path / "in", docs)})
    kept = {d.id for d in read_documents(out)}
    assert {f"junk{i}" for i in range(6)}.isdisjoint(kept) and kept


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_compiled_filter_and_quality_config_is_accepted_by_the_runtime(spec: Path) -> None:
    _, plan = compile_file(spec)
    for job in plan.jobs.values():
        if job.kind == "data.filter" and "list" not in job.config["params"]:
            # (a word list is a file the Llama 3 specs name but do not ship)
            flt, params = get_filter(job.config["filter"]), job.config["params"]
            flt.check_params(params)
            flt.scoring_params(params)
        elif job.kind == "data.quality":
            get_classifier(job.config["classifier"]).scoring_params(job.config["params"])


@pytest.mark.parametrize(
    ("fields", "rules", "checked"),
    [
        ("preset = gopher", 13, {"dup_10gram": 0.10, "dup_line_frac": 0.30}),
        ("", 1, {"dup_10gram": 0.30}),
        ("n = 10  max_coverage = 30%", 1, {"dup_10gram": 0.30}),
        ("n = 3", 1, {"top_3gram": 0.30}),
        ("preset = gopher  n = 7  max_coverage = 20%", 13, {"dup_7gram": 0.20, "dup_5gram": 0.15}),
    ],
    ids=["gopher", "default-rule", "one-rule", "top-3gram", "gopher-with-override"],
)
def test_duplicated_ngrams_applies_the_rules_the_spec_names(tmp_path: Path, fields, rules, checked):
    spec = tmp_path / "f.herd"
    spec.write_text("data d {\n  source text { paths = [\"*.md\"] }\n"
                    f"  filter duplicated_ngrams {{ {fields} }}\n}}\n")
    _, plan = compile_file(spec)
    [job] = [j for j in plan.jobs.values() if j.kind == "data.filter"]
    limits = get_filter("duplicated_ngrams").thresholds(job.config["params"])
    assert len(limits) == rules
    assert {k: limits[k] for k in checked} == pytest.approx(checked)


def test_a_compiled_sft_schedule_is_read_by_the_post_training_loop(tmp_path: Path) -> None:
    from runtime.jobs.post_jobs import post_schedule

    tiny = (SPECS[0].parent / "tiny.herd").read_text(encoding="utf-8")
    tiny = tiny.replace("batch = 2 }", "batch = 2  schedule = wsd(warmup = 10%, min_lr = 1e-4, decay = 50%) }", 1)
    (tmp_path / "tiny.herd").write_text(tiny, encoding="utf-8")
    _, plan = compile_file(tmp_path / "tiny.herd")
    schedule = post_schedule(plan.jobs["post.chat.r1.sft"].config, 400)
    assert schedule == {"kind": "wsd", "peak_lr": 1.0, "min_lr": pytest.approx(0.1), "warmup_steps": 40,
                        "total_steps": 400, "decay_fraction": 0.5}


def test_a_compiled_symbol_ratio_applies_max_non_alnum_only_when_the_spec_sets_it(tmp_path: Path) -> None:
    ascii_art = " ".join("+--+" for _ in range(40)) + " " + " ".join(f"word{i}" for i in range(20))
    docs = [Document("prose", "plain words and nothing else " * 10), Document("art", ascii_art)]
    src = write_docs(tmp_path / "in", docs)
    kept = {}
    for name, fields in (("unset", ""), ("set", "max_non_alnum = 40%")):
        spec = tmp_path / f"{name}.herd"
        spec.write_text("data d {\n  source text { paths = [\"*.md\"] }\n"
                        f"  filter symbol_ratio {{ {fields} }}\n}}\n")
        _, plan = compile_file(spec)
        [job] = [j for j in plan.jobs.values() if j.kind == "data.filter"]
        assert "max_non_alnum" in job.config["thresholds"]  # re-deciding never re-scores
        out = run_job(tmp_path, "data.filter", job.config, {"documents": src}, name=name)
        kept[name] = [d.id for d in read_documents(out)]
    assert kept == {"unset": ["prose", "art"], "set": ["prose"]}


TRAIN_ON_D = """tokenizer tok {{ vocab = 300  train_on = d }}
model m {{ tokenizer = tok  layers = 1  dim = 32  heads = 2  context = 32 }}
data d {{ source text {{ paths = ["*.md"] }}  val_fraction = 0  {seed} }}
pretrain p {{ model = m  data = d  tokens = 64K tokens  context = 32  batch = 1K tokens
  optimizer = adamw(lr = 1e-3) }}
"""


def test_a_data_stages_seed_decides_the_order_training_reads_it(tmp_path: Path) -> None:
    """Through the compiled plan: the data seed reaches the tokens artifact (and, through
    it, the training job's fingerprint), and the training job's loader reads it."""
    from runtime.train.loop import train_loader

    docs = write_docs(tmp_path / "docs", [Document(f"doc{i}", f"document {i} " * (5 + i % 4))
                                          for i in range(40)])
    tok = tmp_path / "tok"
    tok.mkdir()
    save_tokenizer(tok, {bytes([i]): i for i in range(256)}, "llama3", 16)

    def trained_order(name: str, seed: str) -> tuple[list[str], str]:
        (tmp_path / f"{name}.herd").write_text(TRAIN_ON_D.format(seed=seed))
        _, plan = compile_file(tmp_path / f"{name}.herd")
        tokens = run_job(tmp_path, "data.tokenize", plan.jobs["tokens.d.tok"].config,
                         {"documents": docs, "tokenizer": tok}, name=name)
        train = plan.jobs["train.p"]
        loader = train_loader({"d": tokens}, train.config)
        text = b"".join(bytes(t for t in row if t < 256) for b in (next(loader) for _ in range(8))
                        for row in b.tokens.tolist()).decode()
        return list(dict.fromkeys(w for w in text.split() if w.isdigit())), train.fingerprint

    one, fp_one = trained_order("one", "seed = 1")
    assert trained_order("one_again", "seed = 1") == (one, fp_one)
    two, fp_two = trained_order("two", "seed = 2")
    assert two != one and fp_two != fp_one
    unset, _ = trained_order("unset", "")
    assert unset == trained_order("zero", "seed = 0")[0] != one


def test_the_tokenizer_kind_a_spec_names_is_the_format_the_runtime_writes(tmp_path: Path) -> None:
    """The runtime builds one kind of tokenizer, so the compiler does not pass `kind` on; a
    second kind in the schema must come with a runtime that builds it (and reads `kind`)."""
    import json

    save_tokenizer(tmp_path, {bytes([i]): i for i in range(256)}, "llama3", 16)
    written = json.loads((tmp_path / META_FILE).read_text())["format"]
    assert [f"{kind}-bpe" for kind in literal_values(TokenizerBlock.model_fields["kind"].annotation)] == [written]
