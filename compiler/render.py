"""Human views of a plan: a readable text tree (rich), Graphviz dot and Mermaid.

Every resolved integer is printed so nothing is hidden (`128K` → 131,072).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from compiler.estimates import humanize, humanize_duration
from compiler.plan import Plan


def render_text(plan: Plan, runs_dir: Path | None = None, color: bool = False,
                states: dict[str, tuple[str, str]] | None = None) -> None:
    """Print models, stages with estimates, and every job with why it runs.

    `states` maps job id → (state, reason) — new / changed / cached — when a run
    folder exists (computed by the caller, which may consult the runtime's store).
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.tree import Tree

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1; the CLI stops quietly with 0
            raise BrokenPipeError

    # A terminal's own width; off a terminal (a pipe, a CI log) nothing is wrapped or cut.
    tty = sys.stdout.isatty()
    console = PipeConsole(force_terminal=color, no_color=not color, highlight=False,
                          width=None if tty else 1000, soft_wrap=not tty)
    s = plan.settings
    hw, par = s.get("hardware", {}), s.get("parallel", {})
    console.print(f"[bold]plan[/] {plan.spec_name}  ({len(plan.jobs)} jobs)  "
                  f"hardware: {hw.get('count', 1):,} × {hw.get('gpu', '?')} at {hw.get('mfu', 0):.0%} MFU, "
                  f"layout TP{par.get('tensor', 1)} PP{par.get('pipeline', 1)} CP{par.get('context', 1)} "
                  f"DP{par.get('data', 1)}{' FSDP' if par.get('fsdp') else ''}")

    models = Table(title="models", title_justify="left", show_edge=False)
    for col in ("model", "params", "layers", "dim", "heads/kv", "ffn", "vocab", "context", "tied"):
        models.add_column(col, justify="right" if col not in ("model",) else "left")
    for name, m in plan.models.items():
        models.add_row(name, f"{m['params']:,}", str(m["layers"]), f"{m['dim']:,}", f"{m['heads']}/{m['kv_heads']}",
                       f"{m['ffn_dim']:,}", f"{m['vocab_size']:,}", f"{m['max_context']:,}",
                       "yes" if m["tied_embeddings"] else "no")
    console.print(models)

    if plan.stages:
        stages = Table(title="stages", title_justify="left", show_edge=False)
        for col in ("stage", "model", "tokens", "steps", "FLOPs (6ND)", "+attention", "mem/GPU", "KV cache", "time"):
            stages.add_column(col, justify="left" if col in ("stage", "model") else "right")
        for name, st in plan.stages.items():
            mem = st.get("memory_per_gpu", {}).get("total")
            wall = st.get("wall_clock_seconds")
            unknown = st.get("kind") == "posttrain"  # sized by its datasets, read at run time
            loaded = st.get("kind") in ("checkpoint", "evaluate")  # nothing trained here
            stages.add_row(
                name, st.get("model", ""), "—" if unknown else "" if loaded else f"{st.get('tokens', 0):,}", f"{st.get('steps', 0):,}" if st.get("steps") else "",
                humanize(st.get("flops", 0)) if st.get("flops") else "",
                humanize(st.get("flops_attention", 0)) if st.get("flops_attention") else "",
                humanize(mem, "B") if mem else "", humanize(st["kv_cache_bytes"], "B") if st.get("kv_cache_bytes") else "",
                humanize_duration(wall) if wall else "",
            )
        console.print(stages)
        for name, st in plan.stages.items():
            if st.get("kind") == "checkpoint":
                console.print(f"  {name}: a checkpoint made elsewhere, loaded from {escape(st['path'])} and checked "
                              f"against model '{st['model']}'; context {st['context']:,}")
            if st.get("kind") == "evaluate":
                console.print(f"  {name}: evaluates {st['from']} ({', '.join(st['evals'])}); nothing is trained")
            if st.get("kind") == "posttrain":
                console.print(f"  {name}: post-training, {st['rounds']} round{'s' * (st['rounds'] != 1)}; "
                              "its tokens, steps and time follow from its datasets' size, known when it runs")
            if "compute_optimal_params" in st:
                console.print(f"  {name}: scaling law (alpha={st['law']['alpha']:.3g}, A={st['law']['A']:.3g}) → compute-optimal "
                              f"{humanize(st['compute_optimal_params'])} params on {humanize(st['compute_optimal_tokens'])} tokens "
                              f"for {humanize(st['flops'])} FLOPs (declared: {humanize(st['params'])} params)")
            if "forecast" in st:
                f = st["forecast"]
                console.print(f"  {name}: forecast {f['eval']} accuracy {f['accuracy']:.1%} "
                              f"(answer NLL {f['nll']:.3f}) at {humanize(st['flops'])} FLOPs")
            elif "law_status" in st:
                console.print(f"  {name}: scaling law from sweep '{st['law_from']}' — {st['law_status']}")

    tree = Tree("[bold]jobs[/]")
    by_stage: dict[str, Any] = {}
    for job in plan:
        node = by_stage.get(job.stage)
        if node is None:
            node = by_stage[job.stage] = tree.add(f"[bold]{job.stage}[/]")
        state, reason = (states or {}).get(job.id, ("new", ""))
        tag = {"new": "[green]+ new[/]", "changed": "[yellow]~ changed[/]", "cached": "[dim]= cached[/]"}.get(state, state)
        line = f"{tag}  {escape(job.id)}  [dim]{job.kind}[/]"
        if job.description:  # paths in descriptions and reasons are text, never markup: `data[v3]`
            line += f" — {escape(job.description)}"
        if reason:
            line += f"  [yellow]({escape(reason)})[/]"
        node.add(line)
    console.print(tree)


def _mermaid_id(job_id: str) -> str:
    return job_id.replace(".", "_").replace("-", "_")


def render_mermaid(plan: Plan) -> str:
    lines = ["flowchart TD"]
    for job in plan:
        lines.append(f'  {_mermaid_id(job.id)}["{job.id}<br/><small>{job.kind}</small>"]')
    for job in plan:
        for role, dep in sorted(job.inputs.items()):
            lines.append(f"  {_mermaid_id(dep)} -->|{role}| {_mermaid_id(job.id)}")
    return "\n".join(lines)


def render_dot(plan: Plan) -> str:
    lines = [f'digraph "{plan.spec_name}" {{', "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    for job in plan:
        lines.append(f'  "{job.id}" [label="{job.id}\\n{job.kind}"];')
    for job in plan:
        for role, dep in sorted(job.inputs.items()):
            lines.append(f'  "{dep}" -> "{job.id}" [label="{role}"];')
    lines.append("}")
    return "\n".join(lines)
