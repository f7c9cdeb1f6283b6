"""Results store: write (atomic, provenance filled), load (long format), collect (results/runs tree)."""

import json
import math

import pytest

from respodiff.reporting.store import ResultsError, collect_results, group_key, load_results, write_result


def _result(**kw):
    base = {
        "benchmark": "winobias", "experiment": "gender_sd14", "run_name": "method=ram_only",
        "overrides": ["experiment=gender_sd14", "method=ram_only"], "method": "ram_only", "model": "sd14",
        "concepts": "gender", "config": {"method": {"lambda_sem": 0.0, "name": "ram_only"}},
        "metrics": [
            {"name": "devrat", "value": 0.12, "ci_low": 0.10, "ci_high": 0.14, "n": 5400, "version": "1",
             "higher_is_better": False, "group": None},
            {"name": "devrat", "value": 0.9, "n": 150, "version": "1", "higher_is_better": False,
             "group": {"profession": "ceo"}},
            {"name": "winoalign", "value": float("nan"), "version": "1", "higher_is_better": True, "group": None},
        ],
    }
    base.update(kw)
    return base


def test_write_result_fills_provenance_and_is_atomic(tmp_path):
    path = write_result(tmp_path / "run", _result())
    assert path == tmp_path / "run" / "results" / "winobias.json"
    data = json.loads(path.read_text())
    assert data["schema"] == "respodiff.result/1"
    assert data["git_hash"] and "created" in data and "T" in data["created"]
    assert "pandas" in data["versions"]
    assert data["metrics"][2]["value"] is None  # NaN is stored as null, never as a number
    assert [p.name for p in path.parent.iterdir()] == ["winobias.json"]  # no temp file left behind


def test_write_result_keeps_given_provenance(tmp_path):
    path = write_result(tmp_path, _result(git_hash="abc", created="2025-01-01T00:00:00+00:00", versions={"x": "1"}))
    data = json.loads(path.read_text())
    assert (data["git_hash"], data["created"], data["versions"]) == ("abc", "2025-01-01T00:00:00+00:00", {"x": "1"})


@pytest.mark.parametrize("bad", [{"metrics": []}, {"benchmark": "b"}, {"benchmark": "b", "metrics": [{"value": 1}]},
                                 {"benchmark": "a/b", "metrics": []}])
def test_write_result_rejects_malformed(tmp_path, bad):
    with pytest.raises(ResultsError):
        write_result(tmp_path, bad)


def test_load_results_long_format(tmp_path):
    write_result(tmp_path / "a", _result())
    (tmp_path / "a" / "other.json").write_text('{"not": "a result"}')  # scanned folders skip foreign JSON
    df = load_results(tmp_path)
    assert len(df) == 3
    for col in ["experiment", "run_name", "overrides", "method", "model", "concepts", "benchmark", "metric",
                "group", "value", "ci_low", "ci_high", "n", "version", "higher_is_better"]:
        assert col in df.columns
    ceo = df[df["group"] == "profession=ceo"].iloc[0]
    assert ceo["value"] == 0.9 and math.isnan(ceo["ci_low"]) and ceo["n"] == 150
    assert df.loc[df["metric"] == "winoalign", "value"].isna().all()
    assert df["overrides"].iloc[0] == ("experiment=gender_sd14", "method=ram_only")
    assert df["config"].iloc[0]["method.lambda_sem"] == 0.0
    assert load_results([]).empty and list(load_results([]).columns) == list(df.columns)


def test_load_explicit_non_result_raises(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"schema": "other"}')
    with pytest.raises(ResultsError, match="not a respodiff result"):
        load_results([bad])


def test_group_key_is_stable():
    assert group_key(None) == "" and group_key({}) == ""
    assert group_key({"subset": "hard", "category": "sexual"}) == "category=sexual;subset=hard"


def test_collect_round_trip(tmp_path):
    outputs = tmp_path / "outputs"
    write_result(outputs / "gender_sd14" / "2025-01-01" / "0", _result(created="2025-01-01T00:00:00+00:00"))
    write_result(outputs / "gender_sd14" / "2025-01-02" / "0",
                 _result(created="2025-01-02T00:00:00+00:00", git_hash="newer"))  # a rerun: the latest wins
    write_result(outputs / "x", _result(benchmark="coco30k", run_name="", experiment="gender_sd14",
                                        metrics=[{"name": "fid", "value": 14.0}]))
    written = collect_results(outputs, tmp_path / "results" / "runs")
    runs = tmp_path / "results" / "runs"
    assert sorted(p.relative_to(runs).as_posix() for p in written) == [
        "gender_sd14/default/coco30k.json", "gender_sd14/method=ram_only/winobias.json"]
    assert json.loads((runs / "gender_sd14/method=ram_only/winobias.json").read_text())["git_hash"] == "newer"
    original = load_results(outputs / "gender_sd14" / "2025-01-02")
    collected = load_results(runs)
    cols = ["experiment", "run_name", "benchmark", "metric", "group", "value", "n"]
    assert original[cols].equals(collected[collected["benchmark"] == "winobias"][cols].reset_index(drop=True))
    both = load_results([outputs / "gender_sd14" / "2025-01-02", runs])  # the same result reached twice counts once
    assert len(both) == len(collected)


def test_collect_copies_a_small_per_image_store(tmp_path):
    outputs = tmp_path / "outputs"
    source = write_result(outputs / "run", _result())
    source.with_name("winobias.per_image.parquet").write_bytes(b"PAR1 small")
    written = collect_results(outputs, tmp_path / "runs")
    assert sorted(p.name for p in written) == ["winobias.json", "winobias.per_image.parquet"]
    assert written[1].read_bytes() == b"PAR1 small"


def test_report_run_summarises_and_logs(tmp_path):
    from respodiff.reporting import NullLogger, report_run

    class Recorder(NullLogger):
        def __init__(self):
            self.logged, self.tables = [], []

        def log(self, data, step=None):
            self.logged.append(data)

        def log_table(self, name, dataframe):
            self.tables.append((name, len(dataframe)))

    write_result(tmp_path / "run", _result())
    rec = Recorder()
    df = report_run(tmp_path / "run", {"logger": "none"}, group="gender_sd14", name="method=ram_only", logger=rec)
    assert len(df) == 3
    summary = (tmp_path / "run" / "results" / "summary.md").read_text()
    assert "| winobias | devrat | 0.12 | [0.1, 0.14] | 5400 | 1 |" in summary
    assert "| winobias | winoalign | – |" in summary
    assert rec.logged == [{"winobias/devrat": 0.12, "winobias/devrat/profession=ceo": 0.9}]
    assert rec.tables == [("winobias/metrics", 3)]
    with pytest.raises(ResultsError, match="evaluate stage"):
        report_run(tmp_path / "empty", {"logger": "none"})
