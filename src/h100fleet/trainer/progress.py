"""Progress reporting: the status file (JSON, replaced atomically), a metrics log (JSON lines), TensorBoard event
files when tensorboard is importable, and one log line per report."""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from h100fleet.trainer import logs
from h100fleet.trainer.checkpoint import write_json_atomic

log = logs.get("progress")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def now_iso_precise() -> str:
    """Now in UTC to the millisecond (ISO 8601 with +00:00), for timings."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Holds the status document; write() replaces the status file, report() also appends a metrics line, logs
    and adds TensorBoard scalars."""

    def __init__(self, cfg, status: dict[str, Any], enabled: bool = True):
        self.cfg = cfg
        self.enabled = enabled  # false on the ranks other than 0: one status file, one metrics file per job
        self.status_path = Path(cfg.progress.status_file)
        self.metrics_path = Path(cfg.progress.metrics_file)
        self.status: dict[str, Any] = {
            "state": "starting",
            "pid": os.getpid(),
            "started_at": now_iso(),
            "step": 0,
            "total_steps": None,
            "loss": None,
            "tokens_per_second": None,
            "eta_seconds": None,
            "last_checkpoint": None,
            "error": None,
            **status,
        }
        self.writer = None

    def open_tensorboard(self, start_step: int) -> None:
        if not self.enabled:
            return
        if not self.cfg.progress.tensorboard:
            log.info("tensorboard event files off (progress.tensorboard: false)")
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            log.info("tensorboard not importable (%s): event files skipped", exc)
            return
        # purge_step drops events a previous run wrote after the step this run resumes from.
        self.writer = SummaryWriter(log_dir=self.cfg.progress.tensorboard_dir, purge_step=start_step + 1)
        log.info("tensorboard event files in %s", self.cfg.progress.tensorboard_dir)

    def update(self, **fields: Any) -> None:
        self.status.update(fields)

    def write(self, **fields: Any) -> None:
        self.status.update(fields)
        self.status["updated_at"] = now_iso()
        if not self.enabled:
            return
        try:
            write_json_atomic(self.status_path, self.status)
        except OSError as exc:  # a full disk must not kill a run that can still checkpoint
            log.warning("could not write %s: %s", self.status_path, exc)

    def report(self, *, step: int, loss: float, lr: float, tokens: int, seconds: float, extra: dict[str, Any]) -> None:
        if not self.enabled:
            return
        total = self.status.get("total_steps") or step
        tps = tokens / seconds if seconds > 0 else None
        rate = extra.pop("seconds_per_step", None)
        eta = (total - step) * rate if rate else None
        record = {
            "step": step,
            "loss": loss,
            "learning_rate": lr,
            "tokens": tokens,
            "seconds": seconds,
            "tokens_per_second": tps,
            "time": time.time(),
            **extra,
        }
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            log.warning("could not append to %s: %s", self.metrics_path, exc)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/learning_rate", lr, step)
            if tps:
                self.writer.add_scalar("train/tokens_per_second", tps, step)
            if extra.get("peak_memory_gib") is not None:
                self.writer.add_scalar("train/peak_memory_gib", extra["peak_memory_gib"], step)
            self.writer.flush()
        self.write(
            state="training",
            step=step,
            loss=loss,
            learning_rate=lr,
            tokens_per_second=tps,
            eta_seconds=eta,
            **{k: v for k, v in extra.items() if k in ("epoch", "samples_seen", "peak_memory_gib")},
        )
        log.info(
            "step=%d/%d loss=%.4f lr=%.3g tokens/s=%s eta=%s",
            step,
            total,
            loss,
            lr,
            f"{tps:.0f}" if tps else "?",
            fmt_duration(eta),
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
