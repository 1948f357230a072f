"""Filters for the training_service role: facts the trainer owns, read from h100fleet.trainer (not repeated)."""

from __future__ import annotations

try:
    from h100fleet.trainer import exitcodes
except ImportError as exc:  # pragma: no cover - only without the project's environment
    raise ImportError(
        "training_service needs the h100fleet package on the control node: run ansible-playbook from the "
        "project's environment (.venv)"
    ) from exc


def training_service_no_restart(module):
    """'h100fleet.trainer.exitcodes' | training_service_no_restart: the exit codes a restart cannot fix, for the
    unit's RestartPreventExitStatus=."""
    if module != "h100fleet.trainer.exitcodes":
        raise ValueError(f"training_service_no_restart reads h100fleet.trainer.exitcodes, not {module!r}")
    return list(exitcodes.NO_RESTART)


class FilterModule:
    def filters(self):
        return {"training_service_no_restart": training_service_no_restart}
