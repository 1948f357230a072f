"""What package metadata does not say, written down once with its source.

Every entry here was read from a release's code or NVIDIA's documentation (../shared/facts/STACK-FACTS.md records
how); the rules in h100fleet.stack.rules apply them.
"""

from __future__ import annotations

from h100fleet.probes import drivers

# Minimum Linux driver of each CUDA runtime release (12.4 is Update 1, 550.54.15, which is also the release of the
# cu124 wheels' runtime 12.4.127), and the older driver of the same major that still runs it through minor-version
# compatibility (no JIT of newer PTX): the project's one driver table, h100fleet.probes.drivers.
CUDA_MIN_DRIVER = drivers.CUDA_MIN_DRIVER
CUDA_MAJOR_FLOOR = drivers.CUDA_MAJOR_FLOOR
driver_key = drivers.version_key

# Packages whose version is the CUDA runtime the torch wheels bring (torch's own dependency).
CUDA_RUNTIME_PACKAGES = ("nvidia-cuda-runtime-cu11", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime")

# PyPI's Linux x86_64 torch wheels use the pre-C++11 ABI up to 2.6 and the C++11 ABI from 2.7 on (PyTorch 2.7
# release notes: manylinux_2_28 builds with _GLIBCXX_USE_CXX11_ABI=1). Extensions such as flash-attn must match.
TORCH_CXX11_ABI_FROM = (2, 7)

# numpy 2 needs extensions built against it: torch wheels before 2.4 were built against numpy 1.x and fail to import
# their numpy bridge under numpy 2 ("A module that was compiled using NumPy 1.x cannot be run in NumPy 2").
TORCH_NUMPY2_FROM = (2, 4)

# Unsloth releases up to 2024.8 (unsloth/models/_utils.py of PyPI 2024.8, and git tags July-2024 .. August-2024):
# import xformers unconditionally and raise when its C++ extensions do not load; raise for xformers >= 0.0.27 with
# torch < 2.4; raise for trl >= 0.9.0; the `huggingface` extra asks trl>=0.7.9,<0.9.0 (SFTTrainer).
# From 2024.11 xformers is optional: without a loadable xformers Unsloth uses PyTorch attention.
UNSLOTH_STRICT_UNTIL = "2024.9"  # releases below this one carry the guards above
UNSLOTH_XFORMERS_OPTIONAL_FROM = "2024.11"
UNSLOTH_FIRST_PYPI_RELEASE = "2024.8"
UNSLOTH_STRICT_XFORMERS_BELOW = "0.0.27"
UNSLOTH_STRICT_TRL = ">=0.7.9,<0.9.0"

# A working set for the strict releases, the nearest to a torch 2.3 stack (xformers builds pin torch exactly).
UNSLOTH_STRICT_FIX = "torch==2.3.0, torchvision==0.18.0, torchaudio==2.3.0, xformers==0.0.26.post1, trl==0.8.6"

# The oldest torch each torchao release's Python API supports (pytorch/ao issue 2919, "torchao release compatibility
# table", column "torch version, torchao's Python API only"; from 0.17 torchao's C++ kernels are ABI-stable against
# torch 2.11 and the table ends: 0.18 lists 2.11, 2.10 and 2.9). Releases after the last entry take its floor.
# transformers and peft import torchao whenever it is installed, so a torchao too new for the torch fails every
# model import (measured: torchao 0.18.0 on torch 2.6.0, "module 'torch' has no attribute 'float4_e2m1fn_x2'").
TORCHAO_TORCH_FLOOR = (
    ("0.12", "2.5.0"),
    ("0.13", "2.6.0"),
    ("0.14", "2.7.1"),
    ("0.15", "2.7.1"),
    ("0.16", "2.8.0"),
    ("0.17", "2.9.0"),
    ("0.18", "2.9.0"),
)
