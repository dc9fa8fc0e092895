"""The Plan: a DAG of jobs that the runtime executes exactly as compiled.

A plan is the contract between the compiler and the runtime. It is plain data (JSON
in, JSON out) so that a saved plan runs like `terraform apply plan`: the runtime never
re-reads the spec. Every job carries a fingerprint that hashes its kind, its fully
resolved config, the fingerprints of its inputs and the herd version; the store keys
artifacts by it, so a changed setting re-runs exactly the jobs downstream of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herdlang.errors import UserError
from herdlang.version import HERD_VERSION

PLAN_FORMAT = "herd.plan/1"


def canonical_json(value: Any) -> str:
    """Stable JSON: sorted keys, no whitespace variance, floats as repr."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint_of(kind: str, config: dict[str, Any], inputs: dict[str, str], version: str) -> str:
    """hash(kind, canonical config, input fingerprints by role, herd version)."""
    h = hashlib.sha256()
    h.update(canonical_json({"kind": kind, "config": config, "inputs": inputs, "version": version}).encode())
    return h.hexdigest()[:20]


@dataclass
class Job:
    """One unit of work.

    `inputs` maps a role name (e.g. "documents", "tokenizer", "checkpoint") to the id of
    the job whose output artifact fills it; `outputs` names the artifact type this job
    produces (e.g. "documents", "tokens", "tokenizer", "checkpoint", "eval", "report").
    """

    id: str
    kind: str
    stage: str
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    output: str = "artifact"
    resources: dict[str, Any] = field(default_factory=dict)
    estimates: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    fingerprint: str = ""

    @property
    def deps(self) -> list[str]:
        return sorted(set(self.inputs.values()))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "stage": self.stage,
            "description": self.description,
            "config": self.config,
            "inputs": dict(sorted(self.inputs.items())),
            "deps": self.deps,
            "output": self.output,
            "resources": self.resources,
            "estimates": self.estimates,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(
            id=data["id"],
            kind=data["kind"],
            stage=data.get("stage", ""),
            config=data.get("config", {}),
            inputs=data.get("inputs", {}),
            output=data.get("output", "artifact"),
            resources=data.get("resources", {}),
            estimates=data.get("estimates", {}),
            description=data.get("description", ""),
            fingerprint=data.get("fingerprint", ""),
        )


class PlanError(UserError):
    """A plan file that cannot be used (corrupt, tampered, wrong version)."""


