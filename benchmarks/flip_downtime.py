#!/usr/bin/env python3
"""A rollout's flip on one GPU node without Ansible: training downtime phase by phase (stop, probes, start until
the first step past the checkpoint), Llama-3.1-8B architecture with random weights, the service's entry points.

    python benchmarks/flip_downtime.py --out flip.json [--size 8b] [--backend unsloth] [--flips cold,warm]
        [--probe-arg=--expect-gpus=1 --probe-arg=--driver=580] [--workdir /tmp/h100fleet-flip]

Needs a CUDA GPU with about 80 GB, the stack (unsloth for the unsloth backend) and about 17 GB of disk for the
model; `--size tiny --device cpu --backend hf` checks the script on a CPU. The logic is in
h100fleet.harness.flip_bench; results are described in docs/benchmarks.md ("Rollout").
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from h100fleet.harness.flip_bench import main

if __name__ == "__main__":
    sys.exit(main())
