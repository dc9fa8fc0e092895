"""Job kinds register here by name; the executor looks them up by a job's `kind`.

Adding a job kind is one new module under `runtime/jobs/` that decorates its function:

    @register("data.dedup.minhash")
    def minhash(ctx: JobContext) -> None: ...

The module is imported by `runtime.jobs.load_all()`; nothing else needs editing.
"""

from __future__ import annotations

from collections.abc import Callable

from runtime.jobs.context import JobContext

JobFn = Callable[[JobContext], None]

_REGISTRY: dict[str, JobFn] = {}


def register(kind: str) -> Callable[[JobFn], JobFn]:
    def wrap(fn: JobFn) -> JobFn:
        if kind in _REGISTRY and _REGISTRY[kind] is not fn:
            raise ValueError(f"job kind {kind!r} registered twice")
        _REGISTRY[kind] = fn
        return fn

    return wrap


def get(kind: str) -> JobFn:
    from runtime.jobs import load_all

    load_all()
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"no job kind {kind!r} is registered (known: {known})") from None


def kinds() -> list[str]:
    from runtime.jobs import load_all

    load_all()
    return sorted(_REGISTRY)
