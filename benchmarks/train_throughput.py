#!/usr/bin/env python3
"""Training throughput of the trainer against a bare loop, Llama-3.1-8B architecture, random weights, on a GPU.

    python benchmarks/train_throughput.py --out train_throughput.json [--batch 2] [--seq 2048]
        [--warmup 3] [--steps 8] [--backends unsloth,hf] [--no-auto] [--workdir /tmp/h100fleet-bench]

Needs a CUDA GPU with about 80 GB, the stack (torch, transformers, peft; unsloth for the unsloth backend) and about
17 GB of disk for the model. The logic is in h100fleet.harness.train_bench; results are described in docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from h100fleet.harness.train_bench import main

if __name__ == "__main__":
    sys.exit(main())
