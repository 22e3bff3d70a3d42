"""Stage 3: the training loop, its settings, the methods and saved models."""
