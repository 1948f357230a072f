"""Tools for running the project's stacks on a lent GPU machine that has no network."""
