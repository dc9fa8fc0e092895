"""The `herd` command line.

Exit codes: 0 success, 1 a problem in the spec, plan or run, 2 bad usage. Nothing a
user can type ends in a Python traceback: HerdError, PlanError and the runtime's
user-facing errors are rendered as diagnostics. `check`, `compile` and `fmt` never
import torch (tests assert it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herdlang import cli_paths
from herdlang.cli_paths import UsageError
from herdlang.diagnostics import HerdError, render, render_all
from herdlang.version import HERD_VERSION

if TYPE_CHECKING:
    from compiler.plan import Plan

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2


def _color(stream) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


def _print_diags(exc: HerdError, sources: dict[str, str] | None = None) -> None:
    srcs = dict(sources or {})
    for d in exc.diagnostics:
        if d.span and d.span.path not in srcs:
            try:
                srcs[d.span.path] = Path(d.span.path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                pass
    print(render_all(exc.diagnostics, srcs, color=_color(sys.stderr)), file=sys.stderr)
    errors = sum(1 for d in exc.diagnostics if d.severity.value == "error")
    print(f"\n{errors} error{'s' if errors != 1 else ''}", file=sys.stderr)


# -- commands ---------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from compiler import compile_with_warnings
    from herdlang.spec import load_spec

    try:
        spec = load_spec(args.spec, args.set)
        plan, warnings = compile_with_warnings(spec)
    except HerdError as exc:
        if args.format != "json":
            raise
        # machine readers (CI annotations, editors without the LSP) get JSON either way, with
        # the same keys: every diagnostic (errors and warnings) with its location, and the
        # warnings as one-line texts
        print(json.dumps({"ok": False, "diagnostics": [d.to_json() for d in exc.diagnostics],
                          "warnings": []}))
        return EXIT_SPEC
    # located warnings as errors are shown (source line, caret, hint); the rest one a line
    for d in warnings:
        print(render(d, spec.sources, color=_color(sys.stderr)) + "\n", file=sys.stderr)
    for w in plan.warnings[len(warnings):]:
        print(w if "warning[" in w else f"warning: {w}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps({"ok": True, "diagnostics": [d.to_json() for d in warnings],
                          "warnings": plan.warnings}))
    else:
        blocks, jobs = len(spec.order), len(plan.jobs)
        print(f"{args.spec}: ok ({blocks} block{'s' * (blocks != 1)}, {jobs} job{'s' * (jobs != 1)})")
    return EXIT_OK


def _refuse_overwriting_a_source(sources: dict[str, str], targets: list[Path]) -> None:
    """`-o` naming the spec (or a file it imports) would replace it with the plan: refuse."""
    read = {Path(name).resolve() for name in sources if not name.startswith("<")}
    for target in targets:
        if target.resolve() in read:
            raise UsageError(f"-o {target} is a spec file this plan is compiled from; writing the plan "
                             "there would replace it\nhint: write the plan to another file, e.g. -o plan.json")


def cmd_compile(args: argparse.Namespace) -> int:
    from compiler import compile_file
    from compiler.render import render_dot, render_mermaid, render_text

    if args.target != "slurm":
        if args.partition is not None or args.time is not None:
            raise UsageError(f"{'--partition' if args.partition is not None else '--time'} applies to "
                             "--target slurm only")
    elif args.format is not None:
        raise UsageError("--format does not apply to --target slurm, which writes plan.json, "
                         "one sbatch script per job and submit.sh")
    runs_dir = cli_paths.runs_dir(args.runs_dir)
    output = cli_paths.output_file(args.output) if args.output and args.target != "slurm" else None
    spec, plan = compile_file(args.spec, args.set)
    cli_paths.runs_dir(args.runs_dir, plan.spec_name)
    _bind_fitted_laws(plan, runs_dir)
    if output is not None:
        _refuse_overwriting_a_source(spec.sources, [output])
    if args.target == "slurm":
        from compiler.slurm import write_slurm

        out = cli_paths.output_folder(Path(args.output or f"slurm-{plan.spec_name}"), "the Slurm scripts")
        _refuse_overwriting_a_source(spec.sources, [out / "plan.json", out / "submit.sh",
                                                    *(out / f"{job}.sbatch" for job in plan.jobs)])
        try:
            paths = write_slurm(plan, out, partition=args.partition, runs_dir=args.runs_dir, time=args.time)
        except OSError as exc:
            raise UsageError(f"cannot write the Slurm scripts to {out}: {exc.strerror or exc}") from None
        print(f"wrote plan.json, {len(paths)} sbatch scripts and submit.sh to {out}/ (run: bash {shlex.quote(str(out / 'submit.sh'))})")
        return EXIT_OK
    fmt = args.format or "text"

    def rendered(fmt: str) -> str:
        """The plan in `fmt`, as text without colour (for a file, or stdout off the text view)."""
        if fmt == "json":
            return plan.dumps()
        if fmt == "dot":
            return render_dot(plan) + "\n"
        if fmt == "mermaid":
            return render_mermaid(plan) + "\n"
        buf = io.StringIO()  # render_text prints to sys.stdout
        with contextlib.redirect_stdout(buf):
            render_text(plan, color=False, states=_states(plan, runs_dir))
        return buf.getvalue()

    if output is not None:
        # -o writes the chosen format; without --format, the plan JSON (and the text view to stdout)
        cli_paths.write_file(output, rendered(args.format or "json"))
    if output is None or args.format is None:
        if fmt == "text":
            render_text(plan, color=_color(sys.stdout), states=_states(plan, runs_dir))
        else:
            sys.stdout.write(rendered(fmt))
    for w in plan.warnings:
        print(w if "warning[" in w else f"warning: {w}", file=sys.stderr)
    if output is not None:
        what = "plan" if args.format in (None, "json") else f"plan ({args.format})"
        print(f"{what} written to {output}", file=sys.stderr)
    return EXIT_OK


def _bind_fitted_laws(plan, runs_dir: Path) -> None:
    """`law = SWEEP`: once the sweep's fit has run, report its compute-optimal figures.

    The fit's `law.json` sits in the store under the fit job's fingerprint, so a plain
    file read suffices (no runtime import); before the sweep runs, the stage says so.
    """
    from compiler.estimates import compute_optimal, forecast_accuracy

    for stage in plan.stages.values():
        sweep = stage.get("law_from")
        if not sweep:
            continue
        fit = plan.jobs.get(f"scaling.{sweep}.fit")
        law_file = runs_dir / plan.spec_name / "store" / (fit.fingerprint if fit else "-") / "law.json"
        try:
            law = json.loads(law_file.read_text(encoding="utf-8"))
            alpha, a = float(law["alpha"]), float(law["A"])
        except (OSError, ValueError, KeyError, TypeError):
            stage["law_status"] = f"pending: run the sweep ({fit.id if fit else sweep}) to fit it"
            continue
        if law.get("determined") is False:  # every optimum at the grid's edge: α and A are the grid's
            stage["law_status"] = ("not determined: every budget's optimum lies at the edge of the sweep's "
                                   "sizes; hint: add smaller or larger models to the sweep and run it again")
            continue
        opt = compute_optimal(stage["flops"], alpha, a)
        stage.update({"law": {"alpha": alpha, "A": a, "from": sweep}, "compute_optimal_tokens": opt["tokens"],
                      "compute_optimal_params": opt["params"]})
        if isinstance(law.get("forecast"), dict):
            try:
                stage["forecast"] = {"eval": law["forecast"].get("eval"),
                                     **forecast_accuracy(stage["flops"], law["forecast"])}
            except (KeyError, TypeError, ValueError):
                pass  # a law.json from an older fit: the law still applies, the forecast does not


def _states(plan, runs_dir: Path) -> dict[str, tuple[str, str]] | None:
    """new / changed / cached per job, when this spec has been run before (no torch)."""
    run_dir = runs_dir / plan.spec_name
    if not run_dir.exists():
        return None
    from runtime.executor.diff import plan_diff

    out = {}
    for d in plan_diff(plan, run_dir):
        reason = "; ".join(d.reasons()[:3])
        out[d.job_id] = (d.state, reason)
    return out


def cmd_fmt(args: argparse.Namespace) -> int:
    """Format each file in turn: one that cannot be read or parsed is reported and the
    others are still formatted (or checked); the exit code says the worst that happened."""
    from herdlang.formatter import format_text
    from herdlang.parser import read_source

    status, errors = EXIT_OK, 0
    for name in args.specs:
        path = Path(name)
        text = ""
        try:
            text = read_source(path)  # H0001 with the same words and hint as `herd check`
            formatted = format_text(text, str(path))
        except HerdError as exc:
            srcs = {str(path): text} if text else {}
            gap = "\n" if errors else ""  # a blank line between files, as between diagnostics
            print(gap + render_all(exc.diagnostics, srcs, color=_color(sys.stderr)), file=sys.stderr)
            errors += sum(1 for d in exc.diagnostics if d.severity.value == "error")
            status = max(status, EXIT_SPEC)
            continue
        if args.check:
            if formatted != text:
                print(f"{path}: would be reformatted", file=sys.stderr)
                status = max(status, EXIT_SPEC)
        elif args.write:
            if formatted != text:
                try:
                    _replace_text(path, formatted)
                except UsageError as exc:
                    print(f"herd: error: {exc}", file=sys.stderr)
                    status = EXIT_USAGE
                    continue
                print(f"reformatted {path}", file=sys.stderr)
        else:
            sys.stdout.write(formatted)
    if errors:
        print(f"\n{errors} error{'s' if errors != 1 else ''}", file=sys.stderr)
    return status


def _replace_text(path: Path, text: str) -> None:
    """Rewrite a spec in place, atomically, as it was kept: through a symlink (the link
    stays a link), with its permissions, its line endings (CRLF stays CRLF, CR stays CR:
    the text read has `\\n` for either) and its UTF-8 BOM if it had one."""
    from herdlang.parser import as_written

    try:  # (a regular file of a spec's size: read_source checked it)
        raw = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    cli_paths.write_file(path, as_written(text, raw))


def _load_plan(target: str, overrides: list[str] | None):
    from compiler import Plan, compile_file

    if target.endswith(".json"):
        if overrides:
            raise UsageError("--set applies to specs, not saved plans (a saved plan runs exactly as compiled)")
        return Plan.load(target)
    return compile_file(target, overrides)[1]


def _run_console():
    """The console for `herd run`: off a terminal, lines are never wrapped or cut at 80 columns."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(soft_wrap=True)


