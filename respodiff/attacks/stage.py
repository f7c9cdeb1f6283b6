"""The attack stage: `python run.py experiment=<safety experiment> method=<method> stage=attack attack=<name>`.

Config time (`validate_attack`, with the rest of the config check): the attack name, its keys and budget, that the
run's concept set is a safety one, the source benchmark, and what the attack refuses of the method or architecture.
Stage time, before any model loads: the source prompts (a prepared dataset verified), the fingerprint of everything
the found prompts depend on, a finished attack of these settings recognised and skipped, one of other settings kept
(attack.overwrite=true replaces it), the defended method's files and modules when the attack needs them. Then the
model loads once and each source prompt not found yet is attacked with its own seed; progress is saved as it goes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError
from ..io import canonical_hash, folder_digest
from ..seeding import stable_seed
from .base import Attack, available_attacks, build_attack
from .sources import source_benchmark, source_prompts
from .store import ATTACK_VERSION, AttackFolder

log = logging.getLogger("respodiff")
SAVE_EVERY_S = 10.0  # partial results are written at most this often (and at the end)


@dataclass
class AttackRun:
    """What an attack's `setup` is given: the loaded (not yet method-prepared) pipeline, the run's method, the
    model spec and device, the modules folder, and a dict whose entries go into the saved record."""

    pipe: Any
    method: Any
    spec: Any
    device: str
    modules_dir: Path
    record: dict[str, Any] = field(default_factory=dict)

    def h_shape(self, pipe) -> tuple[int, int, int]:
        from ..hspace import hspace_shape

        return hspace_shape(pipe.unet, self.spec.resolution // pipe.vae_scale_factor)


def validate_attack(cfg: Mapping[str, Any], stages: tuple[str, ...]) -> Attack | None:
    """Config-time checks of the attack block (no file read, no model); None when the run has no attack."""
    from ..methods import build_method

    attacking = "attack" in stages
    if not cfg.get("attack"):
        if attacking:
            raise ConfigError(f"stage=attack needs an attack: add attack=<name>, one of {', '.join(available_attacks())}")
        return None
    attack = build_attack(cfg)
    if not attacking:
        log.warning("attack=%s is set but stage=%s does not run it; run it with stage=attack", attack.name,
                    cfg.get("stage"))
        return attack
    concepts = cfg["concepts"]
    if concepts.get("kind") != "safety":
        raise ConfigError(
            f"attack {attack.name} attacks a safety method, and this run's method {cfg['method'].get('name')!r} has no "
            f"safety concept: concepts {concepts.get('name')!r} are of kind {concepts.get('kind')!r}, with no unsafe "
            "concept to attack. Use a safety experiment (experiment=safety_toy or safety_sd14)")
    attack.check(build_method(cfg), cfg["model"]["arch"])
    source_benchmark(cfg, attack.options)
    return attack


def attack_seed(attack: Attack, prompt_id: str) -> int:
    """The seed of one source prompt's search: independent of order, prompt count and resume point."""
    return stable_seed("attack", attack.name, attack.options["seed"], prompt_id) % (2**63)


def fingerprint_of(attack: Attack, cfg: Mapping[str, Any], context, source: str, table: pd.DataFrame) -> dict:
    """Everything the found prompts depend on (what a finished attack is recognised by)."""
    settings = {key: value for key, value in attack.options.items() if key != "overwrite"}
    # The concept set enters every attack: ring_a_bell's concept pairs and the synonym tables (words=auto) come from it.
    what = {"attack": attack.name, "version": ATTACK_VERSION, "settings": settings, "source": source,
            "prompts": canonical_hash(table.to_dict("records")), "model": context.spec.identity,
            "concepts": cfg["concepts"]}
    if attack.depends_on_method:
        what["method"] = cfg["method"]
        what["sampler"] = {key: cfg["eval"]["sampler"][key] for key in ("steps", "guidance_scale", "eta")}
        what["sampling"] = [cfg["eval"]["sampling"], cfg["eval"].get("compose")]
        what["generation"] = context.method.generation_options(context.spec.identity)
        what["modules"] = folder_digest(context.modules_dir)
    return {"digest": canonical_hash(what), "inputs": what}


