"""One torchrun rank of a training job: `python -m runtime.train.worker --job-json FILE`.

Every rank rebuilds the JobContext the parent job wrote and calls the same registered job
function, so the distributed run executes exactly the single-process code path with
`Trainer` switching to sharded mode. Rank 0 keeps the real `out`, metrics file and a
progress file the parent tails; other ranks write nothing (their `out` is a scratch dir).
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from runtime.jobs.context import JobContext, JobFailed, Progress


def _progress_writer(path: Path) -> Progress:
    """Rank 0's progress, appended as JSON lines (at most ~5 per second) for the parent."""
    import time

    last = [0.0]

    def write(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and p.total is not None and p.done < p.total:
            return
        last[0] = now
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"unit": p.unit, "total": p.total, "done": p.done,
                                "info": p.info}, default=str) + "\n")

    return Progress(on_change=write)


def _exit_with_parent(pid: int) -> None:
    """End this rank when the job process that launched torchrun is gone (SIGKILLed with
    `herd run`): an orphaned rank would keep writing into the work directory that the
    re-run resumes from."""
    import os
    import threading
    import time

    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--job-json", required=True, type=Path)
    args = ap.parse_args(argv)
    job = json.loads(args.job_json.read_text())
    # the launching job process lives on the first node; ranks elsewhere cannot watch its
    # pid (srun's --kill-on-bad-exit and torchrun end them when it goes)
    if job.get("parent_pid") and job.get("parent_host", socket.gethostname()) == socket.gethostname():
        _exit_with_parent(int(job["parent_pid"]))
    from runtime.train.dist import use_cuda

    backend = "nccl" if use_cuda(job["settings"]) else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    if backend == "nccl":
        import os

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[rank {rank}] %(message)s")
    out = Path(job["out"])
    if rank != 0:
        out = Path(job["work"]) / "dist" / f"rank-{rank}-out"
        out.mkdir(parents=True, exist_ok=True)
    ctx = JobContext(
        job_id=job["job_id"], kind=job["kind"], stage=job["stage"], config=job["config"],
        inputs={k: Path(v) for k, v in job["inputs"].items()}, out=out, work=Path(job["work"]),
        run_dir=Path(job["run_dir"]), settings=job["settings"],
        log=logging.getLogger(f"herd.{job['job_id']}"),
        progress=_progress_writer(Path(job["progress_path"])) if rank == 0 else Progress(),
        metrics_path=Path(job["metrics_path"]) if rank == 0 and job["metrics_path"] else None,
        tensorboard_dir=Path(job["tensorboard_dir"]) if rank == 0 and job.get("tensorboard_dir") else None,
        fingerprint=job.get("fingerprint", ""))
    import runtime.jobs.train_jobs  # noqa: F401  (registers the kinds)
    from runtime.jobs.registry import get

    code, ok = 0, False
    try:
        get(ctx.kind)(ctx)
        ok = True
    except JobFailed as exc:
        # every rank records it: the first to fail ends the run, and torchrun may stop the
        # others (rank 0 too) before they get here; each writes whole, then renames
        error = Path(job["error_path"])
        tmp = error.with_name(f"{error.name}.rank-{rank}")
        tmp.write_text(str(exc))
        tmp.replace(error)
        print(f"[rank {rank}] {exc}", file=sys.stderr)
        code = 3
    finally:
        # a crashed rank must not wait in a barrier the others never reach: it exits and
        # torchrun stops the rest
        if ok:
            dist.barrier()
            # past the barrier every rank's work is written: the parent may trust the
            # outputs even if teardown below dies in C++ (gloo threads at exit)
            (Path(job["work"]) / "dist" / f"rank-{rank}.done").touch()
        dist.destroy_process_group()
    return code


def _exit_now(code: int) -> None:
    """Leave without interpreter finalisation: gloo's worker threads occasionally abort
    the process ("terminate called without an active exception") while C++ statics are
    destroyed, which turned finished runs into failures."""
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
