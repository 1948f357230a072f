"""The training unit's entry point for more than one process: torchrun's own launcher, the trainer's exit codes kept.

    python -m h100fleet.trainer.launch --nproc-per-node 8 --config /etc/h100fleet/trainer.yml
    python -m h100fleet.trainer.launch --nproc-per-node 8 --nnodes 2 --rdzv-endpoint head:29400 --rdzv-id job-7 \\
        --config /etc/h100fleet/trainer.yml

It starts the workers with `torch.distributed.run` (torchrun: c10d rendezvous, one `python -m h100fleet.trainer`
per GPU, each on cuda:LOCAL_RANK). torchrun alone exits 1 for any worker failure, so a config that no restart can
fix would be restarted by systemd until its start limit. Here:

1. Before any worker starts, the trainer's `--check` runs in this process for the job's world size (nproc-per-node x
   nnodes): an invalid config, a world the stack's Unsloth cannot train, or a config that cannot resume the
   checkpoints exits 78, which the unit's RestartPreventExitStatus keeps from restarting.
2. The workers' outcome becomes the unit's exit code: 0 when every worker ended 0 (finished, or stopped after a
   checkpoint); a worker's no-restart code (64, 65, 78: exitcodes.NO_RESTART), the lowest rank's first, when one
   ended so; otherwise 1 (a crash or a killed rank: the restart resumes from the last checkpoint).
3. SIGTERM or SIGINT (systemctl stop) reaches torchrun, which sends it to every worker: all ranks finish the same
   step, rank 0 writes the checkpoint, each exits 0. torchrun waits at most 30 s for them (its own limit, fixed in
   torch) before it kills them; this process then exits 0.

torchrun's own restarts are off (`--max-restarts 0`): systemd restarts the job, so the restart limit, the delay and
the journal stay the unit's. NVLink multicast stays off in every worker (dist.GPU_ENV).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from h100fleet.trainer import cli, dist, logs
from h100fleet.trainer.exitcodes import EX_FAILURE, EX_OK, NO_RESTART


class _Stopped(BaseException):
    """SIGTERM/SIGINT before torchrun took over the signals: no worker has trained yet."""


def _stop(signum, _frame) -> None:
    raise _Stopped(signal.Signals(signum).name)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = cli.UsageParser(prog="python -m h100fleet.trainer.launch", description=__doc__.splitlines()[0])
    p.add_argument("--nproc-per-node", type=_positive, required=True, help="processes (GPUs) on this node")
    p.add_argument("--nnodes", type=_positive, default=1, help="nodes in the job (default 1)")
    p.add_argument("--rdzv-endpoint", default="", help="host:port of the c10d rendezvous (several nodes)")
    p.add_argument("--rdzv-id", default="", help="the job's id, the same on every node (several nodes)")
    p.add_argument("--config", required=True, help="the trainer's YAML config")
    p.add_argument("--stop-after", type=_positive, metavar="STEP", help="passed to the trainer (tests)")
    return p


def torchrun_argv(args: argparse.Namespace) -> list[str]:
    """torch.distributed.run's arguments for this job."""
    if args.nnodes == 1 and not args.rdzv_endpoint:
        # One node: the workers meet at 127.0.0.1 (torchrun would give them the host name, which not every node
        # resolves: seen in the test containers, where the workers retried the name forever).
        where = ["--standalone", "--local-addr", "127.0.0.1"]
    else:
        where = ["--nnodes", str(args.nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", args.rdzv_endpoint]
        where += ["--rdzv-id", args.rdzv_id]
    trainer = ["--config", args.config, *(["--stop-after", str(args.stop_after)] if args.stop_after else [])]
    nproc = ["--nproc-per-node", str(args.nproc_per_node)]
    return [*where, *nproc, "--max-restarts", "0", "-m", "h100fleet.trainer", *trainer]


def exit_code(worker_codes: dict[int, int]) -> int:
    """The unit's exit code for the workers' exit codes by global rank (negative: killed by that signal)."""
    for _rank, code in sorted(worker_codes.items()):
        if code in NO_RESTART:
            return code
    return EX_OK if all(code == EX_OK for code in worker_codes.values()) else EX_FAILURE


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.nnodes > 1 and not (args.rdzv_endpoint and args.rdzv_id):
        parser().error(f"--nnodes {args.nnodes} needs --rdzv-endpoint and --rdzv-id (the same on every node)")
    world = args.nproc_per_node * args.nnodes
    checked = cli.main(["--config", args.config, "--check", "--world-size", str(world)])
    if checked != EX_OK:
        return checked
    for name, value in dist.GPU_ENV.items():
        os.environ.setdefault(name, value)
    # Until torchrun installs its own handlers (when it starts the workers), a stop ends this process at once.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    log = logs.setup()
    log.info("starting %d processes on this node (world size %d) through torchrun", args.nproc_per_node, world)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(torchrun_argv(args)))
    except ChildFailedError as exc:
        codes = {rank: failure.exitcode for rank, failure in exc.failures.items()}
        code = exit_code(codes)
        log.error(
            "workers failed (exit codes by rank: %s): exit %d%s",
            codes,
            code,
            " (not restarted)" if code in NO_RESTART else "",
        )
        return code
    except SignalException as exc:
        log.info("%s: torchrun stopped the workers (each finishes its step, rank 0 checkpoints)", exc.sigval.name)
        return EX_OK
    except _Stopped as exc:
        log.info("%s before the workers started: exiting (nothing trained yet)", exc)
        return EX_OK
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
