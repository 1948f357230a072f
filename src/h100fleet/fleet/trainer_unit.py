"""What the training unit starts on a node: how many trainer processes, and the command line that starts them.

One process per GPU. `training_service_nproc_per_node: auto` counts the GPUs the unit sees: those of
`training_service_cuda_visible_devices` when it pins some, else every GPU of the node (node_baseline's h100fleet_node
fact, from the PCI bus); one on the CPU (`training_service_device: cpu`) or on a node without GPUs. One process runs
`python -m h100fleet.trainer`, as a plain process; more run through torchrun with the trainer's exit codes kept
(`python -m h100fleet.trainer.launch`, docs/trainer.md).
"""

from __future__ import annotations

AUTO = "auto"


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


def exec_start(python: str, config: str, nproc: int) -> str:
    """The unit's ExecStart= for `nproc` processes."""
    if int(nproc) == 1:
        return f"{python} -m h100fleet.trainer --config {config}"
    return f"{python} -m h100fleet.trainer.launch --nproc-per-node {int(nproc)} --config {config}"
