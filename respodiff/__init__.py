"""respodiff: h-space methods (RespoDiff, CoDSMa) for fair and safe text-to-image diffusion.

The library is importable without Hydra; `run.py` is the thin Hydra entry point over it. Trained modules plug
into any diffusers pipeline through `respodiff.HSpaceModules` (respodiff/pretrained.py).
"""

__version__ = "0.1.0"
__all__ = ["HSpaceModules", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so `import respodiff` stays light (no torch or diffusers until a model is needed).
    if name == "HSpaceModules":
        from .pretrained import HSpaceModules

        return HSpaceModules
    raise AttributeError(f"module 'respodiff' has no attribute {name!r}")
