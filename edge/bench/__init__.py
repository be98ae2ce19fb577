"""Benchmarks: model latency, throughput and memory per backend and precision (``edge-bench models``)."""
