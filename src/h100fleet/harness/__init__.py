"""Test and benchmark harness code: runs on the control node around tests and measurements, never on a node and
never in a stack venv."""
