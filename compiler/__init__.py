"""The compiler: a validated Spec → a Plan (resolve → check → estimate → lower).

Never imports torch or the runtime: `herd check` and `herd compile` stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.check import check
from compiler.lower import lower
from compiler.plan import Job, Plan, PlanError
from compiler.resolve import resolve
from herdlang.diagnostics import Diagnostic, HerdError, Severity
from herdlang.spec import Spec, load_spec


def compile_spec(spec: Spec) -> Plan:
    """Raise HerdError with every semantic problem, else return the sealed plan (its
    `warnings` hold each warning's one-line form)."""
    return compile_with_warnings(spec)[0]


def compile_with_warnings(spec: Spec) -> tuple[Plan, list[Diagnostic]]:
    """The plan and the warnings (H06xx) as diagnostics, for callers that render them with
    their source line (the language server, golden tests). Errors raise HerdError, with the
    warnings found so far among them."""
    res = resolve(spec)
    check(res)
    errors = [d for d in res.diags if d.severity is Severity.ERROR]
    if errors:
        raise HerdError(_dedupe(res.diags))
    if not spec.order:  # an empty file, or only comments: nothing to plan, likely a wrong path
        res.warn("H0605", f"{spec.path} defines no blocks", None,
                 "a spec declares blocks such as `model NAME { ... }` and `pretrain NAME { ... }`")
    plan = lower(res)
    if any(d.severity is Severity.ERROR for d in res.diags):  # found only once steps are known
        raise HerdError(_dedupe(res.diags))
    warnings = _dedupe([d for d in res.diags if d.severity is Severity.WARNING])
    plan.warnings[:0] = [warning_line(d) for d in warnings]
    return plan, warnings


def warning_line(d: Diagnostic) -> str:
    """`path:line:col: warning[H0604]: message; hint` — a warning on one line, as plans store them."""
    return d.headline() + (f"; {d.hint}" if d.hint else "")


def compile_file(path: str | Path, overrides: list[str] | None = None) -> tuple[Spec, Plan]:
    spec = load_spec(path, overrides)
    return spec, compile_spec(spec)


def model_config(spec_path: str | Path, model_name: str) -> dict[str, Any]:
    """The resolved model dict the runtime builds a Llama from."""
    spec = load_spec(spec_path)
    res = resolve(spec)
    if model_name not in res.models:
        raise HerdError(_dedupe(res.diags) or [
            Diagnostic("H0301", f"model '{model_name}' is not defined in {spec_path}", None,
                       "models: " + ", ".join(spec.of("model")))])
    return res.models[model_name]


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in diags:
        key = (d.code, d.message, d.span)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


__all__ = ["Job", "Plan", "PlanError", "compile_file", "compile_spec", "compile_with_warnings", "model_config",
           "warning_line"]
