"""Evaluation benchmarks, one module per benchmark, each registering itself with
`respodiff.evaluation.registry.register_benchmark` when imported.

`respodiff.evaluation.registry.get_benchmark(name)` imports `benchmarks.<name>` on demand (and scans the package
for benchmarks that live beside another, such as coco5k in coco30k.py). Add a benchmark by adding a file.
"""
