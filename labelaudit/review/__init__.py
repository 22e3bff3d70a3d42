"""Stage 7: the review page, exports for other tools, and reviewers' decisions back in."""
