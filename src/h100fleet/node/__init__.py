"""Code that runs on the nodes themselves (system Python; standard library only)."""
