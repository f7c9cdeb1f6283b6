"""Speed benchmarks: our trainer and generation engine against naive reference loops, with counted FLOPs.

`python -m benchmarks.speed --model tiny` (CPU) or `--model sd14_arch` (GPU); results in results/speed/.
See README.md in this folder for what is measured and how.
"""
