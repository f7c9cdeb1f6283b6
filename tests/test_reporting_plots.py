"""Plots and image grids produce real, non-empty PNGs."""

import pandas as pd
import pytest
from PIL import Image

from respodiff.reporting.grids import make_grid, select_cells
from respodiff.reporting.plots import group_bars_plot, tradeoff_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 1000


def test_tradeoff_plot(tmp_path):
    out = tradeoff_plot([("λ = 0", 0.12, 26.1), ("λ = 0.5", 0.14, 27.3), ("λ = 4", 0.29, 27.5)],
                        tmp_path / "plots" / "lambda.png", xlabel="DevRat", ylabel="WinoAlign",
                        paper=[("λ = 0", 0.12, 26.12), ("λ = 4", 0.29, 27.53)], x_higher_is_better=False)
    assert _is_png(out)


def test_group_bars_plot(tmp_path):
    out = group_bars_plot({"SD": {"ceo": 0.92, "doctor": 0.7}, "CoDSMa": {"ceo": 0.01, "doctor": 0.05}},
                          tmp_path / "bars.png", ylabel="DevRat", paper={"SD": {"ceo": 0.92}})
    assert _is_png(out)


def _store(root, color, prompts, done=True):
    rows = []
    for pid, prompt in prompts:
        for k in range(3):
            rel = f"images/{pid}_{k}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), color).save(root / rel)
            rows.append({"image_id": f"winobias/{pid}/{k}", "prompt_id": pid, "prompt": prompt, "seed": 1000 + k,
                         "concept": "none", "path": rel, "status": "done" if done else "pending"})
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    return root


def test_grid_pairs_images_by_prompt_and_seed(tmp_path):
    prompts = [("p1", "Photo of doctor"), ("p2", "Portrait of doctor"), ("p3", "Photo of nurse")]
    a = _store(tmp_path / "sd", "red", prompts)
    b = _store(tmp_path / "respodiff", "blue", prompts[::-1])  # different listing order: keys, not order, pair
    cells = select_cells({"SD": a, "RespoDiff": b}, "DOCTOR", n_columns=3)
    assert list(zip(cells["prompt_id"], cells["seed"])) == [("p1", 1000), ("p2", 1000), ("p1", 1001)]
    assert all(p.endswith(f"{pid}_{s - 1000}.png") for p, pid, s in zip(cells["RespoDiff"], cells["prompt_id"],
                                                                         cells["seed"]))
    out = make_grid({"SD": a, "RespoDiff": b}, "doctor", tmp_path / "grids" / "doctor.png", n_columns=3, cell_px=64)
    assert _is_png(out)


def test_grid_without_matching_prompt_raises(tmp_path):
    a = _store(tmp_path / "sd", "red", [("p1", "Photo of nurse")])
    with pytest.raises(ValueError, match="ceo"):
        make_grid({"SD": a}, "ceo", tmp_path / "g.png")
