"""h100fleet: node-side and control-side code for the H100 fleet."""
