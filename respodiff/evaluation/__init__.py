"""Evaluation: metric functions, the models that score images, and the benchmark registry.

- `registry`: `Metric`, `Benchmark`, `BenchmarkResult`, `register_benchmark`, `get_benchmark`, `available_benchmarks`.
- `fairness`, `safety`, `quality`, `stats`: pure functions (DevRat, I2P aggregation and Q16/NudeNet rules, CLIP score
  and FID, bootstrap intervals).
- `classifiers`: CLIP scorer, Q16, NudeNet, clean-fid's Inception; `evaluators`: one lazy object providing them, with
  asset checks and identity; `q16_prompts`: Q16's pickle read without executing code.
- `images`: manifest completeness checks and strict id joins; `testing`: tiny stand-ins for tests and the toy world.

Submodules are imported explicitly; importing this package stays cheap.
"""