def cmd_run(args: argparse.Namespace) -> int:
    cli_paths.runs_dir(args.runs_dir)
    plan = _load_plan(args.target, args.set)
    run_dir = cli_paths.runs_dir(args.runs_dir, plan.spec_name) / plan.spec_name
    for flag, names in (("--only", args.only), ("--from", [args.from_] if args.from_ else []),
                        ("--force", args.force)):
        for name in names or []:
            if name not in plan.jobs:  # with `herd path`'s hint (a stage lists its jobs)
                raise _unknown_job(plan, name, f"{flag} {name}")
    if (args.nproc and args.nproc > 1) or (args.nnodes and args.nnodes > 1):
        for key in ("nproc", "nnodes"):
            if getattr(args, key) and getattr(args, key) > 1:
                plan.settings = {**plan.settings, key: getattr(args, key)}
        from compiler.slurm import DISTRIBUTED_KINDS  # the kinds launched under torchrun

        named = [plan.jobs[j] for j in (args.only or plan.jobs) if j in plan.jobs]
        if not any(job.kind in DISTRIBUTED_KINDS for job in named):
            asked = " ".join(f"--{k} {getattr(args, k)}" for k in ("nproc", "nnodes") if (getattr(args, k) or 1) > 1)
            print(f"note: {asked} applies to {', '.join(DISTRIBUTED_KINDS)} jobs, and none "
                  "is selected; the others run in one process", file=sys.stderr)
    if args.device:
        plan.settings = {**plan.settings, "device": args.device}
    from runtime.executor import ExecutorError, run_plan

    if not args.dry_run:
        _device_option(plan.settings.get("device"))  # fail before any job runs, not at the first training job

    try:
        result = run_plan(
            plan, run_dir, only=args.only or None, from_=args.from_, dry_run=args.dry_run,
            workers=args.workers or int(plan.settings.get("workers", 1)), force=args.force or None,
            verify=args.verify, console=_run_console(),
        )
    except ExecutorError as exc:
        raise UsageError(str(exc)) from None
    return int(result.exit_code)


