"""Pinned ML stacks as data: manifests, hash-locked requirements, the compatibility rules, and bump summaries.

A stack is a directory ``files/stacks/<id>/`` holding ``manifest.yml``, ``requirements.in`` and one hash-locked
``lock-py<X.Y>.txt`` per Python version it supports. ``h100fleet stack lock|check|diff|verify`` work on them.
Control-node code; the lock file format and the check of a venv against a lock run in the stack venvs too, so
they live on the node side (h100fleet.node.lockfile, h100fleet.node.verify).
"""
