"""Stage 1: sources, decoded images and the user's own files."""