def _unknown_job(plan: Plan, name: str, where: str) -> UsageError:
    """A job name the plan lacks (`herd path JOB`, `herd run --only/--from/--force JOB`),
    with a hint: a stage's name lists its jobs, a typo gets the closest ids."""
    import difflib

    in_stage = [j.id for j in plan if j.stage == name]
    if in_stage:
        hint = f"'{name}' is a stage; its jobs: {', '.join(in_stage)}"
    else:
        close = difflib.get_close_matches(name, list(plan.jobs), n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else "`herd compile SPEC` lists every job"
    return UsageError(f"{where}: no job '{name}' in the plan\nhint: {hint}")


def _same_plan(args: argparse.Namespace) -> list[str]:
    """The arguments that select the plan and its runs (target, every --set, a --runs-dir
    other than the default), for a hint's command that must act on that same plan."""
    again = [args.target, *(x for s in args.set for x in ("--set", s))]
    return again + (["--runs-dir", args.runs_dir] if args.runs_dir != "runs" else [])


def cmd_path(args: argparse.Namespace) -> int:
    """Where each named job's artifact lives (or will): RUNS_DIR/SPEC/store/FINGERPRINT."""
    cli_paths.runs_dir(args.runs_dir)
    plan = _load_plan(args.target, args.set)
    store = cli_paths.runs_dir(args.runs_dir, plan.spec_name) / plan.spec_name / "store"
    for name in args.jobs:
        job = plan.jobs.get(name)
        if job is None:
            raise _unknown_job(plan, name, args.target)
        entry = store / job.fingerprint
        print(entry)
        if not (entry / "manifest.json").is_file():
            # quoted for a shell: a spec or runs folder may have spaces or `$(...)` in its name
            print(f"note: {name} has not run with this configuration yet; "
                  f"hint: {shlex.join(['herd', 'run', *_same_plan(args), '--only', name])}", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """What the spec's run is doing, from its status file: for a run in another terminal,
    on another node, or one that ended. Reads no spec beyond its name (it may be mid-edit)."""
    from rich.live import Live

    from runtime.executor.status import liveness, read_status, render_status

    cli_paths.runs_dir(args.runs_dir)
    if args.target.endswith(".json"):
        from compiler import Plan

        name = Plan.load(args.target).spec_name
    else:
        from compiler.lower import run_folder_name

        name = run_folder_name(Path(args.target).stem)
    run_dir = cli_paths.runs_dir(args.runs_dir, name) / name
    status = read_status(run_dir, strict=True)
    if args.json:  # for scripts and monitors: the file as written, with whether its run is alive
        alive = liveness(status, run_dir) if status is not None else "none"
        print(json.dumps({**(status or {}), "liveness": alive}, indent=1, sort_keys=True))
        return EXIT_OK
    if status is None and not Path(args.target).exists():
        raise UsageError(f"no such file: {args.target}, and no run of {name} in {run_dir}\n"
                         "hint: name the spec (or the plan.json) the run was started from")
    if status is None:
        print(f"no run of {name} has started in {run_dir}; hint: herd run {args.target}"
              + (f" --runs-dir {args.runs_dir}" if args.runs_dir != "runs" else ""))
        return EXIT_OK
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=160)  # a table is not cut to 80 columns
    alive = liveness(status, run_dir)
    if not args.watch or alive != "running":
        console.print(render_status(status, alive, run_dir=run_dir))
        return EXIT_OK
    import time

    with Live(render_status(status, "running", run_dir=run_dir), console=console, refresh_per_second=1) as live:
        while True:
            time.sleep(args.interval)
            status = read_status(run_dir) or status
            alive = liveness(status, run_dir)
            live.update(render_status(status, alive, run_dir=run_dir))
            if alive != "running":
                return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    """List (default) or delete (--yes) what the spec's current plan no longer uses."""
    from compiler.estimates import humanize
    from runtime.executor import ExecutorError
    from runtime.executor.gc import collect, find_garbage
    from runtime.executor.origins import other_specs, shared_message

    cli_paths.runs_dir(args.runs_dir)
    plan = _load_plan(args.target, args.set)
    run_dir = cli_paths.runs_dir(args.runs_dir, plan.spec_name) / plan.spec_name
    if not run_dir.is_dir():
        print(f"{run_dir}: no runs yet, nothing to collect")
        return EXIT_OK
    others = other_specs(run_dir, plan)
    if others and not args.yes:  # --yes refuses with the same words
        print(f"warning: {shared_message(run_dir, others)}", file=sys.stderr)
    try:
        garbage = collect(plan, run_dir) if args.yes else find_garbage(plan, run_dir)
    except ExecutorError as exc:
        raise UsageError(str(exc)) from None
    if not garbage:
        print(f"{run_dir}: nothing to collect (every artifact belongs to the current plan)")
        return EXIT_OK
    names = {"artifact": "artifact", "work": "work dir", "temp": "temp dir", "log": "log",
             "metrics": "metrics file", "report": "report folder", "cache": "score cache",
             "tensorboard": "TensorBoard folder"}
    shown = garbage[: None if args.verbose else 15]
    width = max(len(what) for what in [*names, *(g.what for g in shown)])  # "tensorboard" fits
    for g in shown:
        print(f"  {g.what:<{width}} {humanize(g.bytes, 'B'):>9}  {g.job:<40} {g.path}")
    if len(garbage) > 15 and not args.verbose:
        print(f"  ... and {len(garbage) - 15} more (--verbose lists all)")
    counts: dict[str, int] = {}
    for g in garbage:
        counts[g.what] = counts.get(g.what, 0) + 1
    summary = ", ".join(f"{n} {names[what]}{'' if n == 1 else 's'}" for what, n in sorted(counts.items()))
    total = humanize(sum(g.bytes for g in garbage), "B")
    if args.yes:
        print(f"deleted {summary}: {total} freed")
    else:
        # the same selection: every --set and --runs-dir the user gave, quoted for a shell
        print(f"{summary}: {total} not used by the current plan of {args.target}\n"
              f"nothing deleted; run `herd gc {shlex.join(_same_plan(args))} --yes` to delete it "
              "(changing a setting back will then re-run its jobs)")
    return EXIT_OK


def cmd_lsp(args: argparse.Namespace) -> int:
    from herdlang.editor.lsp import main as lsp_main

    lsp_main()
    return EXIT_OK


def _tokenizer_option(args: argparse.Namespace) -> None:
    """An explicit --tokenizer must be one: a wrong folder is a usage error, never ignored."""
    if args.tokenizer and not cli_paths.is_tokenizer(args.tokenizer):
        raise UsageError(f"--tokenizer {args.tokenizer}: not a herd tokenizer artifact (no tokenizer.json "
                         "with a tokenizer.model beside it)\nhint: pass the output folder of a "
                         "tokenizer.train or tokenizer.load job (`herd path SPEC tokenizer.NAME`), "
                         "or leave --tokenizer out to use the checkpoint's own")


@contextlib.contextmanager
def _weights_bar(what: str, total: int) -> Any:
    """A bar on stderr over `total` bytes of weight passes (an 8B model is a minute of
    them), gone when done; nothing on a pipe or a file, so scripts read plain output."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda n: None
        return
    with Progress(TextColumn(what), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(what, total=total or None)
        yield lambda n: bar.advance(task, n)


def cmd_export(args: argparse.Namespace) -> int:
    cli_paths.model_checkpoint(args.checkpoint)
    from runtime.data.tokenizer import checkpoint_tokenizer, load_tokenizer
    from runtime.model import export_hf
    from runtime.model.checkpoint import OutputExistsError, read_meta, weights_path

    _tokenizer_option(args)
    meta = read_meta(args.checkpoint)
    tokenizer = checkpoint_tokenizer(Path(args.checkpoint), meta, args.tokenizer)
    if tokenizer is not None:
        load_tokenizer(tokenizer)  # a damaged one is refused before the weights are read
    # the bar's total is the file's own size: meta.json's record of it is checked by the
    # loader (`verify_weights`, as for `herd generate`), which says what is wrong
    weights = weights_path(Path(args.checkpoint), meta)
    size = weights.stat().st_size if weights.is_file() else 0
    try:
        with _weights_bar("exporting", 3 * size) as on_bytes:
            export_hf(args.checkpoint, args.output, force=args.force, tokenizer_dir=tokenizer, on_bytes=on_bytes)
    except OutputExistsError as exc:
        raise UsageError(str(exc)) from None
    print(f"exported {args.checkpoint} to {args.output} (Hugging Face Llama layout"
          + (f", tokenizer from {tokenizer})" if tokenizer else ", no tokenizer)"))
    if tokenizer is None:
        print("note: no tokenizer found for this checkpoint, so none was exported; "
              "hint: pass --tokenizer DIR (its tokenizer.* job's output folder)", file=sys.stderr)
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    if args.blocks:
        if args.output is not None or args.force or args.no_tokenizer:
            raise UsageError("--blocks prints spec blocks and writes nothing: it takes no -o, --force "
                             "or --no-tokenizer")
        from runtime.model.hf_folder import check_weights
        from runtime.model.spec_blocks import describe_folder

        blocks = describe_folder(args.hf_dir, args.name)
        # weights herd cannot read are refused, as `-o` refuses them; a file cut short is warned of
        for warning in check_weights(Path(args.hf_dir)):
            print(f"warning: {warning}", file=sys.stderr)
        print(blocks, end="")
        return EXIT_OK
    if args.name:
        raise UsageError("--name goes with --blocks")
    if not args.output:
        raise UsageError("herd import needs -o CKPT (the checkpoint folder to write), or --blocks")
    from runtime.model import import_hf
    from runtime.model.checkpoint import OutputExistsError, read_meta
    from runtime.model.hf_folder import HF_TOKENIZER_PLACES, weight_bytes

    try:
        with _weights_bar("importing", 3 * weight_bytes(Path(args.hf_dir))) as on_bytes:
            import_hf(args.hf_dir, args.output, force=args.force, tokenizer=not args.no_tokenizer,
                      on_bytes=on_bytes)
    except OutputExistsError as exc:
        raise UsageError(str(exc)) from None
    extra = read_meta(args.output).get("extra") or {}
    source = (extra.get("tokenizer") or {}).get("from")
    print(f"imported {args.hf_dir} into herd checkpoint {args.output}"
          + (f" (tokenizer from {source})" if source else " (weights only, no tokenizer)"))
    if not source:
        why = ("--no-tokenizer" if args.no_tokenizer
               else f"{args.hf_dir} has no {' or '.join(HF_TOKENIZER_PLACES)}")
        print(f"note: no tokenizer imported ({why}); hint: pass --tokenizer DIR to herd generate "
              "and herd chat (a tokenizer.* job's output folder)", file=sys.stderr)
    return EXIT_OK


def _device_option(device: str | None) -> None:
    """`--device cuda` without a GPU, or a runtime switch (HERD_KERNELS, HERD_ATTENTION,
    HERD_FUSE_PROJECTIONS) set to a value it does not take, is bad usage (exit 2), said
    before anything loads: the same for `herd run`, `herd generate` and `herd chat`."""
    from runtime.switches import SwitchError, check_all

    try:
        check_all()
    except SwitchError as exc:
        raise UsageError(str(exc)) from None
    if device != "cuda":
        return
    from runtime.jobs.context import JobFailed, resolve_device

    try:
        resolve_device("cuda")
    except JobFailed as exc:
        raise UsageError(str(exc)) from None


def cmd_generate(args: argparse.Namespace) -> int:
    if args.system is not None and not args.chat:
        raise UsageError("--system needs --chat (a raw completion has no system message)")
    cli_paths.model_checkpoint(args.checkpoint)
    _tokenizer_option(args)
    _device_option(args.device)
    from runtime.chat import generate_cli

    return generate_cli(args)


def cmd_chat(args: argparse.Namespace) -> int:
    cli_paths.model_checkpoint(args.checkpoint)
    _tokenizer_option(args)
    _device_option(args.device)
    from runtime.chat import chat_cli

    return chat_cli(args)


# -- parser -------------------------------------------------------------------------------------


def _slurm_time(text: str) -> str:
    """An argparse type: a time limit in one of Slurm's formats."""
    from compiler.slurm import MIN_TIME_SECONDS, REQUEUE_LEAD_SECONDS, TIME_FORMAT, time_seconds

    if not TIME_FORMAT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Slurm time limit: use minutes (90), H:M:S "
                                         "(12:00:00) or D-H:M:S (2-00:00:00)")
    if 0 < time_seconds(text) < MIN_TIME_SECONDS:  # 0 is Slurm's "no limit"
        raise argparse.ArgumentTypeError(
            f"{text!r} is shorter than {MIN_TIME_SECONDS // 60} minutes: a job is told to stop "
            f"{REQUEUE_LEAD_SECONDS // 60} minutes before its limit, which would leave it no time to work")
    return text


