"""Paper tables: golden Markdown/LaTeX, missing cells (dash + warning), sweeps, spec validation, the shipped specs."""

import logging
import os
from pathlib import Path

import pytest
import yaml

from respodiff.reporting.__main__ import main
from respodiff.reporting.specs import SpecError, load_specs, parse_spec
from respodiff.reporting.store import load_results, write_result
from respodiff.reporting.tables import build_table, render_latex, render_markdown, render_tables

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parents[1]

SPEC = """
title: Small gender table
source: hand-made test set
columns:
  - {id: devrat, benchmark: winobias, metric: devrat}
  - {id: winoalign, benchmark: winobias, metric: winoalign}
  - {id: ceo, benchmark: winobias, metric: devrat, group: {profession: CEO}, label: CEO}
  - {id: fid, benchmark: coco30k, metric: fid}
rows:
  - label: SD
    match: {experiment: gender_sd14, method: none}
    paper: {devrat: 0.68, winoalign: 27.51, fid: 14.09}
  - {label: SDisc, paper_only: true, paper: {devrat: 0.17}}
  - label: RespoDiff
    match: {experiment: gender_sd14, method: respodiff, overrides: []}
    paper: {devrat: 0.14, winoalign: 27.30, fid: 14.91}
    note: paper default λ = 0.5
"""


def _metric(name, value, ci=None, group=None, n=5400, hib=False):
    m = {"name": name, "value": value, "n": n, "version": "1", "higher_is_better": hib, "group": group}
    if ci:
        m["ci_low"], m["ci_high"] = ci
    return m


def _write(root, run, benchmark, metrics, overrides=(), method="respodiff", lam=0.5, created="2025-01-01T00:00:00"):
    return write_result(root / run, {
        "benchmark": benchmark, "experiment": "gender_sd14", "run_name": ",".join(overrides),
        "overrides": ["experiment=gender_sd14", *overrides], "method": method, "model": "sd14", "concepts": "gender",
        "config": {"method": {"name": method, "lambda_sem": lam}}, "git_hash": "0123456789abcdef",
        "versions": {"torch": "2.x"}, "created": created, "metrics": metrics,
    })


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "outputs"
    _write(root, "base", "winobias", [_metric("devrat", 0.6712, (0.6501, 0.6903)),
                                      _metric("winoalign", 27.456, (27.1, 27.8), hib=True),
                                      _metric("devrat", 0.93, group={"profession": "ceo"}, n=150)],
           overrides=["method=none"], method="none")
    _write(root, "base", "coco30k", [_metric("fid", 14.3, n=30000)], overrides=["method=none"], method="none")
    # RespoDiff has Winobias but no COCO result and no per-profession value: two kinds of missing cell.
    _write(root, "default", "winobias", [_metric("devrat", 0.1449, (0.1201, 0.1688)),
                                         _metric("winoalign", 27.2, hib=True)])
    return load_results(root)


def _check_golden(name: str, text: str):
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"golden file {path} missing: rerun with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)"


def test_golden_markdown_and_latex(results, caplog):
    spec = parse_spec(yaml.safe_load(SPEC), name="small_gender")
    with caplog.at_level(logging.WARNING, logger="respodiff.reporting.tables"):
        table = build_table(spec, results)
    # Missing cells are dashes with a warning each, never zeros.
    assert table.cell("RespoDiff", "fid").value is None
    assert table.cell("RespoDiff", "ceo").value is None
    assert table.warnings == [
        "RespoDiff / CEO: run gender_sd14/default has no winobias/devrat[profession=CEO] value",
        "RespoDiff / FID-30k: no coco30k result matches {experiment: gender_sd14, method: respodiff, overrides: []}"
        "; coco30k results exist for: gender_sd14/method=none",
    ]
    assert sum("no coco30k result" in r.getMessage() for r in caplog.records) == 1
    assert table.cell("SD", "ceo").value == 0.93  # group matching ignores case ("CEO" vs "ceo")
    md, tex = render_markdown(table), render_latex(table)
    assert "0.67 [0.65, 0.69] (paper 0.68)" in md and "– (paper 14.91)" in md and "DevRat ↓" in md
    assert r"WinoAlign $\uparrow$" in tex and r"0.14 {\scriptsize [0.12, 0.17]} (0.14)" in tex
    _check_golden("small_gender.md", md)
    _check_golden("small_gender.tex", tex)


def test_transposed_table_puts_methods_in_columns(results):
    data = yaml.safe_load(SPEC)
    data.update(transpose=True, row_header="Metric")
    md = render_markdown(build_table(parse_spec(data, name="t"), results))
    assert "| Metric | SD | SDisc | RespoDiff |" in md
    assert "| CEO ↓ | 0.93 | – | – |" in md


