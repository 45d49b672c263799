"""DAVIS J and F, and mvos-eval's evaluation."""