def _slurm_partition(text: str) -> str:
    """An argparse type: a partition name (or a comma-separated list), written into #SBATCH lines."""
    from compiler.slurm import PARTITION_FORMAT

    if not PARTITION_FORMAT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Slurm partition name: letters, digits, "
                                         "'_', '.', '-', or several separated by commas")
    return text


def _output_path(text: str) -> str:
    """An argparse type for -o: an empty path would mean the current folder (Path('') is
    '.'), or for `compile` no file at all; neither is what the user typed, so it is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names nothing to write (hint: name a file or "
                                         "folder, e.g. -o out)")
    return text


def _folder_path(text: str) -> str:
    """An argparse type for --runs-dir and --tokenizer: an empty value would silently mean
    the current folder (or, for --tokenizer, no tokenizer at all)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names no folder (hint: leave the option out "
                                         "for its default)")
    return text


def _at_least(low: int):
    """An argparse type: an integer >= low, else a usage error naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _between(low: float, high: float, *, low_open: bool = False, integer: bool = False):
    """An argparse type: a finite number in [low, high] (or (low, high]), else a usage error."""

    def parse(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if integer else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value) or value > high or (value <= low if low_open else value < low):
            def show(v: float) -> str:
                return str(int(v)) if integer else f"{v:g}"

            bounds = f"{'above' if low_open else 'at least'} {show(low)}" + (
                f" and at most {show(high)}" if math.isfinite(high) else "")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="herd", description="One spec for a whole Llama-3-style model family.")
    p.add_argument("--version", action="version", version=f"herd {HERD_VERSION}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def with_set(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--set", action="append", default=[], metavar="BLOCK.KEY=VALUE",
                        help="override a value (validated like the spec), e.g. --set base.tokens=2M")

    def sampling(sp: argparse.ArgumentParser, max_new_tokens: int) -> None:
        sp.add_argument("--max-new-tokens", type=_at_least(1), default=max_new_tokens,
                        help=f"at most this many tokens per reply (>= 1, default {max_new_tokens})")
        sp.add_argument("--temperature", type=_between(0, math.inf), default=0.7,
                        help=">= 0; 0 = greedy (default 0.7)")
        sp.add_argument("--top-p", type=_between(0, 1, low_open=True), default=0.95,
                        help="nucleus sampling, 0 < P <= 1; 1 = off (default 0.95)")
        sp.add_argument("--top-k", type=_at_least(0), default=0, help="sample from the K likeliest; 0 = no limit")
        sp.add_argument("--tokenizer", default=None, type=_folder_path, help="tokenizer folder (default: the checkpoint's own)")
        sp.add_argument("--seed", type=_between(0, 2**63 - 1, integer=True), default=0,
                        help="sampling seed (default 0)")
        sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the model runs (auto: CUDA when there is one)")

    c = sub.add_parser("check", help="diagnostics only (exit 0 clean, 1 spec errors, 2 usage)")
    c.add_argument("spec")
    c.add_argument("--format", choices=["text", "json"], default="text")
    with_set(c)
    c.set_defaults(fn=cmd_check)

    c = sub.add_parser("compile", help="compile a spec to a plan: jobs, why they run, estimates")
    c.add_argument("spec")
    c.add_argument("-o", "--output", metavar="PATH", type=_output_path,
                   help="write the chosen --format here (the plan JSON without --format; the text view "
                        "then still goes to stdout); with --target slurm, the folder (default slurm-SPEC/)")
    c.add_argument("--format", choices=["text", "json", "dot", "mermaid"], default=None)
    c.add_argument("--runs-dir", default="runs", type=_folder_path, help="where runs live (to say new/changed/cached)")
    c.add_argument("--target", choices=["local", "slurm"], default="local",
                   help="slurm: write plan.json and sbatch scripts chained with afterok into -o DIR")
    c.add_argument("--partition", default=None, type=_slurm_partition, help="Slurm partition for --target slurm")
    c.add_argument("--time", default=None, type=_slurm_time, metavar="LIMIT",
                   help="Slurm time limit per job for --target slurm (2-00:00:00, 12:00:00, 90); a job "
                        "stops two minutes before it and requeues itself, resuming from its checkpoint")
    with_set(c)
    c.set_defaults(fn=cmd_compile)

    c = sub.add_parser("fmt", help="format specs canonically (comments kept)")
    c.add_argument("specs", nargs="+")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if a file would change")
    g.add_argument("--write", action="store_true", help="rewrite files in place")
    c.set_defaults(fn=cmd_fmt)

    c = sub.add_parser("run", help="run a spec or a saved plan")
    c.add_argument("target", help="a .herd spec or a plan .json from `herd compile -o`")
    c.add_argument("--only", action="append", metavar="JOB", help="run only this job (and what it needs)")
    c.add_argument("--from", dest="from_", metavar="JOB", help="re-run this job and everything after it")
    c.add_argument("--force", action="append", metavar="JOB", help="re-run this job even if cached")
    c.add_argument("--dry-run", action="store_true", help="show what would run: new / changed / cached")
    c.add_argument("--verify", action="store_true", help="re-hash stored artifacts before trusting them")
    c.add_argument("--workers", type=_at_least(1), default=None, help="processes for data jobs")
    c.add_argument("--nproc", type=_at_least(1), default=None,
                   help="processes per node for each training job (torchrun)")
    c.add_argument("--nnodes", type=_at_least(1), default=None,
                   help="nodes for each training job, inside a Slurm allocation (srun starts torchrun on each)")
    c.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    c.add_argument("--runs-dir", default="runs", type=_folder_path, help="where runs live: RUNS_DIR/SPEC/ (default runs)")
    with_set(c)
    c.set_defaults(fn=cmd_run)

    c = sub.add_parser("path", help="print where jobs' artifacts live (e.g. a checkpoint to "
                                    "export or chat with)")
    c.add_argument("target", help="a .herd spec or a plan .json")
    c.add_argument("jobs", nargs="+", metavar="JOB", help="job ids, as `herd compile` lists them")
    c.add_argument("--runs-dir", default="runs", type=_folder_path, help="where runs live: RUNS_DIR/SPEC/ (default runs)")
    with_set(c)
    c.set_defaults(fn=cmd_path)

    c = sub.add_parser("status", help="what a run of the spec is doing (from another shell or node) or how it ended")
    c.add_argument("target", help="a .herd spec or a plan .json")
    c.add_argument("--runs-dir", default="runs", type=_folder_path, help="where runs live: RUNS_DIR/SPEC/ (default runs)")
    c.add_argument("--watch", action="store_true", help="keep showing it until the run ends (Ctrl-C to leave)")
    c.add_argument("--json", action="store_true",
                   help="print the status as JSON, with `liveness`: running, ended, stopped or none")
    c.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    c.set_defaults(fn=cmd_status)

    c = sub.add_parser("gc", help="list (or --yes: delete) artifacts the current plan no longer uses")
    c.add_argument("target", help="a .herd spec or a plan .json")
    c.add_argument("--yes", action="store_true", help="delete (default: only list)")
    c.add_argument("--verbose", action="store_true", help="list every item (default: the first 15)")
    c.add_argument("--runs-dir", default="runs", type=_folder_path, help="where runs live: RUNS_DIR/SPEC/ (default runs)")
    with_set(c)
    c.set_defaults(fn=cmd_gc)

    c = sub.add_parser("lsp", help="language server over stdio")
    c.set_defaults(fn=cmd_lsp)

    force_help = ("overwrite what is there: the files herd writes in a folder that holds others "
                  "(those are kept), or a file of that name; a herd run folder is refused even so")
    c = sub.add_parser("export", help="export a checkpoint (Hugging Face Llama layout)")
    c.add_argument("checkpoint")
    c.add_argument("-o", "--output", required=True, metavar="DIR", type=_output_path,
                   help="a new or empty folder")
    c.add_argument("--format", choices=["hf"], default="hf",
                   help="hf: config.json + model.safetensors for transformers' LlamaForCausalLM, "
                        "and the tokenizer (tokenizer.json, tokenizer_config.json, "
                        "generation_config.json) when one is found")
    c.add_argument("--tokenizer", metavar="DIR", type=_folder_path,
                   help="the tokenizer to export with it (default: the one inside the checkpoint "
                        "or named by its tokenizer_id in the same store)")
    c.add_argument("--force", action="store_true", help=force_help)
    c.set_defaults(fn=cmd_export)

    c = sub.add_parser("import", help="import a Hugging Face Llama checkpoint (and its tokenizer)")
    c.add_argument("hf_dir")
    c.add_argument("-o", "--output", metavar="CKPT", type=_output_path, help="a new or empty folder")
    c.add_argument("--force", action="store_true", help=force_help)
    c.add_argument("--no-tokenizer", action="store_true",
                   help="import the weights alone, leaving out the folder's tokenizer "
                        "(original/tokenizer.model or tokenizer.json)")
    c.add_argument("--blocks", action="store_true",
                   help="print the tokenizer, model and checkpoint blocks that describe the folder "
                        "(for a spec's `checkpoint` block; reads config.json and the tokenizer, "
                        "writes nothing)")
    c.add_argument("--name", default=None, help="with --blocks: the model block's name (default: "
                   "from the folder's name)")
    c.set_defaults(fn=cmd_import)

    c = sub.add_parser("generate", help="generate text from a checkpoint")
    c.add_argument("checkpoint")
    c.add_argument("--prompt", required=True)
    c.add_argument("--chat", action="store_true", help="wrap the prompt in the chat format")
    c.add_argument("--system", default=None, help="system message (with --chat)")
    sampling(c, max_new_tokens=128)
    c.set_defaults(fn=cmd_generate)

    c = sub.add_parser("chat", help="talk to a checkpoint (chat format, streaming)")
    c.add_argument("checkpoint")
    c.add_argument("--system", default=None, help="system message")
    sampling(c, max_new_tokens=256)
    c.set_defaults(fn=cmd_chat)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code = args.fn(args)
        if not sys.stdout.closed:  # the language server closes it on `exit`
            sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except HerdError as exc:
        _print_diags(exc, {"<--set>": "\n".join(getattr(args, "set", None) or [])})
        return EXIT_SPEC
    except BrokenPipeError:
        return _stdout_gone()
    except UsageError as exc:
        print(f"herd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted; finished work is kept — run again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        return _user_facing(exc)


def _stdout_gone() -> int:
    """The reader of stdout went away (`herd compile ... | head`): stop quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the final flush at exit cannot fail again
    except (OSError, ValueError):
        pass
    return EXIT_OK


def _user_facing(exc: Exception) -> int:
    """User errors from lower layers print their message; anything else is a bug report."""
    from herdlang.errors import UserError

    if isinstance(exc, UserError):
        print(f"herd: error: {exc}", file=sys.stderr)
        return EXIT_SPEC
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        print(f"herd: error: {exc}", file=sys.stderr)
        return EXIT_SPEC
    import traceback

    print("herd: internal error (this is a bug in herd, please report it):", file=sys.stderr)
    traceback.print_exc()
    return 3


def _json_default(o: Any) -> Any:  # pragma: no cover
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
