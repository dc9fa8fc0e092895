"""Which jobs a run executes: the pure decision behind --only, --from and --force.

Rules (see docs/executor.md):
- a job whose artifact is complete is `cached`, unless forced;
- `--only J` restricts the run to J; J's ancestors whose artifacts are missing run too
  (they are needed), complete ones are used as they are;
- `--from J` forces J and everything downstream of it (with --only: only the part of
  that that leads to the --only jobs);
- `--force J` forces exactly J (its fingerprint is unchanged, so its descendants stay
  cached unless they are missing or forced as well).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from compiler.plan import Plan
from runtime.executor.errors import ExecutorError

Action = Literal["run", "cached", "skip"]


class SelectionError(ExecutorError):
    """A job named on the command line that the plan does not have."""


@dataclass(frozen=True)
class Decision:
    job_id: str
    action: Action
    reason: str


def _check(plan: Plan, names: Iterable[str], flag: str) -> None:
    for name in names:
        if name not in plan.jobs:
            close = difflib.get_close_matches(name, list(plan.jobs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SelectionError(f"{flag} {name}: the plan has no job {name!r}{hint}")


def schedule(
    plan: Plan,
    complete: set[str],
    *,
    only: list[str] | None = None,
    from_: str | None = None,
    force: list[str] | None = None,
) -> dict[str, Decision]:
    """Decide run / cached / skip for every job, in plan order.

    `complete` holds the ids of jobs whose artifact is complete (and intact) in the store.
    """
    only = list(only or [])
    force = list(force or [])
    _check(plan, only, "--only")
    _check(plan, force, "--force")
    if from_ is not None:
        _check(plan, [from_], "--from")

    order = plan.order()
    wanted = set(only) if only else set(order)
    forced: dict[str, str] = {}
    if from_ is not None:
        downstream = {from_} | plan.descendants(from_)
        if only:
            reach = set(only).union(*(plan.ancestors(j) for j in only))
            downstream &= reach
        forced.update({j: f"forced (--from {from_})" for j in downstream})
    forced.update({j: "forced (--force)" for j in force})

    run: dict[str, str] = {}
    for job_id in order:
        if job_id in forced:
            run[job_id] = forced[job_id]
        elif job_id in wanted and job_id not in complete:
            run[job_id] = "not in the store"
    # Missing inputs of anything that runs must run first: walk upstream.
    for job_id in reversed(order):
        if job_id not in run:
            continue
        for dep in plan.jobs[job_id].deps:
            if dep not in run and dep not in complete:
                run[dep] = f"needed by {job_id} (missing from the store)"

    decisions: dict[str, Decision] = {}
    used_inputs = {dep for j in run for dep in plan.jobs[j].deps}
    for job_id in order:
        if job_id in run:
            decisions[job_id] = Decision(job_id, "run", run[job_id])
        elif job_id in wanted:
            decisions[job_id] = Decision(job_id, "cached", "complete in the store")
        elif job_id in used_inputs:
            decisions[job_id] = Decision(job_id, "cached", "input of a selected job")
        else:
            decisions[job_id] = Decision(job_id, "skip", "not selected (--only)")
    return decisions
