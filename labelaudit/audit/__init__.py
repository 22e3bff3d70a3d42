"""Stage 4: flags, estimates of the noise, metrics against a truth, similarity issues."""
