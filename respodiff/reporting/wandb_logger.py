"""A thin Weights & Biases logger that is offline-first and never takes a run down.

Mode: an explicit `mode` in the logger config wins; otherwise online only when an account is configured
(WANDB_API_KEY, or a `wandb login` entry in ~/.netrc) and WANDB_MODE is not offline/disabled, else offline.
Offline runs land in `<run_dir>/wandb/offline-run-*` and can be uploaded later with `wandb sync`.
Any W&B failure (no network, bad key, missing package) is logged as a warning and the run continues unlogged:
the numbers of record are the results JSONs, W&B is a convenience view.

Run group = experiment, run name = overrides string; each logger owns its own run (reinit="create_new") and
finishes it on exit, so multirun jobs in one process never merge into one W&B run.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

log = logging.getLogger(__name__)

_NONE = {"none", "null", "off", "disabled", "false", ""}
_DEFAULTS = {"project": "respodiff", "entity": None, "mode": "auto", "tags": [], "notes": None, "init_timeout": 60,
             "log_config": True, "settings": {}}


class NullLogger:
    """Does nothing, with the same interface as WandbLogger (logger=none, or W&B unavailable)."""

    mode = "disabled"
    run_dir: Path | None = None

    def log(self, data: dict, step: int | None = None) -> None:
        pass

    def log_table(self, name: str, dataframe: pd.DataFrame) -> None:
        pass

    def log_image(self, name: str, path: str | os.PathLike, caption: str | None = None) -> None:
        pass

    def log_image_table(self, name: str, rows: list[dict], image_column: str = "image") -> None:
        pass

    def finish(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.finish()


def _table_safe(df: pd.DataFrame) -> pd.DataFrame:
    # wandb.Table accepts scalars only; tuples (overrides), dicts (config) and pd.NA become strings / None.
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: v if v is None or isinstance(v, (str, int, float, bool)) else str(v))
        elif str(out[col].dtype) in ("Int64", "boolean"):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


class WandbLogger:
    """A live W&B run; every call is guarded so logging trouble warns once and never raises."""

    def __init__(self, run, mode: str, run_dir: Path):
        self._run = run
        self.mode = mode
        self.run_dir = run_dir
        self._warned = False
        self._finished = False

    def _guard(self, what: str, fn) -> None:
        if self._finished:
            return
        try:
            fn()
        except Exception as exc:  # logging must never stop training or evaluation
            if not self._warned:
                log.warning("W&B %s failed (%s: %s); further W&B errors are not reported", what,
                            type(exc).__name__, exc)
                self._warned = True

    def log(self, data: dict, step: int | None = None) -> None:
        self._guard("log", lambda: self._run.log(dict(data), step=step))

    def log_table(self, name: str, dataframe: pd.DataFrame) -> None:
        import wandb

        self._guard("log_table", lambda: self._run.log({name: wandb.Table(dataframe=_table_safe(dataframe))}))

    def log_image(self, name: str, path: str | os.PathLike, caption: str | None = None) -> None:
        import wandb

        self._guard("log_image", lambda: self._run.log({name: wandb.Image(str(path), caption=caption)}))

    def log_image_table(self, name: str, rows: list[dict], image_column: str = "image") -> None:
        """A wandb.Table with one row per dict; `image_column` holds image paths, shown as wandb.Image."""
        import wandb

        def log_table():
            columns = list(rows[0]) if rows else [image_column]
            data = [[wandb.Image(str(row[c])) if c == image_column else row[c] for c in columns] for row in rows]
            self._run.log({name: wandb.Table(columns=columns, data=data)})

        self._guard("log_image_table", log_table)

    def finish(self, exit_code: int | None = None) -> None:
        if self._finished:
            return
        self._guard("finish", lambda: self._run.finish(exit_code=exit_code))
        self._finished = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=1 if exc_type is not None else None)


def account_configured() -> bool:
    """True when W&B could authenticate without asking: an API key in the environment or a netrc login."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(requested: str | None) -> str:
    """'online' | 'offline' | 'disabled' from the configured mode, WANDB_MODE and whether an account exists."""
    requested = (requested or "auto").lower()
    env = os.environ.get("WANDB_MODE", "").lower()
    if requested in ("disabled", "offline", "online"):
        return requested
    if requested != "auto":
        raise ValueError(f"logger.mode must be auto, online, offline or disabled, got {requested!r}")
    if env in ("offline", "dryrun"):
        return "offline"
    if env == "disabled":
        return "disabled"
    return "online" if account_configured() else "offline"


