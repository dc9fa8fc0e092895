"""The executor: runs a compiled Plan with a content-addressed store, live progress and a report.

Entry points: `run_plan` (herd run), `plan_diff` + `render_diff` (dry run, herd compile),
`Store` (artifacts, `verify`); report figures live in `runtime.executor.plots`
(not imported here, so importing the executor never loads matplotlib).
"""

from runtime.executor.diff import ConfigChange, JobDiff, plan_diff, render_diff
from runtime.executor.errors import ExecutorError
from runtime.executor.runner import JobOutcome, RunResult, default_run_dir, run_plan
from runtime.executor.store import Store

__all__ = [
    "ConfigChange",
    "ExecutorError",
    "JobDiff",
    "JobOutcome",
    "RunResult",
    "Store",
    "default_run_dir",
    "plan_diff",
    "render_diff",
    "run_plan",
]
