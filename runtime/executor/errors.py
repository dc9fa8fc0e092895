"""Errors that stop a run before any job starts: the caller's mistake, not a job's.

The CLI prints them as one line and exits 2; a job's own failure is reported in the
RunResult instead (exit 1), because other branches of the plan still run.
"""

from __future__ import annotations


class ExecutorError(Exception):
    """A run that cannot start (unknown job name or kind, run directory in use)."""
