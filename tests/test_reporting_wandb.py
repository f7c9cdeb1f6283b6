"""W&B logger: offline run folder without network, NullLogger for logger=none, init failures never raise."""

import pandas as pd
import pytest

from respodiff.reporting import wandb_logger
from respodiff.reporting.wandb_logger import NullLogger, WandbLogger, log_result, make_logger, resolve_mode


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login can leak in
    return tmp_path


def test_offline_run_writes_local_folder(offline_env, tmp_path):
    section = {"name": "wandb", "project": "respodiff-test", "mode": "auto", "settings": {"x_disable_stats": True}}
    cfg = {"experiment_name": "gender_toy", "logger": section}
    run_dir = tmp_path / "run"
    # As run.py calls it: the logger section, plus the whole resolved config to record.
    with make_logger(section, run_dir, group="gender_toy", name="method.lambda_sem=4", config=cfg) as logger:
        assert isinstance(logger, WandbLogger) and logger.mode == "offline"
        for step in range(3):
            logger.log({"train/loss_resp": 1.0 / (step + 1)}, step=step)
        log_result(logger, {"benchmark": "toy_gender", "metrics": [
            {"name": "devrat", "value": 0.1, "n": 10, "group": None},
            {"name": "devrat", "value": 0.2, "n": 5, "group": {"profession": "ceo"}}]})
        logger.log_table("extra", pd.DataFrame({"a": [1, 2], "b": [("x",), None]}))
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].iterdir())
    logger.finish()  # a second finish is harmless


def test_logger_none_gives_null_logger(tmp_path):
    for cfg in ({"logger": "none"}, {"logger": None}, {"logger": {"name": "none"}}, {"logger": {"mode": "disabled"}},
                {"name": "none"}, {"name": "wandb", "mode": "disabled"}):
        logger = make_logger(cfg, tmp_path / "run", group="g", name="n")
        assert isinstance(logger, NullLogger)
        with logger as lg:
            lg.log({"x": 1}, step=0)
            lg.log_table("t", pd.DataFrame({"a": [1]}))
            lg.log_image("img", tmp_path / "missing.png")
    assert not (tmp_path / "run" / "wandb").exists()


def test_init_failure_warns_and_continues(tmp_path, monkeypatch, caplog):
    import wandb

    def boom(**kwargs):
        raise TimeoutError("no network")

    monkeypatch.setattr(wandb, "init", boom)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = make_logger({"logger": {"name": "wandb"}}, tmp_path, group="g", name="n")
    assert isinstance(logger, NullLogger)
    assert "W&B init (online) failed" in caplog.text and "W&B init (offline) failed" in caplog.text


def test_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    assert resolve_mode("auto") == "offline"  # no account: never try the network
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_logger.account_configured() and resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("disabled") == "disabled"
    with pytest.raises(ValueError):
        resolve_mode("sometimes")
