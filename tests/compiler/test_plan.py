"""Plans: save → load round trips exactly; tampering is detected; output is stable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler import Plan, PlanError, compile_file

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "specs" / "tiny.herd"
L405 = ROOT / "specs" / "llama3_405b.herd"


@pytest.fixture(scope="module")
def tiny() -> Plan:
    return compile_file(TINY)[1]


@pytest.mark.parametrize("spec", [TINY, L405])
def test_save_load_round_trip(spec: Path, tmp_path: Path) -> None:
    plan = compile_file(spec)[1]
    path = tmp_path / "plan.json"
    plan.save(path)
    loaded = Plan.load(path)
    assert {j.id: j.fingerprint for j in loaded.jobs.values()} == {j.id: j.fingerprint for j in plan.jobs.values()}
    assert loaded.order() == plan.order()
    assert loaded.dumps() == plan.dumps() == path.read_text(encoding="utf-8")
    assert loaded.models == plan.models and loaded.stages == plan.stages


def test_two_compiles_are_byte_identical() -> None:
    a = compile_file(L405)[1].dumps()
    b = compile_file(L405)[1].dumps()
    assert a == b
    data = json.loads(a)
    assert json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n" == a  # sorted keys


def _tampered(plan: Plan, tmp_path: Path, edit) -> Path:
    data = json.loads(plan.dumps())
    edit(data)
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _job(data: dict, job_id: str) -> dict:
    return next(j for j in data["jobs"] if j["id"] == job_id)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: _job(d, "train.base")["config"].__setitem__("tokens", 6_000_000),
        lambda d: _job(d, "train.base")["config"]["optimizer"].__setitem__("lr", 1.0),
        lambda d: _job(d, "train.base").__setitem__("kind", "train.extend"),
        lambda d: _job(d, "train.base").__setitem__("fingerprint", "0" * 20),
        lambda d: _job(d, "train.final")["inputs"].__setitem__("checkpoint", "train.base"),
        lambda d: d.__setitem__("herd_version", "0.0.0-other"),
    ],
    ids=["tokens", "nested-lr", "kind", "fingerprint", "inputs", "version"],
)
def test_edited_plan_fails_to_load(tiny: Plan, tmp_path: Path, edit) -> None:
    with pytest.raises(PlanError):
        Plan.load(_tampered(tiny, tmp_path, edit))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "something/else"}', "not a herd plan"),
        ("[]", "not a herd plan"),
    ],
)
def test_bad_plan_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PlanError, match=match):
        Plan.load(path)


def test_missing_plan_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="no such plan"):
        Plan.load(tmp_path / "nope.json")


def test_unknown_dependency_and_cycle(tiny: Plan, tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="unknown job"):
        Plan.load(_tampered(tiny, tmp_path, lambda d: _job(d, "train.base")["inputs"].__setitem__("x", "nope")))

    def cycle(d: dict) -> None:
        _job(d, "data.stdlib.source")["inputs"]["loop"] = "train.base"

    with pytest.raises(PlanError, match="cycle"):
        Plan.load(_tampered(tiny, tmp_path, cycle))


def test_order_is_topological_and_graph_matches(tiny: Plan) -> None:
    order = tiny.order()
    pos = {j: i for i, j in enumerate(order)}
    for job in tiny.jobs.values():
        for dep in job.deps:
            assert pos[dep] < pos[job.id]
    g = tiny.graph
    assert set(g.nodes) == set(tiny.jobs)
    assert g.number_of_edges() == sum(len(j.deps) for j in tiny.jobs.values())


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.pop("jobs"), "missing 'jobs'"),
        (lambda d: d.__setitem__("jobs", {}), "'jobs' must be a list"),
        (lambda d: d.pop("spec"), "missing 'spec'"),
        (lambda d: d["spec"].__setitem__("name", "../elsewhere"), "not a usable run folder name"),
        (lambda d: d.__setitem__("settings", []), "'settings' must be an object"),
        (lambda d: _job(d, "train.base").pop("fingerprint"), "job 'train.base': missing 'fingerprint'"),
        (lambda d: _job(d, "train.base").__setitem__("config", "lr=1"), "'config' must be an object"),
        (lambda d: d["jobs"].append("train.extra"), "is not an object"),
        (lambda d: _job(d, "train.base").__setitem__("deps", []), "'deps' .* do not match its inputs"),
    ],
    ids=["no-jobs", "jobs-not-a-list", "no-spec", "unsafe-name", "settings-not-object", "no-fingerprint",
         "config-not-object", "job-not-object", "deps-edited"],
)
def test_a_plan_file_of_the_wrong_structure_is_refused_with_its_path(tiny: Plan, tmp_path: Path, edit,
                                                                     match: str) -> None:
    path = _tampered(tiny, tmp_path, edit)
    with pytest.raises(PlanError, match=match) as err:
        Plan.load(path)
    assert str(err.value).startswith(f"{path}: malformed plan") and "hint:" in str(err.value)
