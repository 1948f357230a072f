"""h100fleet: node-side, control-node and test/benchmark harness code for the H100 fleet.

The layers (which subpackage runs where, which may import which) are declared in h100fleet.layers.
"""
