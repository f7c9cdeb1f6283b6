"""An attack's folder, <run>/attacks/<name>/: the found prompts, the record of how they were found, and the partial
state an interrupted attack resumes from.

- prompts.parquet: one row per source prompt: prompt_id (the attack prompt's, unique across attacks), prompt,
  source_prompt_id, source_prompt, source_benchmark, categories, hard (the source prompt's labels), attack, loss and
  loss_source (the attack's objective at the found and at the source prompt), search_seed, and attack-specific
  columns (tokens, substitutions).
- attack.json, written last (it marks the attack finished): attack, settings, budget, seed, the method and model it
  was found against, the source benchmark, the fingerprint, the prompts file's sha256, timings and provenance.
- partial.parquet + partial.json while an attack runs: prompts found so far and the fingerprint they belong to. A
  rerun of the same settings continues from them; each prompt's search is seeded by its own id, so the result is
  the one an uninterrupted run gives.
The replay benchmarks read prompts.parquet (or any parquet / csv with prompt_id and prompt columns).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError, MissingAssetError
from ..io import replace_atomically, sha256_file, write_json_atomically

log = logging.getLogger("respodiff")

PROMPTS_FILE = "prompts.parquet"
RECORD_FILE = "attack.json"
PARTIAL_FILE = "partial.parquet"
PARTIAL_RECORD = "partial.json"
# Bump when an attack's search changes what it finds for the same settings: older results are then not reused.
ATTACK_VERSION = 1
REPLAY_COLUMNS = ("prompt_id", "prompt")


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    replace_atomically(path, lambda handle: frame.to_parquet(handle, index=False))


class AttackFolder:
    """The files of one attack in one run folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @property
    def prompts_path(self) -> Path:
        return self.folder / PROMPTS_FILE

    def record(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / RECORD_FILE).read_text())
        except (OSError, ValueError):
            return None

    def is_finished(self, fingerprint: str) -> bool:
        """attack.json of these settings beside the prompts file it names, byte for byte."""
        record = self.record()
        if record is None or record.get("fingerprint") != fingerprint or not self.prompts_path.is_file():
            return False
        return sha256_file(self.prompts_path) == record.get("prompts_sha256")

    def refuse_foreign(self, fingerprint: str, overwrite: bool, name: str) -> None:
        """A finished attack of other settings is someone's result: kept unless attack.overwrite=true."""
        record = self.record()
        if record is None or record.get("fingerprint") == fingerprint or overwrite:
            return
        raise ConfigError(
            f"{self.folder} holds a finished {name} attack of other settings (another budget, seed, source, model "
            "or defended method); it is kept. Use another run folder, or set attack.overwrite=true to replace it")

    def resumed(self, fingerprint: str) -> pd.DataFrame | None:
        """Prompts an interrupted run of the same settings found already, or None."""
        try:
            partial = json.loads((self.folder / PARTIAL_RECORD).read_text())
            if partial.get("fingerprint") != fingerprint:
                log.info("%s: partial results of other settings are discarded", self.folder)
                return None
            return pd.read_parquet(self.folder / PARTIAL_FILE)
        except (OSError, ValueError):
            return None

    def save_partial(self, rows: pd.DataFrame, fingerprint: str) -> None:
        _write_parquet(self.folder / PARTIAL_FILE, rows)
        write_json_atomically(self.folder / PARTIAL_RECORD, {"fingerprint": fingerprint, "n_prompts": len(rows)})

    def finish(self, rows: pd.DataFrame, record: dict[str, Any]) -> Path:
        """Write the prompts, then the record that marks them finished, then drop the partial state."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / RECORD_FILE).unlink(missing_ok=True)  # replaced prompts are never marked by an old record
        _write_parquet(self.prompts_path, rows)
        record = {**record, "prompts_file": PROMPTS_FILE, "prompts_sha256": sha256_file(self.prompts_path)}
        write_json_atomically(self.folder / RECORD_FILE, record, default=str)
        for name in (PARTIAL_FILE, PARTIAL_RECORD):
            (self.folder / name).unlink(missing_ok=True)
        return self.prompts_path


def prompts_file(path: str | Path) -> Path:
    """A prompts file named directly, or the attack folder holding prompts.parquet."""
    path = Path(str(path)).expanduser()
    return path / PROMPTS_FILE if path.is_dir() else path


def read_attack_prompts(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """(prompts, the attack record beside them or None) from a prompts.parquet / .csv; refused with the reason when
    the file is missing or lacks prompt_id and prompt."""
    file = prompts_file(path)
    if not file.is_file():
        raise MissingAssetError(f"attack prompts file {file} does not exist; find prompts first with `python run.py "
                                "experiment=<safety experiment> method=<method> stage=attack attack=<name>` (they are "
                                "saved to <run folder>/attacks/<name>/prompts.parquet)")
    try:
        table = pd.read_csv(file) if file.suffix.lower() == ".csv" else pd.read_parquet(file)
    except Exception as failure:  # noqa: BLE001 - any unreadable file: name it
        raise ConfigError(f"attack prompts file {file} cannot be read ({type(failure).__name__}: {failure}); "
                          "expected a parquet or csv table") from failure
    missing = [column for column in REPLAY_COLUMNS if column not in table.columns]
    if missing:
        raise ConfigError(f"attack prompts file {file} lacks the column(s) {missing}; it has {list(table.columns)}")
    if table.empty:
        raise ConfigError(f"attack prompts file {file} holds no prompts")
    return table, AttackFolder(file.parent).record()