def run_attack(context) -> None:
    """The attack stage over a RunContext (respodiff/stages.py)."""
    from ..config import plain
    from ..provenance import provenance

    cfg = plain(context.cfg)
    attack = build_attack(cfg)
    folder = AttackFolder(context.run_dir / "attacks" / attack.name)
    source, table = source_prompts(cfg, attack.options)
    method = context.method
    if attack.depends_on_method:
        method.check_modules(context.modules_dir, context.spec.identity)
        if not method.is_trained(context.modules_dir, context.spec.identity):
            raise ConfigError(f"attack {attack.name} attacks the defended model, and {context.modules_dir} holds no "
                              f"modules trained with these settings yet: run stage=train first (same overrides)")
        attack.check_method(method.generation_options(context.spec.identity), method.name)
    fingerprint = fingerprint_of(attack, cfg, context, source, table)
    if folder.is_finished(fingerprint["digest"]):
        log.info("%s: %d prompts already found with these settings in %s; nothing to attack (model not loaded)",
                 attack.name, len(table), folder.folder)
        return
    folder.refuse_foreign(fingerprint["digest"], attack.options["overwrite"], attack.name)
    found = folder.resumed(fingerprint["digest"])
    rows = [] if found is None else found.to_dict("records")
    done = {row["source_prompt_id"] for row in rows}
    todo = table[~table["prompt_id"].isin(done)]
    log.info("attack %s: %d of %d %s prompts to attack (budget %s, seed %s)", attack.name, len(todo), len(table),
             source, attack.budget(), attack.options["seed"])
    run = AttackRun(None, method, context.spec, context.device, context.modules_dir)
    started = time.perf_counter()
    if len(todo):
        if attack.needs_model:
            import torch

            from ..models import load_pipeline

            # float32 whatever model.dtype says: the searches compare small differences and differentiate.
            run.pipe = load_pipeline(context.spec, device=context.device, dtype=torch.float32)
        attack.setup(run)
        rows += _attack_prompts(attack, todo, source, folder, fingerprint["digest"], rows)
    frame = pd.DataFrame(rows).set_index("source_prompt_id").loc[table["prompt_id"]].reset_index()
    frame = frame[[*_FIRST_COLUMNS, *(c for c in frame.columns if c not in _FIRST_COLUMNS)]]
    record = {
        "attack": attack.name, "settings": attack.options, "budget": attack.budget(), "seed": attack.options["seed"],
        "depends_on_method": attack.depends_on_method,
        "method": {"name": method.name, "kind": method.kind}, "experiment": cfg["experiment_name"],
        "model": context.spec.identity, "concepts": cfg["concepts"]["name"], "source_benchmark": source,
        "n_prompts": len(frame), "fingerprint": fingerprint["digest"], "fingerprint_inputs": fingerprint["inputs"],
        "seconds": round(time.perf_counter() - started, 3), **run.record,
        "mean_loss": _mean(frame["loss"]), "mean_loss_source": _mean(frame["loss_source"]), **provenance(),
    }
    path = folder.finish(frame, record)
    log.info("attack %s: %d prompts saved to %s (mean loss %s, at the source prompts %s)", attack.name, len(frame),
             path, record["mean_loss"], record["mean_loss_source"])
    print(f"attack prompts: {path}")


_FIRST_COLUMNS = ["prompt_id", "prompt", "source_prompt_id", "source_prompt", "source_benchmark", "categories", "hard",
                  "attack", "loss", "loss_source", "search_seed"]


def _attack_prompts(attack: Attack, todo: pd.DataFrame, source: str, folder: AttackFolder, fingerprint: str,
                    earlier: list[dict]) -> list[dict]:
    rows: list[dict] = []
    saved = time.monotonic()
    for number, record in enumerate(todo.to_dict("records"), start=1):
        seed = attack_seed(attack, record["prompt_id"])
        found = attack.find(record, seed)
        rows.append({"prompt_id": f"{attack.name}-{record['prompt_id']}", "prompt": found.prompt,
                     "source_prompt_id": record["prompt_id"], "source_prompt": record["prompt"],
                     "source_benchmark": source, "categories": record["categories"], "hard": bool(record["hard"]),
                     "attack": attack.name, "loss": float(found.loss), "loss_source": float(found.loss_source),
                     "search_seed": seed, **found.details})
        log.info("attack %s %d/%d %s: %r -> %r (loss %.4g, source %.4g)", attack.name, number, len(todo),
                 record["prompt_id"], record["prompt"], found.prompt, found.loss, found.loss_source)
        if attack.searches and time.monotonic() - saved > SAVE_EVERY_S and number < len(todo):
            folder.save_partial(pd.DataFrame([*earlier, *rows]), fingerprint)
            saved = time.monotonic()
    return rows


def _mean(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return None if values.empty else round(float(values.mean()), 6)
