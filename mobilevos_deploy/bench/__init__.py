"""Benchmarking: TFLite's benchmark_model on a phone over adb, and the host default.

parse.py   reads benchmark_model's output (any of its known forms) into typed figures
"""
