"""respodiff: h-space methods (RespoDiff, CoDSMa) for fair and safe text-to-image diffusion.

The library is importable without Hydra; `run.py` is the thin Hydra entry point over it.
"""

__version__ = "0.1.0"
