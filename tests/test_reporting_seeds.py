"""Table rows over training seeds (mean ± sd, per-seed notes) and paired differences marked when they exclude 0."""

import yaml

from respodiff.reporting.specs import parse_spec
from respodiff.reporting.store import load_results, write_result
from respodiff.reporting.tables import build_table, render_markdown

SPEC = """
title: Seeds
columns:
  - {id: devrat, benchmark: winobias_toy, metric: devrat}
  - {id: diff, benchmark: winobias_toy_vs_base, metric: devrat_diff}
rows:
  - {label: RespoDiff, match: {experiment: gender_toy, method: respodiff, only_override_keys: [method]}}
  - {label: "RespoDiff, seeds 0-2", match: {experiment: gender_toy, method: respodiff, only_override_keys: [method]},
     seeds: [0, 1, 2]}
"""


def _write(root, seed, benchmark, name, value, ci):
    overrides = ["method=respodiff", *([f"train.seed={seed}"] if seed else [])]
    write_result(root / f"s{seed}", {
        "benchmark": benchmark, "experiment": "gender_toy", "run_name": ",".join(overrides),
        "overrides": ["experiment=gender_toy", *overrides], "method": "respodiff", "model": "toy",
        "concepts": "toy_gender", "config": {"train": {"seed": seed}}, "git_hash": "0" * 16, "versions": {"x": "1"},
        "created": f"2026-01-0{seed + 1}T00:00:00",
        "metrics": [{"name": name, "value": value, "ci_low": ci[0], "ci_high": ci[1], "n": 320, "group": None,
                     "version": "1", "higher_is_better": False}]})


def test_seed_rows_show_mean_and_sd_and_mark_paired_differences(tmp_path):
    for seed, value in ((0, 0.22), (1, 0.12), (2, 0.08)):
        _write(tmp_path, seed, "winobias_toy", "devrat", value, (0.0, 0.3))
        _write(tmp_path, seed, "winobias_toy_vs_base", "devrat_diff", value - 0.96, (value - 1.0, value - 0.9))
    table = build_table(parse_spec(yaml.safe_load(SPEC), "seeds"), load_results([tmp_path]))
    single = table.cell("RespoDiff", "devrat")
    assert single.value == 0.22 and single.sd is None  # the plain row is the seed-0 run only
    cell = table.cell("RespoDiff, seeds 0-2", "devrat")
    assert abs(cell.value - 0.14) < 1e-9 and abs(cell.sd - 0.0721110255) < 1e-6
    assert cell.per_seed == {0: 0.22, 1: 0.12, 2: 0.08}
    text = render_markdown(table)
    assert "0.14 ± 0.07" in text
    assert "RespoDiff, seeds 0-2 / DevRat: seed 0 0.22, seed 1 0.12, seed 2 0.08" in text
    assert "-0.74 [-0.78, -0.68]*" in text and "excludes 0" in text
    assert "-0.82 ± 0.07*" in text  # every seed's interval excludes 0 on the same side


def test_a_missing_seed_is_a_warning(tmp_path):
    _write(tmp_path, 0, "winobias_toy", "devrat", 0.22, (0.0, 0.3))
    _write(tmp_path, 2, "winobias_toy", "devrat", 0.08, (0.0, 0.3))
    table = build_table(parse_spec(yaml.safe_load(SPEC), "seeds"), load_results([tmp_path]))
    assert table.cell("RespoDiff, seeds 0-2", "devrat").per_seed == {0: 0.22, 2: 0.08}
    assert any("training seed(s) [1]" in w for w in table.warnings)
    assert "0.15 ± 0.10 (2 of 3 seeds)" in render_markdown(table)  # the cell itself says seeds are missing
