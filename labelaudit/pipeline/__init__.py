"""Stage 6: the commands' library functions: scan, retrain, predict, noise, benchmark."""
