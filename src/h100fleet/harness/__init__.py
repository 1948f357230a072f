"""Test and benchmark harness code: the benchmarks' logic, the testinfra helpers, the transfer to a lent GPU machine.

Runs on the control node or on a benchmark machine from a source checkout (the GPU benchmarks run train_bench in a
stack's interpreter with PYTHONPATH set to src/); never copied into a node's stack venv.
"""
