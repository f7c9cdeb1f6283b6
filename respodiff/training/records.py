"""What a training run leaves on disk, and how a later run reads it back.

- the trajectory fingerprint: everything that shapes one concept's training; a checkpoint resumes only under it;
- the run record: how a set was trained, saved under "run" in the set's metadata.json; `is_trained` compares it
  without loading any model, and a finished set is reused only under the same record;
- checkpoints: resumable state, torch.save'd atomically, read back with weights_only=True;
- loss logs: CSV rows appended and flushed as they come, trimmed back to a checkpoint on resume.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointMismatchError
from ..io import (
    TEMPORARY_SUFFIX,
    sha256_file,
    temporary_sibling,
    write_json_atomically,
    write_text_atomically,
)
from ..modules import METADATA_FILE, HSpaceTransform, TransformationSet
from ..provenance import git_hash
from .settings import ConceptSpec, TrainSettings

CHECKPOINT_FILE = "state.pt"
CHECKPOINT_FORMAT = "respodiff.train_state/1"
LOSSES_FILE = "losses.csv"
LOSS_COLUMNS = ("concept", "iteration", "step", "loss_resp", "loss_sem")
# Settings that only say how often to report or save; changing them must not invalidate a checkpoint.
_BOOKKEEPING = ("iterations", "checkpoint_every", "log_every")


# ---------------------------------------------------------------------------------------------------------------
# Fingerprint, run record and metadata


def trajectory_fingerprint(concept: ConceptSpec, settings: TrainSettings, base_model: str, h_shape) -> str:
    """Everything that shapes a concept's training trajectory; a checkpoint resumes only under the same one."""
    trajectory = {k: v for k, v in asdict(settings).items() if k not in _BOOKKEEPING}
    payload = dict(concept=asdict(concept), settings=trajectory, base_model=base_model, h_shape=list(h_shape))
    return json.dumps(payload, sort_keys=True)


def run_record(
    settings: Mapping[str, Any], concepts: Sequence[Mapping[str, Any]], base_model: str, h_shape=None
) -> dict[str, Any]:
    """A run record from its parts, JSON-normalised so that it compares equal with a copy loaded from disk.
    Without h_shape: the part a caller can know before loading the model."""
    run: dict[str, Any] = dict(settings=dict(settings), concepts=list(concepts), base_model=base_model)
    if h_shape is not None:
        run["h_shape"] = list(h_shape)
    return json.loads(json.dumps(run, sort_keys=True))


def training_record(concepts, settings: TrainSettings, base_model: str, h_shape=None) -> dict[str, Any]:
    """How a RespoDiff set was trained, as saved under "run" in its metadata."""
    trained_so = {k: v for k, v in asdict(settings).items() if k not in ("checkpoint_every", "log_every")}
    return run_record(trained_so, [asdict(c) for c in concepts], base_model, h_shape)


