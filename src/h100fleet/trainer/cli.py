"""Command line of the trainer (what the systemd unit runs):

    python -m h100fleet.trainer --config /etc/h100fleet/trainer.yml     train (resume if a checkpoint exists)
    python -m h100fleet.trainer --config FILE --check                   validate the config and that it can resume
                                                                        its checkpoints (reads only): exit 0 or 78
    python -m h100fleet.trainer --print-defaults                        every field with its default

Exit codes: 0 finished or stopped by SIGTERM/SIGINT after a checkpoint; 1 runtime failure (restart resumes);
64 bad command line; 65 malformed dataset; 78 invalid config. 64, 65 and 78 belong in RestartPreventExitStatus.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from h100fleet.trainer import config, logs
from h100fleet.trainer.exitcodes import EX_CONFIG, EX_DATAERR, EX_FAILURE, EX_OK, EX_USAGE
from h100fleet.trainer.stop import StopBeforeTraining, StopRequest


class UsageParser(argparse.ArgumentParser):
    """argparse with the trainer's exit code for a bad command line (64, not restarted), for every entry point."""

    def error(self, message: str):  # argparse would exit 2
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EX_USAGE)


def parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="python -m h100fleet.trainer", description="bf16 LoRA trainer (unsloth or hf backend)")
    p.add_argument("--config", default=config.DEFAULT_CONFIG_PATH, help="YAML config (default: %(default)s)")
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the config, and that it can resume its checkpoints, and exit (0 valid, 78 invalid)",
    )
    p.add_argument(
        "--world-size",
        type=int,
        metavar="N",
        help="with --check: the number of processes torchrun will start (default: $WORLD_SIZE, else 1)",
    )
    p.add_argument("--print-defaults", action="store_true", help="print every field with its default and exit")
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="STEP",
        help="behave as if SIGTERM arrived once STEP optimizer steps are done (tests, benchmarks)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.print_defaults:
        sys.stdout.write(config.defaults_yaml())
        return EX_OK
    log = logs.setup()
    stop = StopRequest().install()
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        for issue in exc.issues:
            log.error("config error in %s: %s", args.config, issue)
        log.error("invalid config: exit %d (not restarted)", EX_CONFIG)
        return EX_CONFIG
    if args.check:
        return _check(cfg, args, log)

    return _train(cfg, stop, args, log)


def _check(cfg, args, log) -> int:
    """The config, and whether it can resume the checkpoints it would start from (read only: nothing is created,
    moved or hashed)."""
    import os

    from h100fleet.trainer import backends, dist, resume

    size = args.world_size or int(os.environ.get("WORLD_SIZE", "1") or 1)
    issues = dist.world_issues(cfg, size, backends.installed_version("unsloth"))
    for issue in issues:
        log.error("config error in %s: %s", args.config, issue)
    if issues:
        log.error("invalid config for %d processes: exit %d (not restarted)", size, EX_CONFIG)
        return EX_CONFIG
    found = resume.newest(cfg.checkpoint.dir)
    issues = resume.conflicts(cfg, found) if found else []
    for issue in issues:
        log.error("config error in %s: %s", args.config, issue)
    if issues:
        log.error("the config cannot resume the checkpoints: exit %d (not restarted)", EX_CONFIG)
        return EX_CONFIG
    strays = [] if found else resume.stray(cfg)
    if strays:
        log.warning("%s", resume.stray_message(cfg, strays))
    print(f"{args.config}: valid")
    return EX_OK


def _train(cfg, stop: StopRequest, args, log) -> int:
    from h100fleet.trainer import data, dist, train  # not needed by --check

    try:
        return train.run(cfg, stop, stop_after=args.stop_after)
    except StopBeforeTraining as exc:
        log.info("%s before training started: exiting without a checkpoint (nothing trained yet)", exc)
        _status(cfg, state="stopped")
        return EX_OK
    except config.ConfigError as exc:
        for issue in exc.issues:
            log.error("config error in %s: %s", args.config, issue)
        log.error("invalid config: exit %d (not restarted)", EX_CONFIG)
        _failed(cfg, f"config: {exc}")
        return EX_CONFIG
    except dist.WorldError as exc:
        log.error("torchrun environment: %s", exc)
        log.error("bad command line: exit %d (not restarted)", EX_USAGE)
        return EX_USAGE
    except data.DataError as exc:
        for line in str(exc).splitlines():
            log.error("data error: %s", line)
        log.error("malformed dataset: exit %d (not restarted)", EX_DATAERR)
        _failed(cfg, f"data: {str(exc).splitlines()[0]}")
        return EX_DATAERR
    except Exception as exc:
        log.exception("training failed: %s: %s", type(exc).__name__, exc)
        _failed(cfg, f"{type(exc).__name__}: {exc}")
        return EX_FAILURE


def _failed(cfg, message: str) -> None:
    _status(cfg, state="failed", error=message[:2000])


def _status(cfg, **fields) -> None:
    """Update the status file (best effort: the error may be that it cannot be written)."""
    import json
    from pathlib import Path

    from h100fleet.trainer.checkpoint import write_json_atomic
    from h100fleet.trainer.progress import now_iso

    path = Path(cfg.progress.status_file)
    try:
        status = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        status = {}
    status.update(**fields, updated_at=now_iso())
    with contextlib.suppress(OSError):
        write_json_atomic(path, status)
