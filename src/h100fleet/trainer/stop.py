"""Graceful stop: SIGTERM (systemctl stop) and SIGINT set a flag; the loop finishes the step it is in, writes a
checkpoint and exits 0. A second signal is ignored: systemd's SIGKILL after TimeoutStopSec is the hard limit.

Before training starts (imports, model loading, tokenization, the automatic batch choice: up to a minute or two
for an 8B model) there is nothing to save, so a signal then interrupts at once with StopBeforeTraining, which the
command line turns into exit 0."""

from __future__ import annotations

import signal

from h100fleet.trainer import logs

log = logs.get("stop")


# A BaseException, so that no `except Exception` in a library swallows it.
class StopBeforeTraining(BaseException):
    """A stop signal arrived while nothing had been trained yet."""


class StopRequest:
    def __init__(self) -> None:
        self.reason: str | None = None
        self.immediate = False
        self.raised = False

    def set_immediate(self, on: bool) -> None:
        """While on, a signal raises StopBeforeTraining in the main thread instead of only setting the flag.
        Turning it off raises StopBeforeTraining again when a signal raised it before and something swallowed it:
        the handler runs inside whatever code the main thread is in, and some libraries catch BaseException (seen
        under load, the trainer then went on to train and stopped after step 0)."""
        self.immediate = on
        if (on and self.requested) or (not on and self.raised):
            self.raised = False
            raise StopBeforeTraining(self.reason)

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def _handler(self, signum, _frame) -> None:
        # Only set the flag (or raise) here; logging from a signal handler can deadlock.
        self.request(signal.Signals(signum).name)
        if self.immediate:
            self.immediate = False
            self.raised = True
            raise StopBeforeTraining(self.reason)

    def install(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)
        return self
