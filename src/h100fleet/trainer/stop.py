"""Graceful stop: SIGTERM (systemctl stop) and SIGINT set a flag; the loop finishes the step it is in, writes a
checkpoint and exits 0. A second signal is ignored: systemd's SIGKILL after TimeoutStopSec is the hard limit."""

from __future__ import annotations

import signal

from h100fleet.trainer import logs

log = logs.get("stop")


class StopRequest:
    def __init__(self) -> None:
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def _handler(self, signum, _frame) -> None:
        # Only set the flag here; the loop logs it (logging from a signal handler can deadlock).
        self.request(signal.Signals(signum).name)

    def install(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)
        return self
