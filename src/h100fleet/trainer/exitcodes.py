"""Exit codes of `python -m h100fleet.trainer` (sysexits.h values where one fits).

A systemd unit restarts the trainer on failure, except for errors that a restart cannot fix:

    Restart=on-failure
    RestartPreventExitStatus=64 65 78

0 also ends a stop by SIGTERM/SIGINT (after the checkpoint is written) and a run that had already finished.
"""

from __future__ import annotations

EX_OK = 0  # finished, or stopped by SIGTERM/SIGINT after writing a checkpoint
EX_FAILURE = 1  # anything else (CUDA error, out of memory, a crash): worth a restart, which resumes
EX_USAGE = 64  # bad command line (unknown option, missing --config): a restart cannot fix it
EX_DATAERR = 65  # the dataset is malformed (the message names the file and line): a restart cannot fix it
EX_CONFIG = 78  # the config is invalid (the message names the field, the value and what is expected)

# What the systemd unit should list in RestartPreventExitStatus=.
NO_RESTART = (EX_USAGE, EX_DATAERR, EX_CONFIG)
