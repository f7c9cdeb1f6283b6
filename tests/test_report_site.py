"""The report site of a tiny toy multirun, opened in a real headless browser; the demo's report step.

One toy-world multirun (base model and RespoDiff, 2 training iterations, 2 sampling steps, one image per
(template, concept): ~1 minute on CPU) feeds every test here. The browser is Debian's chromium (`apt-get install
chromium`; .ci/run installs it), driven by Playwright without any downloaded browser; the browser tests skip, saying
so, where /usr/bin/chromium or the playwright package is absent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import tomllib
from PIL import Image

from respodiff.reporting.grids import paired_keys
from respodiff.reporting.site import build_site
from respodiff.reporting.site.sources import verdict_lines
from respodiff.reporting.store import collect_results, load_results

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
# Flags that keep a headless chromium from reaching the network or a GPU.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
TINY = ("train.iterations=2", "eval.sampler.steps=2", "eval.winobias_toy.images_per_concept=1",
        "eval.benchmarks=[winobias_toy]", "logger=none")
SPEC = """
title: Tiny toy gender table
source: a test multirun
columns:
  - {id: devrat, benchmark: winobias_toy, metric: devrat}
  - {id: kind, benchmark: winobias_toy, metric: kind_recognised}
rows:
  - {label: Base model, match: {experiment: gender_toy, method: none}}
  - {label: RespoDiff, match: {experiment: gender_toy, method: respodiff}}
  - {label: A paper-only row, paper_only: true, paper: {devrat: 0.5}}
plots:
  - {kind: tradeoff, name: tiny_tradeoff, x: devrat, y: kind}
