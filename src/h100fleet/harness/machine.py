"""The machine a control-node benchmark ran on, recorded beside its timings (they depend on the load)."""

from __future__ import annotations

import os
import platform


def summary() -> dict[str, object]:
    """Host name, cores, OS and the load average now."""
    return {
        "host": platform.node(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
