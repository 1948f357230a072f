"""Filters for the training_service role: facts the trainer owns, read from h100fleet.trainer (not repeated)."""

from __future__ import annotations

try:
    from h100fleet.fleet import trainer_status, trainer_unit
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


def training_service_nproc(setting, visible_devices, device, node_gpus):
    """training_service_nproc_per_node | training_service_nproc(visible devices, device, the node's GPU count):
    the trainer processes the unit starts (h100fleet.fleet.trainer_unit)."""
    return trainer_unit.nproc_per_node(setting, visible_devices, device, node_gpus)


def training_service_nproc_problem(setting, visible_devices, device, node_gpus):
    """Why training_service_nproc_per_node cannot run on this node, or "" (for the preflight)."""
    return trainer_unit.nproc_problem(setting, visible_devices, device, node_gpus) or ""


def training_service_exec_start(nproc, python, config, job=None):
    """The unit's ExecStart= for nproc trainer processes on this node of job (nnodes, endpoint, id)."""
    return trainer_unit.exec_start(python, config, nproc, job)


def training_service_job_problems(job, host, groups):
    """job (nnodes, group, endpoint, id) | training_service_job_problems(inventory_hostname, groups): why this host
    cannot join its job as set, [] when it can (for the preflight)."""
    return trainer_unit.job_problems(host, job, groups)


def training_service_shared_storage_problems(paths, host, mounts, fstypes):
    """{setting: directory} | training_service_shared_storage_problems(host, the node's mounts, accepted filesystem
    types): the directories of a job over several nodes that are not on shared storage."""
    return trainer_unit.shared_storage_problems(host, paths, mounts, fstypes)


def training_service_status_file(config):
    """The rendered config | training_service_status_file: the path of the trainer's status file."""
    return trainer_status.path(config)


def training_service_job_finished(slurped):
    """A registered slurp of the status file | training_service_job_finished: the trainer reported its job done."""
    return trainer_status.finished(slurped)


class FilterModule:
    def filters(self):
        return {
            "training_service_no_restart": training_service_no_restart,
            "training_service_nproc": training_service_nproc,
            "training_service_nproc_problem": training_service_nproc_problem,
            "training_service_exec_start": training_service_exec_start,
            "training_service_job_problems": training_service_job_problems,
            "training_service_shared_storage_problems": training_service_shared_storage_problems,
            "training_service_status_file": training_service_status_file,
            "training_service_job_finished": training_service_job_finished,
        }
