"""Generated clips and reading / writing frames and masks."""
