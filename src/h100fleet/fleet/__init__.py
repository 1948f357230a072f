"""Control-node code that looks at the fleet as a whole."""
