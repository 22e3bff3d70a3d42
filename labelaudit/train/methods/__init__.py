"""The audit methods, each a schedule of phases on the shared training loop."""
