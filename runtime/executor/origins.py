"""Which spec files a run directory belongs to.

A run directory is named after the spec's file name (`runs/<name>/`), so `a.herd` and
`experiments/a.herd` share one. Running both is safe — the store is content-addressed —
but `herd gc` defines garbage against one plan and would delete the other spec's
artifacts. So every run records its spec's absolute path in `specs.json`, a run warns when
another spec file that still exists used the folder, and `herd gc --yes` refuses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from compiler.plan import Plan
from runtime.executor.store import write_json_atomic

ORIGINS = "specs.json"
ORIGINS_FORMAT = "herd.specs/1"


def _spec_file(plan: Plan) -> str | None:
    """The plan's spec as an absolute path (None for a plan built without a file)."""
    return str(Path(plan.spec_path).resolve()) if plan.spec_path else None


def _recorded(run_dir: Path) -> dict[str, float]:
    try:
        data = json.loads((Path(run_dir) / ORIGINS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    specs = data.get("specs") if isinstance(data, dict) else None
    return {str(k): float(v) for k, v in specs.items()} if isinstance(specs, dict) else {}


def record(run_dir: Path, plan: Plan) -> None:
    """Note that `plan`'s spec ran in `run_dir` (called under the run lock)."""
    spec = _spec_file(plan)
    if spec is None:
        return
    specs = _recorded(run_dir)
    specs[spec] = time.time()
    write_json_atomic(Path(run_dir) / ORIGINS, {"format": ORIGINS_FORMAT, "specs": specs})


def other_specs(run_dir: Path, plan: Plan) -> list[str]:
    """Other spec files, still on disk, that ran in `run_dir` (moved or deleted ones are
    not counted: their artifacts are nobody's but this spec's to collect)."""
    spec = _spec_file(plan)
    if spec is None:
        return []
    return sorted(p for p in _recorded(run_dir) if p != spec and Path(p).is_file())


def shared_message(run_dir: Path, others: list[str]) -> str:
    names = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return (f"{run_dir} is also the run folder of {names} (a spec with the same file name); "
            "garbage is judged against one plan, so collecting it for this spec would delete "
            "the other's artifacts; hint: give each spec its own --runs-dir")
