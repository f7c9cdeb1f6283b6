"""What `pip install` puts into site-packages: respodiff only, never a top-level package with a generic name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_only_respodiff_is_installed_as_a_top_level_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include and all(pattern.startswith("respodiff") for pattern in include)


def test_the_benchmark_registry_finds_the_checkouts_benchmarks_from_anywhere(tmp_path):
    # From another folder, with the checkout nowhere on sys.path: the registry still finds benchmarks/.
    code = (f"import sys; sys.path = [p for p in sys.path if p not in ('', '.', {str(ROOT)!r})]; "
            "from respodiff.evaluation.registry import available_benchmarks; print(available_benchmarks())")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "winobias" in done.stdout and "i2p_toy" in done.stdout
