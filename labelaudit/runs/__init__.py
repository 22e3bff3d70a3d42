"""Stage 5: the run directory: its format, writing it whole, reading it back, its plots."""
