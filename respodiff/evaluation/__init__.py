"""Evaluation: metric functions, the models that score images, and the benchmark registry.

- `registry`: `Metric`, `Benchmark` (settings, asset checks, identity and mean rows shared by every benchmark),
  `BenchmarkResult`, `register_benchmark`, `get_benchmark`, `available_benchmarks`.
- `setup`: the run's entry points (`validate_eval`, `benchmark_settings`, `build_evaluators`, `EvalContext`).
- `evaluator_settings`: eval.evaluators as one checked dataclass per evaluator (the defaults live there).
- `fairness`, `safety`, `quality`, `stats`, `intervals`: pure functions (DevRat, I2P aggregation and Q16/NudeNet rules,
  CLIP score and FID, clustered bootstrap intervals, DevRat intervals with verified coverage and the exact floor).
- `rescore`, `paired`, `compare` (and `python -m respodiff.evaluation rescore|compare`): metrics recomputed from the
  per-image score store under other evaluator settings, paired differences and leakage against the base model;
  `diversity` (within-prompt diversity from stored image embeddings), `leakage` (the attributes and caption facts a
  leakage measurement reads, and the CLIP zero-shot piece a caption benchmark calls).
- `classifiers`: CLIP scorer, Q16, NudeNet, clean-fid's Inception; `assets`: where their files come from;
  `evaluators`: one lazy object providing them, with identity; `q16_prompts`: Q16's pickle read without executing
  code; `stand_ins`: the tiny evaluation scale.
- `images`: manifest completeness checks and strict id joins; `testing`: tiny stand-ins for tests and the toy world;
  `toy`: the toy world's scorers as the toy benchmarks use them.

Submodules are imported explicitly; importing this package stays cheap.
"""