@dataclass
class Plan:
    """A compiled spec: jobs in a DAG plus the estimates that explain them."""

    spec_name: str
    spec_path: str = ""
    spec_sha256: str = ""
    herd_version: str = HERD_VERSION
    settings: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: `digest()` when the plan was sealed or loaded: jobs dropped from the object since
    #: then (which `herd gc` would take for garbage) are caught by `check_intact`
    sealed_digest: str = field(default="", repr=False, compare=False)

    # -- construction -------------------------------------------------------------

    def add(self, job: Job) -> Job:
        if job.id in self.jobs:
            raise ValueError(f"duplicate job id {job.id!r}")
        self.jobs[job.id] = job
        return job

    def seal(self) -> Plan:
        """Compute fingerprints in topological order (inputs first)."""
        for job_id in self.order():
            job = self.jobs[job_id]
            job.fingerprint = self._fingerprint(job)
        self.sealed_digest = self.digest()
        return self

    def _fingerprint(self, job: Job) -> str:
        upstream = {role: self.jobs[dep].fingerprint for role, dep in job.inputs.items()}
        return fingerprint_of(job.kind, job.config, upstream, self.herd_version)

    def digest(self) -> str:
        """sha256 of the spec's name and every job's id and fingerprint, sorted.

        Fingerprints catch an edited job but not a removed one (a leaf has no dependents
        to miss it); this catches both, and a plan moved to another spec's run folder.
        A removed job must be detectable: `herd gc` takes whatever the plan lacks for garbage.
        """
        jobs = sorted([job.id, job.fingerprint] for job in self.jobs.values())
        return hashlib.sha256(canonical_json({"spec": self.spec_name, "jobs": jobs}).encode()).hexdigest()

    def check_intact(self) -> None:
        """Raise PlanError unless the jobs are exactly those the plan was sealed or loaded
        with: deleting by "what the plan does not use" is only safe against a whole plan."""
        if not self.sealed_digest:
            raise PlanError(f"the plan of {self.spec_name!r} was never sealed: its jobs have no fingerprints yet")
        if self.digest() != self.sealed_digest:
            raise PlanError(f"the plan of {self.spec_name!r} lost or gained jobs after it was compiled or "
                            "loaded\nhint: compile the spec again")

    # -- graph ----------------------------------------------------------------------

    @property
    def graph(self):  # -> networkx.DiGraph (imported lazily: compile must stay fast)
        import networkx as nx

        g = nx.DiGraph()
        for job in self.jobs.values():
            g.add_node(job.id, job=job)
        for job in self.jobs.values():
            for dep in job.inputs.values():
                g.add_edge(dep, job.id)
        return g

    def order(self) -> list[str]:
        """Topological order, ties broken by insertion order (stable output).

        Kahn's algorithm with a heap; networkx is kept for graph queries, not needed here.
        """
        import heapq

        position = {job_id: i for i, job_id in enumerate(self.jobs)}
        indegree = {job_id: 0 for job_id in self.jobs}
        children: dict[str, list[str]] = {job_id: [] for job_id in self.jobs}
        for job in self.jobs.values():
            for dep in set(job.inputs.values()):
                if dep in children:
                    children[dep].append(job.id)
                    indegree[job.id] += 1
        ready = [(position[j], j) for j, d in indegree.items() if d == 0]
        heapq.heapify(ready)
        out: list[str] = []
        while ready:
            _, job_id = heapq.heappop(ready)
            out.append(job_id)
            for child in children[job_id]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    heapq.heappush(ready, (position[child], child))
        if len(out) != len(self.jobs):
            raise PlanError("the plan's jobs form a cycle")
        return out

    def __iter__(self) -> Iterator[Job]:
        return (self.jobs[j] for j in self.order())

    def descendants(self, job_id: str) -> set[str]:
        import networkx as nx

        return nx.descendants(self.graph, job_id)

    def ancestors(self, job_id: str) -> set[str]:
        import networkx as nx

        return nx.ancestors(self.graph, job_id)

    # -- JSON -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "herd_version": self.herd_version,
            "spec": {"name": self.spec_name, "path": self.spec_path, "sha256": self.spec_sha256},
            "settings": self.settings,
            "models": self.models,
            "stages": self.stages,
            "warnings": self.warnings,
            "jobs": [self.jobs[j].to_json() for j in self.order()],
            "digest": self.digest(),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the plan through a temp file renamed over `path`: a symlink there is replaced,
        never written through, and a failed write leaves the old file whole (UsageError)."""
        from herdlang.cli_paths import write_file

        write_file(Path(path), self.dumps(), follow_links=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise PlanError(f"not a herd plan (expected format {PLAN_FORMAT!r})")
        _check_structure(data)
        spec = data["spec"]
        plan = cls(
            spec_name=spec["name"],
            spec_path=spec.get("path", ""),
            spec_sha256=spec.get("sha256", ""),
            herd_version=data["herd_version"],
            settings=data["settings"],
            models=data.get("models", {}),
            stages=data.get("stages", {}),
            warnings=data.get("warnings", []),
        )
        try:
            for raw in data.get("jobs", []):
                plan.add(Job.from_json(raw))
            for job in plan.jobs.values():
                for dep in job.inputs.values():
                    if dep not in plan.jobs:
                        raise PlanError(f"job {job.id!r} depends on unknown job {dep!r}")
            plan.order()  # raises PlanError on a cycle
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"malformed plan: {exc}") from exc
        for job_id in plan.order():
            job = plan.jobs[job_id]
            expected = plan._fingerprint(job)
            if job.fingerprint != expected:
                raise PlanError(
                    f"job {job_id!r}: fingerprint {job.fingerprint!r} does not match its config "
                    f"({expected!r}); the plan was edited by hand or made by another herd version"
                )
        for raw in data["jobs"]:  # derived from inputs: only a hand edit makes them differ
            if "deps" in raw and raw["deps"] != plan.jobs[raw["id"]].deps:
                raise PlanError(f"malformed plan: job {raw['id']!r}: 'deps' {raw['deps']} do not match its inputs")
        if data["digest"] != plan.digest():
            raise PlanError(f"its {len(plan.jobs)} jobs do not match the digest it was written with: "
                            "jobs were removed or added (or the spec renamed) by hand, and `herd gc` would "
                            "take whatever the plan lacks for garbage")
        plan.sealed_digest = data["digest"]
        return plan

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise PlanError(f"{path}: no such plan file") from exc
        except IsADirectoryError as exc:
            raise PlanError(f"{path} is a folder, not a plan file") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlanError(f"{path}: not valid JSON ({exc})") from exc
        except RecursionError:  # '[[[[...' deeper than the parser goes: no plan is
            raise PlanError(f"{path}: not a herd plan (its JSON is nested too deeply to read)\n"
                            f"hint: {_RECOMPILE.format(name=Path(path).name)}") from None
        except OSError as exc:
            raise PlanError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            return cls.from_json(data)
        except PlanError as exc:
            raise PlanError(f"{path}: {exc}\nhint: {_RECOMPILE.format(name=Path(path).name)}") from None
        except RecursionError:  # a config nested just shallow enough to parse, too deep to hash
            raise PlanError(f"{path}: malformed plan: a value is nested too deeply to fingerprint\n"
                            f"hint: {_RECOMPILE.format(name=Path(path).name)}") from None


_RECOMPILE = "a plan is used exactly as `herd compile SPEC -o {name}` wrote it; compile it again"


# What `Plan.to_json` writes: required keys, and the type of every key that may appear.
_PLAN_KEYS = {"herd_version": str, "spec": dict, "settings": dict, "jobs": list}
_PLAN_OPTIONAL = {"models": dict, "stages": dict, "warnings": list, "digest": str}
_JOB_KEYS = {"id": str, "kind": str, "config": dict, "inputs": dict, "fingerprint": str}
_JOB_OPTIONAL = {"stage": str, "description": str, "deps": list, "output": str, "resources": dict,
                 "estimates": dict}
_TYPE_NAMES = {str: "a string", dict: "an object", list: "a list"}


def _check_structure(data: dict[str, Any]) -> None:
    """Refuse a plan file that `Plan.to_json` cannot have written (missing jobs, wrong types).

    Fingerprints then catch any edit to what a job does; this catches the rest, so a
    truncated or hand-made file is refused before anything runs or is created.
    """

    def check(obj: dict[str, Any], required: dict[str, type], optional: dict[str, type], where: str) -> None:
        for key, typ in {**required, **optional}.items():
            if key not in obj:
                if key in required:
                    raise PlanError(f"malformed plan: {where}missing {key!r}")
            elif not isinstance(obj[key], typ):
                raise PlanError(f"malformed plan: {where}{key!r} must be {_TYPE_NAMES[typ]}, "
                                f"not {type(obj[key]).__name__}")

    check(data, _PLAN_KEYS, _PLAN_OPTIONAL, "")
    _check_settings(data["settings"])
    name = data["spec"].get("name")
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise PlanError(f"malformed plan: spec name {name!r} is not a usable run folder name")
    if not all(isinstance(w, str) for w in data.get("warnings", [])):
        raise PlanError("malformed plan: 'warnings' must be a list of strings")
    for i, raw in enumerate(data["jobs"]):
        if not isinstance(raw, dict):
            raise PlanError(f"malformed plan: job #{i + 1} is not an object")
        where = f"job {raw['id']!r}: " if isinstance(raw.get("id"), str) else f"job #{i + 1}: "
        check(raw, _JOB_KEYS, _JOB_OPTIONAL, where)
        if not raw["id"] or not raw["kind"] or not raw["fingerprint"]:
            raise PlanError(f"malformed plan: {where}empty id, kind or fingerprint")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in raw["inputs"].items()):
            raise PlanError(f"malformed plan: {where}'inputs' must map role names to job ids")
    if "digest" not in data:  # required, but checked last: a file that lacks more is told so first
        raise PlanError("malformed plan: it has no 'digest' of its jobs (written by an older herd, or "
                        "edited by hand), so a job removed from it could not be told from one the spec "
                        "no longer has")


# `settings` as `Lowering.settings` writes them: the `run` block's fields (validated by its own
# schema, so a plan accepts exactly what a spec may say) plus what the compiler derives.
_RUN_KEYS = ("seed", "device", "workers", "precision")
_HARDWARE_KEYS = ("gpu", "count", "mfu", "peak_bf16_tflops")  # + memory_gib, derived from `memory`
_PARALLEL_KEYS = ("tensor", "pipeline", "context", "data", "fsdp", "activation_checkpointing", "micro_batch")


def _check_settings(settings: dict[str, Any]) -> None:
    """Refuse settings a spec's `run` block could not have produced (`workers: "lots"`,
    `device: "tpu"`, `workers: 0`): the runtime uses them as they are, and they are not
    fingerprinted (they change how jobs run, not what they make), so only this catches an edit.

    Keys are checked where present (a plan lacking one runs with the runtime's default)."""
    from pydantic import ValidationError

    from herdlang.schema import RunBlock

    run: dict[str, Any] = {k: settings[k] for k in _RUN_KEYS if k in settings}
    for group, keys in (("hardware", _HARDWARE_KEYS), ("parallel", _PARALLEL_KEYS)):
        if group in settings:
            value = settings[group]
            if not isinstance(value, dict):
                raise PlanError(f"malformed plan: settings.{group} must be an object, not {type(value).__name__}")
            run[group] = {k: value[k] for k in keys if k in value}
    try:
        RunBlock.model_validate(run)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        raise PlanError(f"malformed plan: settings.{where} must be {_wanted(err)}, "
                        f"not {_shown(err.get('input'))}") from None
    memory = settings.get("hardware", {}).get("memory_gib")
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, float))
                               or not 0 < memory < float("inf")):  # (NaN compares false)
        raise PlanError(f"malformed plan: settings.hardware.memory_gib must be a positive number or null, "
                        f"not {_shown(memory)}")
    if "spec_dir" in settings and not isinstance(settings["spec_dir"], str):
        raise PlanError(f"malformed plan: settings.spec_dir must be a string, not {_shown(settings['spec_dir'])}")


def _shown(value: Any) -> str:
    """A JSON value as the file has it, cut short: a message quotes it, not a megabyte of it."""
    text = canonical_json(value)
    return text if len(text) <= 60 else text[:57] + "…"


_BOUND_WORDS = {"greater_than": "more than", "greater_than_equal": "at least", "less_than": "less than",
                "less_than_equal": "at most"}


def _wanted(err: Any) -> str:
    """What a setting must be, from a Pydantic error: "a whole number", "at least 1"."""
    etype, ctx = str(err["type"]), err.get("ctx") or {}
    if etype.startswith("int_"):
        return "a whole number"
    if etype.startswith("float_") or etype == "finite_number":
        return "a finite number"
    if etype.startswith("bool_"):
        return "true or false"
    if etype.startswith("string_"):
        return "a string"
    if etype == "literal_error":
        return f"one of {ctx.get('expected')}"
    if etype in _BOUND_WORDS:
        return f"{_BOUND_WORDS[etype]} {next(iter(ctx.values()), '?')}"
    return str(err["msg"]).removeprefix("Input should be ")
