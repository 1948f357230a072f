"""What the training unit starts on a node: how many trainer processes, and the command line that starts them.

One process per GPU. `training_service_nproc_per_node: auto` counts the GPUs the unit sees: those of
`training_service_cuda_visible_devices` when it pins some, else every GPU of the node (node_baseline's h100fleet_node
fact, from the PCI bus); one on the CPU (`training_service_device: cpu`) or on a node without GPUs. One process runs
`python -m h100fleet.trainer`, as a plain process; more run through torchrun with the trainer's exit codes kept
(`python -m h100fleet.trainer.launch`, docs/trainer.md).

A job over several nodes (`training_service_nnodes` > 1) always runs the launcher, with torchrun's c10d rendezvous
at `training_service_rdzv_endpoint` (host:port) under the job id `training_service_rdzv_id`, the same on every node.
With `training_service_job_group` the inventory says which hosts are the job's nodes: the endpoint defaults to its
first host, the job id to the group's name, and the node count must be the group's size. Every node reads and
writes the job's one output directory (rank 0, on whichever node the rendezvous puts it, writes the checkpoints;
every rank reads the one it resumes from), so that directory must be on shared storage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

AUTO = "auto"
# host:port, host a name, an IPv4 address or a bracketed IPv6 address.
_ENDPOINT = re.compile(r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Filesystems that several nodes mount as one: NFS, Lustre, IBM Storage Scale, CephFS, BeeGFS, GlusterFS, WEKA.
SHARED_FSTYPES = (
    "nfs",
    "nfs4",
    "lustre",
    "gpfs",
    "ceph",
    "fuse.ceph-fuse",
    "beegfs",
    "glusterfs",
    "fuse.glusterfs",
    "wekafs",
)


def _visible(devices: object) -> list[str]:
    text = "" if devices is None else str(devices)
    return [d for d in text.split(",") if d] if text else []


def nproc_per_node(setting: object, visible_devices: object, device: str, node_gpus: object) -> int:
    """The trainer processes for this node (the setting is checked by nproc_problem first)."""
    if setting != AUTO:
        return int(setting)  # type: ignore[call-overload]
    if device == "cpu":
        return 1
    pinned = _visible(visible_devices)
    return len(pinned) if pinned else max(1, int(node_gpus or 0))


def nproc_problem(setting: object, visible_devices: object, device: str, node_gpus: object) -> str | None:
    """Why the setting cannot run on this node (names the variables), or None."""
    if setting == AUTO:
        return None
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        return f'training_service_nproc_per_node is {setting!r}; expected "auto" or a whole number of at least 1'
    pinned = _visible(visible_devices)
    if device != "cpu" and pinned and setting > len(pinned):
        return (
            f"training_service_nproc_per_node is {setting} but training_service_cuda_visible_devices "
            f"'{visible_devices}' gives the unit {len(pinned)} GPU(s): one process per GPU"
        )
    gpus = int(node_gpus or 0)
    if device != "cpu" and not pinned and gpus and setting > gpus:
        return f"training_service_nproc_per_node is {setting} but the node has {gpus} GPU(s): one process per GPU"
    return None


def exec_start(python: str, config: str, nproc: int, job: Mapping[str, object] | None = None) -> str:
    """The unit's ExecStart= for `nproc` processes on this node, in `job` (nnodes, endpoint, id; None: one node)."""
    job = job or {}
    nnodes = int(job.get("nnodes") or 1)  # type: ignore[call-overload]
    if nnodes > 1:
        where = f"--nnodes {nnodes} --rdzv-endpoint {job['endpoint']} --rdzv-id {job['id']} "
        return f"{python} -m h100fleet.trainer.launch --nproc-per-node {int(nproc)} {where}--config {config}"
    if int(nproc) == 1:
        return f"{python} -m h100fleet.trainer --config {config}"
    return f"{python} -m h100fleet.trainer.launch --nproc-per-node {int(nproc)} --config {config}"


def endpoint_problem(endpoint: object) -> str | None:
    """What is wrong with a rendezvous endpoint (host:port), or None."""
    m = _ENDPOINT.fullmatch(endpoint) if isinstance(endpoint, str) else None
    if m is None or not 1 <= int(m.group("port")) <= 65535:
        return "expected host:port (a host name or address and a port from 1 to 65535), e.g. node-a:29400"
    return None


