"""Benchmarks: the engine alone (CPU, GPU) and the pipeline end to end."""
