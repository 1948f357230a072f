"""The trainer's status file as the control node reads it: where it is and what it says.

The trainer writes `progress.status_file` (default `<train.output_dir>/status.json`) with its state and step; the
role reads it with ansible.builtin.slurp. A job whose status says "finished" is not started again by a re-run of the
role (its unit stays enabled; a changed config, environment or unit restarts it through the role's handler).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

FINISHED = "finished"


def path(config: Mapping[str, Any]) -> str:
    """The status file of the config the role renders (the trainer's own default: <output_dir>/status.json)."""
    progress = config.get("progress") or {}
    explicit = progress.get("status_file") if isinstance(progress, Mapping) else None
    if explicit:
        return str(explicit)
    return f"{str(config['train']['output_dir']).rstrip('/')}/status.json"


def read(slurped: Any) -> Mapping[str, Any]:
    """The status from a registered ansible.builtin.slurp result ({} when unread, skipped or not a JSON object)."""
    content = slurped.get("content") if isinstance(slurped, Mapping) else None
    if not content:
        return {}
    try:
        status = json.loads(base64.b64decode(content))
    except (ValueError, TypeError):
        return {}
    return status if isinstance(status, Mapping) else {}


def finished(slurped: Any) -> bool:
    """Whether the trainer reported its job finished."""
    return read(slurped).get("state") == FINISHED