def test_ambiguous_match_uses_latest_and_warns(tmp_path):
    root = tmp_path / "o"
    _write(root, "a", "winobias", [_metric("devrat", 0.2)], overrides=["method.lambda_sem=0.5"],
           created="2025-01-01T00:00:00")
    _write(root, "b", "winobias", [_metric("devrat", 0.3)], created="2025-01-02T00:00:00")
    spec = parse_spec({"title": "t", "columns": [{"id": "d", "benchmark": "winobias", "metric": "devrat"}],
                       "rows": [{"label": "R", "match": {"config": {"method.lambda_sem": "0.50"}}}]}, name="t")
    table = build_table(spec, load_results(root))
    assert table.cell("R", "d").value == 0.3
    assert "2 results with different values match" in table.warnings[0]
    assert "using the latest, gender_sd14/default" in table.warnings[0]
    # Two runs of one configuration that agree (default run + its sweep twin) are not worth a warning.
    _write(root, "a", "winobias", [_metric("devrat", 0.3)], overrides=["method.lambda_sem=0.5"],
           created="2025-01-01T00:00:00")
    table = build_table(spec, load_results(root))
    assert table.cell("R", "d").value == 0.3 and table.warnings == []


def test_the_reference_row_leaves_its_paired_cells_blank_without_a_warning(tmp_path):
    root = tmp_path / "o"
    _write(root, "base", "winobias", [_metric("devrat", 0.6)], overrides=["method=none"], method="none")
    _write(root, "default", "winobias", [_metric("devrat", 0.2)])
    _write(root, "default", "winobias_vs_base", [_metric("devrat_diff", -0.4, (-0.5, -0.3))])
    columns = [{"id": "d", "benchmark": "winobias", "metric": "devrat"},
               {"id": "dd", "benchmark": "winobias_vs_base", "metric": "devrat_diff"}]
    rows = [{"label": "SD", "match": {"method": "none"}}, {"label": "RespoDiff", "match": {"method": "respodiff"}}]
    plain = build_table(parse_spec({"title": "t", "columns": columns, "rows": rows}, name="t"), load_results(root))
    assert any(w.startswith("SD / ΔDevRat") for w in plain.warnings)
    rows[0]["reference"] = True
    table = build_table(parse_spec({"title": "t", "columns": columns, "rows": rows}, name="t"), load_results(root))
    assert table.warnings == [] and table.cell("SD", "dd").value is None and table.cell("SD", "d").value == 0.6
    assert table.cell("RespoDiff", "dd").value == -0.4 and table.cell("RespoDiff", "dd").marked
    assert "compare each row with SD" in render_markdown(table)


def test_sweep_rows_from_multirun(tmp_path):
    root = tmp_path / "multirun"
    for i, lam in enumerate([0.0, 0.25, 4.0]):  # a Hydra multirun: one job per λ, override in each job
        _write(root, str(i), "winobias", [_metric("devrat", 0.1 + lam / 10), _metric("winoalign", 26 + lam, hib=True)],
               overrides=["sweep=lambda", f"method.lambda_sem={lam:g}"], lam=lam)
    _write(root, "ram", "winobias", [_metric("devrat", 0.5)], overrides=["method=ram_only"], method="ram_only", lam=0)
    _write(root, "mlp", "winobias", [_metric("devrat", 0.7)], overrides=["method.parametrization=mlp"], lam=0)
    spec = parse_spec({
        "title": "sweep", "row_header": "λ",
        "columns": [{"id": "devrat", "benchmark": "winobias", "metric": "devrat"},
                    {"id": "winoalign", "benchmark": "winobias", "metric": "winoalign"}],
        "sweep": {"match": {"experiment": "gender_sd14", "method": "respodiff"}, "param": "method.lambda_sem",
                  "values": {0: {"paper": {"devrat": 0.12}}, 0.5: {"paper": {"devrat": 0.14}}}},
        "plots": [{"kind": "tradeoff", "x": "devrat", "y": "winoalign"}],
    }, name="sweep")
    table = build_table(spec, load_results(root))
    assert [r.label for r in table.rows] == ["λ = 0", "λ = 0.25", "λ = 0.5", "λ = 4"]
    assert table.cell("λ = 0", "devrat").value == pytest.approx(0.1)  # ram_only / mlp runs are not sweep points
    assert table.cell("λ = 4", "winoalign").value == pytest.approx(30.0)
    assert table.cell("λ = 0.5", "devrat").value is None and table.cell("λ = 0.5", "devrat").paper == 0.14
    assert len(table.warnings) == 1 and table.warnings[0].startswith("λ = 0.5 / DevRat, WinoAlign: no winobias")