def _logger_cfg(cfg_dict: dict | None) -> dict | None:
    """The logger settings from a resolved run config (its `logger` section) or from the section itself.

    None means logging is off (`logger: none`, `name: none`, or the section is null).
    """
    cfg_dict = {} if cfg_dict is None else cfg_dict
    section = cfg_dict["logger"] if "logger" in cfg_dict else cfg_dict
    if section is None or (isinstance(section, str) and section.lower() in _NONE):
        return None
    if isinstance(section, str):
        section = {"name": section}
    kind = str(section.get("name", section.get("type", "wandb"))).lower()
    if kind in _NONE:
        return None
    if kind != "wandb":
        raise ValueError(f"unknown logger {kind!r}: use wandb or none")
    return {**_DEFAULTS, **{k: v for k, v in section.items() if k not in ("name", "type")}}


def make_logger(cfg_dict: dict | None, run_dir: str | os.PathLike, group: str, name: str, config: dict | None = None):
    """A WandbLogger for the run (group = experiment, name = overrides string), or a NullLogger.

    `cfg_dict` is either the resolved run config (its `logger` section is read) or just the logger section;
    `config` is what W&B records as the run config (default: `cfg_dict` when it is the whole run config).
    Never raises for W&B trouble: it warns and returns a NullLogger.
    """
    lcfg = _logger_cfg(cfg_dict)
    if lcfg is None:
        return NullLogger()
    mode = resolve_mode(lcfg.get("mode"))
    if mode == "disabled":
        return NullLogger()
    try:
        import wandb
    except ImportError:
        log.warning("logger=wandb but the wandb package is not installed; continuing without logging")
        return NullLogger()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config is None and cfg_dict and "logger" in cfg_dict:
        config = cfg_dict
    if not lcfg.get("log_config", True):
        config = None
    attempts = [mode] if mode == "offline" else [mode, "offline"]
    for attempt in attempts:
        settings = {"init_timeout": float(lcfg["init_timeout"]), "silent": True, **(lcfg.get("settings") or {})}
        try:
            run = wandb.init(
                project=lcfg["project"], entity=lcfg.get("entity"), dir=str(run_dir), group=group or None,
                name=name or None, config=config, tags=list(lcfg.get("tags") or []) or None, notes=lcfg.get("notes"),
                mode=attempt, reinit="create_new", settings=wandb.Settings(**settings),
            )
        except Exception as exc:  # network down, bad key, service start failure
            log.warning("W&B init (%s) failed: %s: %s", attempt, type(exc).__name__, exc)
            continue
        if attempt == "offline":
            log.info("W&B offline run in %s; upload later with `wandb sync %s/wandb/offline-run-*`", run_dir, run_dir)
        return WandbLogger(run, attempt, run_dir)
    log.warning("W&B unavailable; continuing without logging (results JSONs are unaffected)")
    return NullLogger()


def log_result(logger, result: dict, step: int | None = None) -> None:
    """Log one results JSON: its overall metrics as scalars `<benchmark>/<metric>`, all values as a table."""
    from respodiff.reporting.store import result_rows

    bench = result["benchmark"]
    rows = pd.DataFrame(result_rows(result))
    scalars = {f"{bench}/{r.metric}" + (f"/{r.group}" if r.group else ""): r.value
               for r in rows.itertuples() if r.value == r.value}
    if scalars:
        logger.log(scalars, step=step)
    cols = ["metric", "group", "value", "ci_low", "ci_high", "n", "version", "higher_is_better"]
    logger.log_table(f"{bench}/metrics", rows[cols] if not rows.empty else pd.DataFrame(columns=cols))