"""
EMPTY_SPEC = """
title: A table nothing fills
source: a test
columns: [{id: devrat, benchmark: winobias, metric: devrat}]
rows: [{label: SD, match: {experiment: gender_sd14, method: none}}]
"""


def environment(workspace: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "HF_HOME": str(workspace / "hf"),
            "PYTHONPATH": str(ROOT), "RESPODIFF_OUTPUTS": str(workspace / "outputs"),
            "RESPODIFF_CACHE": str(workspace / "cache"), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_multirun(workspace) -> Path:
    """Outputs folder with gender_toy/<run>/{images,results} for method=none and method=respodiff."""
    command = [sys.executable, "run.py", "-m", "experiment=gender_toy", "method=none,respodiff", *TINY]
    done = subprocess.run(command, cwd=ROOT, env=environment(workspace), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return workspace / "outputs"


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("specs")
    (folder / "tiny_gender_toy.yaml").write_text(SPEC)
    (folder / "nothing.yaml").write_text(EMPTY_SPEC)
    return folder


@pytest.fixture(scope="module")
def site(tiny_multirun, specs) -> Path:
    out = tiny_multirun / "site-test"  # inside the outputs folder, as a local report is
    index = build_site([tiny_multirun], specs, out, [tiny_multirun], n_columns=4)
    assert index == out / "index.html"
    return out


def _grids(site: Path) -> list[dict]:
    return json.loads((site / "tiny_gender_toy" / "grids.json").read_text())["sections"]


# ---------------------------------------------------------------------------------------------------------------
# What the site holds (no browser)


def test_grids_pair_methods_by_prompt_and_seed(site, tiny_multirun):
    (section,) = _grids(site)
    assert section["benchmark"] == "winobias_toy" and section["group_heading"] == "profession"
    assert [r["label"] for r in section["rows"]] == ["Base model", "RespoDiff"] and all(r["found"] for r in section["rows"])
    assert len(section["groups"]) == 8  # every kind of the toy world
    stores = {r["label"]: ROOT / r["store"] for r in section["rows"]}  # shown relative to the working folder if inside
    for group in section["groups"]:
        assert group["row_labels"] == ["Base model", "RespoDiff"] and len(group["columns"]) == 4
        assert len({c["prompt_id"] for c in group["columns"]}) > 1  # several templates, not one prompt's samples
        for j, column in enumerate(group["columns"]):
            assert group["name"] in column["prompt"]
            base, method = group["cells"][0][j], group["cells"][1][j]
            assert base["image_id"] == method["image_id"]  # <benchmark>/<prompt id>/<sample>: the same noise
            assert method["concept"] in ("man", "woman") and base["concept"] == ""
            assert any(line.startswith("kind: ") for line in base["verdicts"])
            # The thumbnail shows the store's image of exactly this (prompt id, seed), in each row.
            for label, cell in zip(group["row_labels"], (base, method)):
                manifest = pd.read_parquet(stores[label] / "manifest.parquet")
                hit = manifest[(manifest["prompt_id"] == column["prompt_id"]) & (manifest["seed"] == column["seed"])]
                original = np.asarray(Image.open(stores[label] / hit["path"].iloc[0]).convert("RGB"))
                assert np.array_equal(np.asarray(Image.open(site / cell["thumb"]).convert("RGB")), original)
    # Balanced sampling alternates concepts with the sample index: the columns show both modules.
    concepts = {g["cells"][1][j]["concept"] for g in section["groups"] for j in range(4)}
    assert concepts == {"man", "woman"}


def test_pages_cards_and_plots(site):
    page = (site / "tiny_gender_toy" / "index.html").read_text()
    assert "Tiny toy gender table" in page and "Runs and evaluator cards" in page
    cards = sorted((site / "tiny_gender_toy" / "runs").glob("*.json"))
    assert len(cards) == 2
    record = next(r for r in map(json.loads, (c.read_text() for c in cards)) if "method=respodiff" in r["run"])
    assert record["command"].startswith("python run.py experiment=gender_toy") and "method=respodiff" in record["command"]
    assert record["evaluator"]["classifiers"] and record["git_hash"] and record["config"]["method"]["name"] == "respodiff"
    assert (site / "tiny_gender_toy" / "plots" / "tiny_tradeoff.png").stat().st_size > 1000
    index = (site / "index.html").read_text()
    assert 'href="tiny_gender_toy/index.html"' in index and "A table nothing fills" in index
    assert not (site / "nothing").exists()


def test_committed_style_site_keeps_grids_without_the_images(tiny_multirun, specs, tmp_path):
    """A site outside the outputs folder holds only thumbnails, and a rebuild without the image stores (a fresh
    clone) keeps its grids while the runs behind them are unchanged; a new site without images says so."""
    runs = tmp_path / "runs"  # as results/runs: the results JSONs without their images
    collect_results(tiny_multirun, runs)
    committed = tmp_path / "site"
    build_site([runs], specs, committed, [tiny_multirun], n_columns=2)
    first = _grids(committed)[0]
    assert first["groups"] and not first["reused"]
    assert all(cell["full"] == cell["thumb"] for g in first["groups"] for line in g["cells"] for cell in line)
    thumbs = sorted(p.name for p in (committed / "thumbs").iterdir())
    build_site([runs], specs, committed, [], n_columns=2)
    again = _grids(committed)[0]
    assert again["reused"] and again["groups"] == first["groups"]
    assert sorted(p.name for p in (committed / "thumbs").iterdir()) == thumbs
    fresh = tmp_path / "fresh"
    build_site([runs], specs, fresh, [], n_columns=2)
    section = _grids(fresh)[0]
    assert not section["groups"] and all(r["note"] == "images not found locally" for r in section["rows"])
    assert "images were not found locally" in (fresh / "tiny_gender_toy" / "index.html").read_text()


def test_paired_keys_use_keys_never_row_order():
    """Shared (prompt id, seed) keys only, whatever order each store lists them in; spread diagonally over prompts
    and samples (balanced sampling alternates concepts with the sample index)."""
    rows = [{"prompt_id": f"p{p}", "seed": 100 * p + k, "sample_index": k, "prompt": f"prompt {p}"}
            for p in range(3) for k in range(4)]
    base = pd.DataFrame(rows)
    method = base.sample(frac=1, random_state=0).iloc[1:]  # shuffled, one key missing
    missing = set(zip(base["prompt_id"], base["seed"])) - set(zip(method["prompt_id"], method["seed"]))
    keys = paired_keys({"base": base, "method": method}, n_columns=6)
    chosen = list(zip(keys["prompt_id"], keys["seed"]))
    assert len(chosen) == len(set(chosen)) == 6 and not set(chosen) & missing
    assert {p for p, _ in chosen} == {"p0", "p1", "p2"}
    assert {s % 2 for _, s in chosen} == {0, 1}  # even and odd samples: both concepts of a balanced run
    assert paired_keys({"base": base, "method": method.iloc[::-1]}, 6).equals(keys)


def test_verdicts_name_what_the_classifiers_read():
    toy = {"gender": "woman", "race": "dark", "kind": "chef", "kind_recognised": False, "profession": "nurse",
           "unsafe": False, "agreement": 0.0}
    assert verdict_lines(toy) == ["woman · dark", "kind: chef ✗ (wanted nurse)"]
    i2p_toy = {"categories": "violence,shocking", "kind": "farmer", "named_kind": "farmer", "unsafe": True,
               "unsafe_pixels": 34}
    assert verdict_lines(i2p_toy) == ["kind: farmer ✓", "UNSAFE (34 px)"]
    i2p = {"either": True, "nudenet": False, "q16": True, "q16_p": 0.91}
    assert verdict_lines(i2p) == ["INAPPROPRIATE: Q16 · Q16 p 0.91"]


def test_prompt_and_table_text_is_escaped_on_the_page():
    """Prompts, labels and verdicts come from files anyone can write: the page shows them, never runs them."""
    from respodiff.reporting.site.build import _environment, table_blocks

    evil = '<script>alert(1)</script> "a" & b'
    cell = {"thumb": "thumbs/x.png", "full": None, "width": 32, "height": 32, "path": evil, "image_id": evil,
            "concept": evil, "verdicts": [evil]}
    section = {"benchmark": "i2p_toy", "group_heading": "category", "reused": False, "message": "",
               "rows": [{"label": evil, "run_id": evil, "store": evil, "note": evil}],
               "groups": [{"name": evil, "columns": [{"prompt": evil, "prompt_id": evil, "seed": 1}],
                           "row_labels": [evil], "cells": [[cell]]}]}
    table_html, details = table_blocks(f"# title\n\n| method |\n|---|\n| {evil} |\n\nNotes:\n- {evil}")
    html = _environment().get_template("experiment.html").render(
        root="../", name=evil, title=evil, table_html=table_html, table_details=details, plots=[], sections=[section],
        cards=[], outputs=[])
    assert "<script>" not in html and html.count("&lt;script&gt;") >= 10


def test_templates_ship_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["respodiff"]
    package = ROOT / "respodiff"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    needed = [*(package / "reporting/site/templates").glob("*.html"), package / "reporting/site/static/style.css"]
    assert len(needed) >= 4 and all(p in shipped for p in needed)


def test_wandb_gets_the_same_grids_and_one_row_per_image(tiny_multirun, specs, tmp_path, monkeypatch):
    from respodiff.reporting.wandb_logger import WandbLogger, make_logger

    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    logger = make_logger({"name": "wandb", "project": "respodiff-test", "settings": {"x_disable_stats": True}},
                         tmp_path / "wandb-run", group="report", name="site")
    assert isinstance(logger, WandbLogger)
    with logger:
        build_site([tiny_multirun], specs, tmp_path / "site", [tiny_multirun], n_columns=2, logger=logger)
    (run,) = (tmp_path / "wandb-run" / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    panels = list((media / "images" / "grids").rglob("*.png"))
    assert len(panels) == 8  # one per kind, as on the page
    (table,) = (media / "table" / "images").rglob("*.table.json")
    data = json.loads(table.read_text())
    n_images = sum(1 for g in _grids(tmp_path / "site")[0]["groups"] for line in g["cells"] for cell in line if cell)
    assert len(data["data"]) == n_images == 8 * 2 * 2
    assert {"prompt", "concept", "seed", "verdicts", "image"} <= set(data["columns"])


# ---------------------------------------------------------------------------------------------------------------
# In a real browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install chromium) to run this test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (dev extra) is not installed")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as driver:
        # A persistent context in an empty folder is a fresh profile; executable_path: nothing is downloaded.
        context = driver.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM),
                                                            headless=True, args=CHROMIUM_FLAGS)
        yield context
        context.close()


def _open(context, url: str):
    """Load a page and report everything that went wrong: console errors, script errors, failed requests."""
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    response = page.goto(url, wait_until="load")
    assert response is None or response.ok, url
    return page, problems


def _check_page(context, url: str) -> tuple[object, list[str]]:
    page, problems = _open(context, url)
    broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                           ".map(i => i.src)")
    assert broken == [], f"{url}: images that did not load: {broken[:5]}"
    links = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    local = []
    for link in links:
        parsed = urlparse(link)
        assert parsed.scheme == "file", f"{url} links outside the site: {link}"
        target = Path(unquote(parsed.path))
        assert target.exists(), f"{url}: link to a missing file {target}"
        if parsed.fragment:
            anchor = page.evaluate("id => document.getElementById(id) !== null", parsed.fragment)
            assert anchor or target.as_uri() != url.split("#")[0], f"{url}: no element #{parsed.fragment}"
        local.append(link)
    assert problems == [], f"{url}: {problems}"
    return page, local


def test_site_in_a_browser(browser, site, tmp_path):
    index_url = (site / "index.html").resolve().as_uri()
    index, links = _check_page(browser, index_url)
    pages = sorted({link.split("#")[0] for link in links if link.endswith("/index.html") and link != index_url})
    assert pages == [(site / "tiny_gender_toy" / "index.html").resolve().as_uri()]
    page, links = _check_page(browser, pages[0])
    table_rows = page.evaluate("Array.from(document.querySelectorAll('#table table tbody tr'))"
                               ".map(r => r.cells[0].innerText.trim())")
    assert table_rows == ["Base model", "RespoDiff", "A paper-only row"]
    cells = page.evaluate("Array.from(document.querySelectorAll('#table table tbody tr'))"
                          ".map(r => Array.from(r.cells).slice(1).map(c => c.innerText.trim()))")
    assert all(re.match(r"^\d\.\d\d \[", c) for row in cells[:2] for c in row)  # our numbers, with intervals
    assert cells[2][0] == "– (paper 0.50)"
    grid_rows = page.evaluate("Array.from(document.querySelectorAll('table.grid')).map(t => "
                              "Array.from(t.querySelectorAll('tbody th')).map(h => h.innerText.trim()))")
    assert len(grid_rows) == 8 and all(rows == ["Base model", "RespoDiff"] for rows in grid_rows)
    shown = page.evaluate("document.querySelectorAll('table.grid img').length")
    assert shown == 8 * 2 * 4 and any("/thumbs/" in link for link in links)  # each image links its full size
    assert any(link.endswith(".json") for link in links)  # run records one click away
    # The evaluator card opens with a click and shows the record's facts.
    card = page.locator("details.card").first
    card.locator("summary").click()
    assert "evaluator.classifiers" in card.inner_text()
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


# ---------------------------------------------------------------------------------------------------------------
# The demo's report step


def test_demo_report_writes_under_outputs_and_compares_with_the_committed_numbers(tiny_multirun, workspace):
    tracked = ["results", "models"]  # where a report could write; .ci/run checks the whole clone after make demo
    before = subprocess.run(["git", "status", "--porcelain", "--", *tracked], cwd=ROOT, capture_output=True,
                            text=True).stdout
    done = subprocess.run([sys.executable, "-m", "respodiff.reporting", "demo", "--experiment", "gender_toy"],
                          cwd=ROOT, env=environment(workspace), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    after = subprocess.run(["git", "status", "--porcelain", "--", *tracked], cwd=ROOT, capture_output=True,
                           text=True).stdout
    assert after == before, "the demo changed tracked results"
    lines = done.stdout.strip().splitlines()
    index = Path(lines[-1].removeprefix("report: "))
    assert lines[-1].startswith("report: ") and index.is_file()
    assert index.is_relative_to(tiny_multirun.resolve()) and (tiny_multirun / "report" / "tables" / "gender_toy.md").is_file()
    assert "Numbers vary slightly across CPUs" in done.stdout
    # The base row beside the committed base model's DevRat, whatever the committed number is.
    committed = load_results([ROOT / "results" / "runs" / "gender_toy" / "method=none"])
    devrat = committed[(committed["benchmark"] == "winobias_toy") & (committed["metric"] == "devrat")
                       & (committed["group"] == "")]["value"].iloc[-1]
    base_line = next(line for line in lines if line.startswith("| Base model |") and " / " in line)
    assert base_line.split(" | ")[1].endswith(f" / {devrat:.2f}")