BAD_SPECS = [
    ({"title": "t", "columns": [{"id": "d", "benchmark": "winobias", "metric": "devratio"}], "rows": []},
     "unknown metric 'winobias'/'devratio'"),
    ({"title": "t", "columns": [{"id": "d", "benchmark": "nope", "metric": "devrat"}], "rows": []}, "known benchmarks"),
    ({"title": "t", "colums": []}, "unknown key"),
    ({"title": "t", "columns": [{"id": "d", "benchmark": "winobias", "metric": "devrat"}],
      "rows": [{"label": "a", "paper_only": True, "paper": {"x": 1}}]}, "undeclared column"),
    ({"title": "t", "columns": [{"id": "d", "benchmark": "winobias", "metric": "devrat"}],
      "rows": [{"label": "a", "paper": {"d": "0.1"}}]}, "needs `match`"),
    ({"title": "t", "columns": [{"id": "d", "benchmark": "winobias", "metric": "devrat"}],
      "rows": [{"label": "a", "match": {"experimnt": "x"}}]}, "unknown key"),
    ({"title": "t", "columns": [{"id": "d", "benchmark": "winobias", "metric": "devrat"}],
      "rows": [{"label": "a", "paper_only": True, "paper": {"d": "0.1"}}]}, "finite numbers"),
    ({"title": "t", "columns": [{"id": "d", "benchmark": "winobias", "metric": "devrat"}],
      "rows": [{"label": "a", "match": {}}], "plots": [{"kind": "tradeoff", "x": "d", "y": "z"}]}, "not a column id"),
    ("just a string", "expected a mapping"),
]


@pytest.mark.parametrize("data,message", BAD_SPECS)
def test_malformed_specs_raise_clearly(data, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(data, name="bad")


def test_shipped_specs_load_with_paper_numbers():
    specs = {s.name: s for s in load_specs(REPO / "reproductions")}
    for name in ["gender_sd14", "race_sd14", "safety_sd14", "safety_i2p_categories_sd14", "ablation_gender_sd14",
                 "lambda_sweep_gender_sd14", "sdxl_transfer", "codsma_professions_sd14", "gender_toy", "race_toy",
                 "safety_toy", "lambda_sweep_toy", "lambda_sweep_lr_toy"]:
        assert name in specs, name
    paper = {r.label: r.paper for r in specs["gender_sd14"].rows}
    assert paper["RespoDiff"] == {"devrat": 0.14, "winoalign": 27.30, "fid": 14.91, "clip": 30.67}
    assert paper["CoDSMa"] == {"devrat": 0.07, "fid": 17.30, "clip": 29.96}
    prof = {r.label: r.paper for r in specs["codsma_professions_sd14"].rows}
    assert prof["SD"]["laborer"] == 1.00 and prof["CoDSMa"]["secretary"] == 0.16
    assert {r.label: r.paper for r in specs["ablation_gender_sd14"].rows}["λ = 4"]["devrat"] == 0.29
    assert all(not r.paper for s in specs.values() if s.name.endswith("_toy") for r in s.rows)


def test_cli_with_no_results_renders_dashes(tmp_path, capsys):
    out = tmp_path / "tables"
    rc = main(["tables", "--results", str(tmp_path / "missing"), "--specs", str(REPO / "reproductions"),
               "--out", str(out), "--plots", str(tmp_path / "plots")])
    assert rc == 0
    md = (out / "gender_sd14.md").read_text()
    assert "– (paper 0.68)" in md and "Warnings (" in md
    assert (out / "lambda_sweep_gender_sd14.tex").exists() and (out / "index.md").exists()
    assert not (tmp_path / "plots").exists()  # no data, no plot
    assert main(["tables", "--results", str(tmp_path / "missing"), "--specs", str(REPO / "reproductions"),
                 "--out", str(out), "--strict"]) == 1


def test_render_tables_writes_sweep_plot(tmp_path):
    root = tmp_path / "runs"
    for lam in (0.0, 0.5, 4.0):
        _write(root, f"l{lam}", "winobias", [_metric("devrat", 0.3 - lam / 20), _metric("winoalign", 27 - lam / 4, hib=True)],
               overrides=[f"method.lambda_sem={lam:g}"], lam=lam)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "lambda_sweep_gender_sd14.yaml").write_text((REPO / "reproductions/lambda_sweep_gender_sd14.yaml").read_text())
    tables = render_tables(root, specs, tmp_path / "tables", tmp_path / "plots")
    assert tables["lambda_sweep_gender_sd14"].filled == 6 and tables["lambda_sweep_gender_sd14"].spec.plots
    png = tmp_path / "plots" / "lambda_tradeoff_gender_sd14.png"
    assert png.stat().st_size > 1000
    assert not (tmp_path / "plots" / "lambda_tradeoff_gender_sd14_clip.png").exists()  # no COCO results


def test_demo_prints_the_experiments_tables(tmp_path, capsys):
    outputs = tmp_path / "outputs"
    write_result(outputs / "gender_toy" / "default", {
        "benchmark": "winobias_toy", "experiment": "gender_toy", "run_name": "default", "overrides": [],
        "method": "respodiff", "metrics": [{"name": "devrat", "value": 0.05}, {"name": "kind_recognised", "value": 0.9}]})
    rc = main(["demo", "--experiment", "gender_toy", "--outputs", str(outputs), "--results", str(tmp_path / "runs"),
               "--specs", str(REPO / "reproductions"), "--out", str(tmp_path / "tables")])
    out = capsys.readouterr().out
    assert rc == 0 and "# Toy world, gender" in out and "| RespoDiff (RAM + SAM) | 0.05 | 0.90 |" in out
    assert (tmp_path / "runs" / "gender_toy" / "default" / "winobias_toy.json").exists()