def job_id_problem(rdzv_id: object) -> str | None:
    ok = isinstance(rdzv_id, str) and (rdzv_id == "" or _JOB_ID.fullmatch(rdzv_id))
    return None if ok else "expected letters, digits, '.', '_' and '-' (at most 64), or \"\""


def job_problems(host: str, job: Mapping[str, object], groups: Mapping[str, Iterable[str]]) -> list[str]:
    """Why this host cannot join its job (nnodes, group, endpoint, id: the training_service_* settings) as set, each
    naming the variable; [] when it can."""
    nnodes, job_group = job.get("nnodes"), str(job.get("group") or "")
    endpoint, rdzv_id = str(job.get("endpoint") or ""), str(job.get("id") or "")
    if isinstance(nnodes, str) and nnodes.isdigit():
        nnodes = int(nnodes)  # from a template
    if isinstance(nnodes, bool) or not isinstance(nnodes, int) or nnodes < 1:
        return [f"training_service_nnodes is {nnodes!r}; expected a whole number of at least 1"]
    problems = []
    if job_group:
        members = list(groups.get(job_group, ()))
        if job_group not in groups:
            problems.append(f"training_service_job_group '{job_group}' is not a group of the inventory")
        elif host not in members:
            problems.append(f"{host} is not in its training_service_job_group '{job_group}' ({', '.join(members)})")
        elif nnodes != len(members):
            problems.append(
                f"training_service_nnodes is {nnodes} but training_service_job_group '{job_group}' has "
                f"{len(members)} host(s) ({', '.join(members)}): one node per host of the job's group"
            )
    if nnodes > 1:
        if not endpoint:
            problems.append(
                f"training_service_nnodes is {nnodes} but training_service_rdzv_endpoint is empty: set "
                "training_service_job_group (the endpoint is then its first host) or the endpoint (host:port)"
            )
        elif endpoint_problem(endpoint):
            problems.append(f"training_service_rdzv_endpoint is '{endpoint}'; {endpoint_problem(endpoint)}")
        if not rdzv_id:
            problems.append(
                f"training_service_nnodes is {nnodes} but training_service_rdzv_id is empty: set "
                "training_service_job_group (the id is then its name) or the id, the same on every node"
            )
        unset = [name for name in ("uid", "gid") if job.get(name) in (None, "")]
        if unset:
            names = " and ".join(f"training_service_{name}" for name in unset)
            problems.append(
                f"training_service_nnodes is {nnodes} but {names} {'is' if len(unset) == 1 else 'are'} not set: the "
                "job's nodes share its output directory, so the trainer's user and group need the same ids on "
                "every node"
            )
    return problems


def mount_of(path: str, mounts: Iterable[Mapping[str, object]]) -> Mapping[str, object] | None:
    """The mount (an ansible_facts mounts entry: mount, fstype) that holds path: the longest mount point above it."""
    target = PurePosixPath(path)
    best = None
    for m in mounts:
        point = PurePosixPath(str(m.get("mount", "")))
        if (point == target or point in target.parents) and (best is None or len(point.parts) > best[0]):
            best = (len(point.parts), m)
    return best[1] if best else None


def shared_storage_problems(
    host: str, paths: Mapping[str, str], mounts: Iterable[Mapping[str, object]], fstypes: Iterable[str]
) -> list[str]:
    """For a job over several nodes: each of paths (setting -> directory) that is not on a filesystem of fstypes."""
    mounts, accepted = list(mounts), list(fstypes)
    problems = []
    for name, path in paths.items():
        m = mount_of(path, mounts)
        if m is None:
            problems.append(f"{host}: {name} {path} is on no mount the node reports; it must be on shared storage")
        elif m.get("fstype") not in accepted:
            problems.append(
                f"{host}: {name} {path} is on {m.get('mount')} ({m.get('fstype')}), not shared storage: every node "
                f"of the job reads and writes its checkpoints there (accepted filesystems, "
                f"training_service_shared_fstypes: {', '.join(accepted)})"
            )
    return problems
