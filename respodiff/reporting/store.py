"""Results store: one JSON per evaluated benchmark per run (schema in docs/CONTRACTS.md).

`write_result` is the only writer, so every result carries its provenance; `load_results` flattens any number of
them into one long DataFrame (one row per metric value) that tables and plots query; `collect_results` copies the
JSONs out of the (ignored) Hydra run folders into the committed `results/runs/<experiment>/<run_name>/` tree.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
from pathlib import Path

import pandas as pd

from respodiff.errors import RespodiffError
from respodiff.io import replace_atomically, short_hash, write_json_atomically
from respodiff.provenance import git_hash, package_versions

log = logging.getLogger(__name__)

SCHEMA = "respodiff.result/1"
_SCHEMA_PREFIX = "respodiff.result/"

COLUMNS = [
    "experiment", "run_name", "overrides", "method", "model", "concepts", "benchmark", "metric", "group",
    "value", "ci_low", "ci_high", "n", "version", "higher_is_better", "created", "git_hash", "config", "source",
    "stand_ins",
]


class ResultsError(RespodiffError):
    """A results JSON is malformed or cannot be stored."""


def group_key(group: dict | None) -> str:
    """Stable string for a metric group: "" for the overall value, else "k=v" pairs sorted by key, ";"-joined."""
    if not group:
        return ""
    if not isinstance(group, dict):
        raise ResultsError(f"metric group must be a dict or null, got {group!r}")
    return ";".join(f"{k}={group[k]}" for k in sorted(group))


def _check_result(result: dict, where: str) -> None:
    for key in ("benchmark", "metrics"):
        if key not in result:
            raise ResultsError(f"{where}: results JSON has no {key!r} field")
    if not isinstance(result["metrics"], list):
        raise ResultsError(f"{where}: 'metrics' must be a list")
    for i, m in enumerate(result["metrics"]):
        if not isinstance(m, dict) or "name" not in m or "value" not in m:
            raise ResultsError(f"{where}: metrics[{i}] needs at least 'name' and 'value', got {m!r}")
        group_key(m.get("group"))


def _json_safe(value):
    # NaN/inf are not JSON; store them as null so a reader sees "missing", never a number it might average.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    """Results JSON: strict (NaN is refused; write_result turns it into null first)."""
    return write_json_atomically(path, obj, sort_keys=False, allow_nan=False)


def write_result(run_dir: str | os.PathLike, result_dict: dict) -> Path:
    """Atomically write `<run_dir>/results/<benchmark>.json`, filling schema, git hash, versions and date if absent."""
    result = {"schema": result_dict.get("schema", SCHEMA), **result_dict}  # schema first: readable by eye
    _check_result(result, f"write_result({run_dir})")
    if not str(result.get("git_hash") or ""):
        result["git_hash"] = git_hash()
    if not result.get("versions"):
        result["versions"] = package_versions()
    if not result.get("created"):
        result["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for key in ("experiment", "run_name", "method", "model", "concepts"):
        result.setdefault(key, "")
    result.setdefault("overrides", [])
    benchmark = str(result["benchmark"])
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", benchmark):
        raise ResultsError(f"benchmark name {benchmark!r} is not usable as a file name")
    return atomic_write_json(Path(run_dir) / "results" / f"{benchmark}.json", _json_safe(result))


def read_result(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(result, dict) or not str(result.get("schema", "")).startswith(_SCHEMA_PREFIX):
        raise ResultsError(f"{path}: not a respodiff result (schema {SCHEMA!r} expected)")
    _check_result(result, str(path))
    return result


def _is_result_file(path: Path) -> bool:
    # Directory scans meet other JSON (W&B metadata, evaluator caches); only files declaring our schema count.
    try:
        if path.stat().st_size > 50_000_000:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        return False
    except ValueError as exc:  # possibly a damaged result: say so rather than drop a table cell silently
        log.warning("skipping %s: not valid JSON (%s)", path, exc)
        return False
    return isinstance(data, dict) and str(data.get("schema", "")).startswith(_SCHEMA_PREFIX)


def find_result_files(paths_or_dirs) -> list[Path]:
    if isinstance(paths_or_dirs, (str, os.PathLike)):
        paths_or_dirs = [paths_or_dirs]
    files: list[Path] = []
    for p in map(Path, paths_or_dirs):
        if p.is_dir():
            files.extend(f for f in sorted(p.rglob("*.json")) if "wandb" not in f.parts and _is_result_file(f))
        elif p.is_file():
            files.append(p)  # named explicitly: must be a result, read_result raises otherwise
        else:
            log.warning("results path %s does not exist; skipped", p)
    return files


def scored_by_stand_ins(result: dict) -> bool:
    """Whether stand-in evaluators (the tiny scale, respodiff/evaluation/stand_ins.py) produced the numbers."""
    evaluator = result.get("evaluator") or {}
    return bool(evaluator.get("stand_ins")) or evaluator.get("scale") == "tiny"


def _flatten(cfg, prefix: str = "") -> dict:
    out = {}
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = cfg
    return out


def _num(value):
    return float(value) if value is not None else math.nan


def result_rows(result: dict, source: str = "") -> list[dict]:
    """The long-format rows of one results JSON (one per metric value)."""
    base = {
        "experiment": str(result.get("experiment") or ""),
        "run_name": str(result.get("run_name") or ""),
        "overrides": tuple(str(o) for o in (result.get("overrides") or ())),
        "method": str(result.get("method") or ""),
        "model": str(result.get("model") or ""),
        "concepts": str(result.get("concepts") or ""),
        "benchmark": str(result["benchmark"]),
        "created": str(result.get("created") or ""),
        "git_hash": str(result.get("git_hash") or ""),
        # Flattened dotted keys, so a spec can select runs by a config value the overrides do not show.
        "config": _flatten(result.get("config") or {}),
        "source": source,
        "stand_ins": scored_by_stand_ins(result),
    }
    rows = []
    for m in result["metrics"]:
        hib = m.get("higher_is_better")
        rows.append({
            **base,
            "metric": str(m["name"]),
            "group": group_key(m.get("group")),
            "value": _num(m.get("value")),
            "ci_low": _num(m.get("ci_low")),
            "ci_high": _num(m.get("ci_high")),
            "n": int(m["n"]) if m.get("n") is not None else pd.NA,
            "version": str(m.get("version") or ""),
            "higher_is_better": bool(hib) if hib is not None else pd.NA,
        })
    return rows


def load_results(paths_or_dirs) -> pd.DataFrame:
    """One row per metric value of every results JSON found (files, or folders searched recursively).

    The same result reached twice (e.g. in outputs/ and in results/runs/) appears once.
    """
    rows = []
    for f in find_result_files(paths_or_dirs):
        rows.extend(result_rows(read_result(f), source=str(f)))
    df = pd.DataFrame(rows, columns=COLUMNS)
    if df.empty:
        return df
    key = ["experiment", "run_name", "benchmark", "created", "metric", "group"]
    df = df.loc[~df[key].astype(str).duplicated()].reset_index(drop=True)
    df["n"] = df["n"].astype("Int64")
    df["higher_is_better"] = df["higher_is_better"].astype("boolean")
    return df


_UNSAFE = re.compile(r"[^A-Za-z0-9=,._+@-]+")


def safe_dirname(name: str, default: str = "default") -> str:
    """File-system safe form of a run name (overrides string); long names keep a hash so they stay distinct."""
    clean = _UNSAFE.sub("_", name).strip("._") or default
    if len(clean) > 120:
        clean = clean[:100] + "_" + short_hash(name, 12)
    return clean


def _portable(text: str) -> str:
    """A committed copy names no machine: the repository becomes '.', the home folder '~'."""
    from respodiff.provenance import REPO_ROOT

    for root, short in ((str(REPO_ROOT), "."), (str(Path.home()), "~")):
        text = text.replace(json.dumps(root)[1:-1] + "/", short + "/").replace(json.dumps(root), json.dumps(short))
    return text


PER_IMAGE_COLLECT_LIMIT = 2_000_000  # bytes: the toy runs' stores (~50 kB), not the paper's (MBs per run)


def collect_results(outputs_root: str | os.PathLike, dest: str | os.PathLike = "results/runs",
                    include_stand_ins: bool = False) -> list[Path]:
    """Copy every run's results JSON under outputs_root to `<dest>/<experiment>/<run_name>/<benchmark>.json`.

    When two runs share experiment and run name (a rerun), the most recent `created` wins and a warning says so.
    Results scored by stand-in evaluators (tiny scale) are left out unless `include_stand_ins`: their numbers mean
    nothing and results/runs is committed. Returns the written paths.
    """
    chosen: dict[Path, tuple[str, Path]] = {}
    skipped = 0
    for f in find_result_files(outputs_root):
        result = read_result(f)
        if scored_by_stand_ins(result) and not include_stand_ins:
            skipped += 1
            continue
        experiment = safe_dirname(str(result.get("experiment") or ""), default="unknown")
        target = Path(dest) / experiment / safe_dirname(str(result.get("run_name") or "")) / f"{result['benchmark']}.json"
        created = str(result.get("created") or "")
        if target in chosen:
            other_created, other = chosen[target]
            newer = (created, str(f)) > (other_created, str(other))
            log.warning("two results for %s: %s and %s; keeping %s", target, other, f, f if newer else other)
            if not newer:
                continue
        chosen[target] = (created, f)
    written = []
    for target, (_, src) in sorted(chosen.items()):
        target.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(target, lambda handle, src=src: handle.write(_portable(Path(src).read_text()).encode()))
        written.append(target)
        # A small per-image store travels along, so committed runs can be re-scored and compared (`python -m
        # respodiff.evaluation rescore|compare`); paper-scale stores stay in the output folder.
        store = Path(src).with_name(f"{Path(src).stem}.per_image.parquet")
        if store.is_file() and store.stat().st_size <= PER_IMAGE_COLLECT_LIMIT:
            per_image = target.with_name(store.name)
            replace_atomically(per_image, lambda handle, store=store: handle.write(store.read_bytes()))
            written.append(per_image)
    log.info("collected %d result file(s) from %s into %s", len(written), outputs_root, dest)
    if skipped:
        log.warning("left out %d result(s) of %s scored by stand-in evaluators (tiny scale: numbers are meaningless); "
                    "--include-stand-ins collects them too", skipped, outputs_root)
    return written
