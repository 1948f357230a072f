"""Code that runs on the nodes themselves, standard library only: by the node's system Python (the hardware fact,
the rollout guard) or by a stack venv's (the lock file format and the stack verification that reads it)."""
