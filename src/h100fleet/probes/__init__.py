"""Node GPU probes: can this node train, and if not, why.

Runs inside the stack venv on the node. `nvml` records what the driver reports as a plain JSON snapshot, `checks`
judges a snapshot against what the inventory expects, and `result` turns the judgements into a Nagios-style
report. Keeping the recording apart from the judging lets every check be tested on recorded snapshots, without a GPU.
"""