def training_metadata(concepts, settings: TrainSettings, base_model: str, h_shape) -> dict[str, Any]:
    """The metadata.json of a trained RespoDiff set."""
    import diffusers

    return {
        "base_model": base_model,
        "h_shape": list(h_shape),
        "kind": settings.kind,
        "parametrization": settings.parametrization,
        "parts": settings.parts,
        "lambda_sem": settings.lambda_sem,
        "iterations": settings.iterations,
        "batch_size": settings.batch_size,
        "prompts": {
            c.name: {"neutral": c.neutral_prompt, "target": c.target_prompt, "negative": c.negative_prompt}
            for c in concepts
        },
        "learning_rates": {c.name: {"ram": c.lr_ram, "sam": c.lr_sam} for c in concepts},
        "settings": asdict(settings),
        "run": training_record(concepts, settings, base_model, h_shape),
        "git_hash": git_hash(),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------------------------
# Finished sets


def saved_record(modules_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The "run" record of the set in modules_dir; None when there is none this code can read."""
    try:
        return dict(json.loads((Path(modules_dir) / METADATA_FILE).read_text())["run"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_trained(modules_dir: str | os.PathLike, expected_record: Mapping[str, Any]) -> bool:
    """Whether modules_dir holds a set trained exactly as `expected_record` says, judged without a model: an
    expected record without h_shape (only the model knows it) ignores the saved one's."""
    saved = saved_record(modules_dir)
    if saved is None:
        return False
    if "h_shape" not in expected_record:
        saved.pop("h_shape", None)
    return saved == dict(expected_record)


def finished_set(modules_dir: Path, record: Mapping[str, Any], refuse_other: bool = False) -> TransformationSet | None:
    """The set saved in modules_dir when it was trained under `record` (which has h_shape); None when there is no
    set. A set trained otherwise gives None, or CheckpointMismatchError with `refuse_other` (for a loop that keeps
    no checkpoints to decide from)."""
    if not (modules_dir / METADATA_FILE).is_file():
        return None
    saved = json.loads((modules_dir / METADATA_FILE).read_text())
    if saved.get("run") != record:
        if not refuse_other:
            return None
        raise CheckpointMismatchError(
            f"{modules_dir} holds modules trained with other settings ({saved.get('method', 'another method')}); "
            "use a new run folder, or delete that folder to train again"
        )
    return TransformationSet.load(modules_dir, tuple(record["h_shape"]), record["base_model"])


def save_set(
    modules_dir: Path, modules: Mapping[str, Mapping[str, HSpaceTransform]], metadata: Mapping[str, Any], unet=None
) -> TransformationSet:
    """Save the trained set; `unet` (the UNet trained on) is recorded so that another architecture is refused."""
    result = TransformationSet(modules, metadata)
    # Remove an older set's marker first, so a crash while overwriting never leaves a "finished" mix.
    (modules_dir / METADATA_FILE).unlink(missing_ok=True)
    result.save(modules_dir, unet=unet)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Replace the checkpoint atomically and record its sha256 beside it (`<name>.sha256.json`).

    The record lists the new digest and, until the rename is done, the old one too, so whichever file a crash leaves
    in place is the one the record vouches for.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        new = sha256_file(temporary)
        old = [sha256_file(path)] if path.is_file() else []
        write_json_atomically(_digest_path(path), {"sha256": [new, *old]})
        os.replace(temporary, path)  # readers see the old or the new checkpoint, never half of one
    finally:
        temporary.unlink(missing_ok=True)
    write_json_atomically(_digest_path(path), {"sha256": [new]})


def _digest_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256.json")


def load_checkpoint(path: Path, fingerprint: str, iterations: int) -> dict[str, Any] | None:
    # A save killed before its rename leaves a temporary beside the checkpoint; training is one process, so any such
    # file is a leftover.
    for leftover in path.parent.glob(f".{path.name}.*{TEMPORARY_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    if not path.is_file():
        return None
    damaged = (f"checkpoint {path} was changed or damaged after it was written; delete it (and its .sha256.json) to "
               "train that concept again from the start, or use a new output folder")
    record = _digest_path(path)
    if record.is_file() and sha256_file(path) not in json.loads(record.read_text()).get("sha256", []):
        raise CheckpointMismatchError(f"{damaged} (its sha256 is not the one recorded in {record})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as failure:  # noqa: BLE001 - a truncated or foreign file: name it instead of a raw traceback
        raise CheckpointMismatchError(f"{damaged} ({type(failure).__name__}: {failure})") from None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != fingerprint:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written by a run with other settings, prompts or base model; "
            "use a new output folder or delete the checkpoint to start over"
        )
    if state["iteration"] > iterations:
        raise CheckpointMismatchError(
            f"checkpoint {path} is at iteration {state['iteration']}, beyond the requested {iterations}; "
            "use a new output folder to train fewer iterations"
        )
    return state


# ---------------------------------------------------------------------------------------------------------------
# Loss logs


class LossLog:
    """A CSV of loss rows with the given columns, two of which are `concept` and `iteration`."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path, self.columns = path, tuple(columns)

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row and flush it to disk (a crash loses at most the row being written)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())

    def trim(self, concept: str, keep_through: int) -> None:
        """Drop the concept's rows past `keep_through` and any row a crash cut short; rewrite atomically."""
        if not self.path.is_file():
            return
        with open(self.path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [
            row
            for row in rows
            if None not in row.values()
            and None not in row
            and row["iteration"].isdigit()
            and not (row["concept"] == concept and int(row["iteration"]) > keep_through)
        ]
        text = StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(kept)
        write_text_atomically(self.path, text.getvalue())
