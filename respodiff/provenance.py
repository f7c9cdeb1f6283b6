"""What produced a result: code version, package versions, machine and time."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "respodiff", "torch", "torchvision", "diffusers", "transformers", "accelerate", "open_clip_torch",
    "clean-fid", "nudenet", "torchmetrics", "onnxruntime", "numpy", "pandas", "pillow",
)
REPO_ROOT = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def git_hash() -> str:
    """The checkout's commit, with '-dirty' when tracked files differ from it; 'unknown' outside a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine() -> dict[str, str]:
    import torch

    info = {"platform": platform.platform(), "processor": platform.machine(), "cpus": str(_cpu_count())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = str(torch.version.cuda)
    return info


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def provenance() -> dict[str, object]:
    return {
        "git_hash": git_hash(),
        "versions": package_versions(),
        "machine": machine(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
