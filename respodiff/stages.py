"""The four stages of a run (train, generate, evaluate, report) over one composed config.

Each stage is idempotent: it looks at what its outputs already hold, does only the missing work and says so. A
finished stage is recognised without loading the model (train: the modules' record of how they were trained;
generate: a fingerprint of the manifest, model, method and modules beside a complete image store; evaluate: a
results JSON newer than the images, computed with the same settings), so a rerun costs seconds. Anything less
certain falls through to the library (trainer, engine), which decides from the files themselves.
Everything that can be checked without a model (config values, model, evaluator and dataset availability) is
checked before the first stage starts; at the tiny evaluation scale the stand-ins are built then.

Several processes (`torchrun`, `accelerate launch`): every process loads the pipeline on its own
`PartialState().device` and renders its share of the images; training refuses to run (train first with one
process), and evaluate and report run on the main process only.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import (
    apply_evaluator_scale,
    batch_invariant,
    concept_specs,
    evaluator_scale,
    model_spec,
    plain,
    resolve_device,
    stages_to_run,
    train_settings,
    validate,
)
from .errors import ConfigError
from .evaluation.evaluators import STAND_IN_WARNING
from .models import ModelSpec, check_model_available, load_pipeline
from .provenance import provenance

log = logging.getLogger("respodiff")


@dataclass
class RunContext:
    cfg: DictConfig
    run_dir: Path
    overrides: list[str]
    spec: ModelSpec
    device: str
    rank: int = 0
    world: int = 1
    _pipe: Any = field(default=None, repr=False)
    _logger: Any = field(default=None, repr=False)

    def pipeline(self):
        """The pipeline, loaded once per process on first use (never per batch)."""
        if self._pipe is None:
            from .baselines import prepare_pipeline

            # A baseline's pipeline is built over the loaded components (SLD) or changes them (ESD's UNet weights).
            self._pipe = prepare_pipeline(load_pipeline(self.spec, device=self.device), plain(self.cfg.method))
        return self._pipe

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def modules_dir(self) -> Path:
        return self.run_dir / "modules"

    @property
    def results_dir(self) -> Path:
        return self.run_dir / "results"

    def images_dir(self, benchmark: str) -> Path:
        return self.run_dir / "images" / benchmark

    @property
    def logger(self):
        if self._logger is None:
            from .reporting.wandb_logger import make_logger

            self._logger = make_logger(
                plain(self.cfg.logger),
                self.run_dir,
                group=self.cfg.experiment_name,
                name=",".join(self.overrides) or "default",
                config=plain(self.cfg),
            )
        return self._logger

    def close(self) -> None:
        if self._logger is not None:
            self._logger.finish()


def run_stages(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None) -> RunContext:
    """Validate everything cheap, then run the requested stages in order."""
    validate(cfg)
    stages = stages_to_run(cfg.stage)
    if "generate" in stages:
        from .baselines import check_assets

        check_assets(plain(cfg.method))  # files a baseline needs (ESD's weights), before any model loads
    apply_evaluator_scale(cfg)
    spec = model_spec(cfg)
    check_model_available(spec)
    if {"generate", "evaluate"} & set(stages):
        _check_evaluation_assets(cfg)
    device = resolve_device(cfg.device)
    if cfg.get("threads"):
        import torch

        # Small models (the toy world) run faster on one CPU thread than on two fighting over shared cores.
        torch.set_num_threads(int(cfg.threads))
    rank, world = 0, 1
    state = _process_state(device)
    if state is not None:
        device, rank, world = str(state.device), state.process_index, state.num_processes
    context = RunContext(cfg, Path(run_dir).resolve(), list(overrides or []), spec, device, rank, world)
    context.run_dir.mkdir(parents=True, exist_ok=True)
    if context.is_main:
        _write_run_record(context)
    log.info("run folder: %s", context.run_dir)
    try:
        for stage in stages:
            if stage in MAIN_PROCESS_STAGES and not context.is_main:
                log.info("stage %s runs on the main process only; process %d of %d is done", stage, rank, world)
                continue
            log.info("stage %s", stage)
            STAGES[stage](context)
    finally:
        context.close()
    return context


def _check_evaluation_assets(cfg: DictConfig) -> None:
    """Build the stand-ins of a tiny / toy evaluation scale, then let every benchmark check its files."""
    scale = evaluator_scale(cfg)
    benchmarks = _benchmarks(cfg)
    # The toy benchmarks score with the toy world's exact classifiers (requires = {}): they need no stand-in.
    if scale != "real" and any(getattr(benchmark, "requires", True) for benchmark in benchmarks):
        from .evaluation.stand_ins import ensure_stand_ins

        ensure_stand_ins(cfg.paths.cache_dir)
        log.warning("evaluation scale %s (model.evaluators): stand-in evaluators and datasets, numbers are "
                    "meaningless", scale)
    for benchmark in benchmarks:
        benchmark.check_assets(benchmark_settings(cfg, benchmark.name))


def _process_state(device: str):
    """accelerate's PartialState under `torchrun` / `accelerate launch`, else None.

    A plain `python run.py` initialises no distributed state here (the engine's own PartialState is then a
    single-process one); launched processes need theirs before the pipeline loads, to load it on their own device.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "ACCELERATE_USE_CPU" in os.environ
    if not launched:
        return None
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu")


def _benchmarks(cfg: DictConfig) -> list:
    from .evaluation.registry import get_benchmark

    return [get_benchmark(name) for name in cfg.eval.benchmarks]


def benchmark_settings(cfg: DictConfig, name: str) -> dict[str, Any]:
    """The benchmark's own block of eval settings plus the shared ones it needs."""
    settings = dict(plain(cfg.eval.get(name, {})) or {})
    if cfg.eval.get("evaluators"):
        settings.setdefault("evaluators", plain(cfg.eval.evaluators))
    settings.setdefault("bootstrap", int(cfg.eval.bootstrap))
    settings.setdefault("seed", int(cfg.seed))
    settings.setdefault("cache_dir", str(cfg.paths.cache_dir))
    settings.setdefault("concepts", list(cfg.concepts["items"]))
    settings.setdefault("attribute_prompts", list(cfg.concepts.get("attribute_prompts") or []))
    return settings


def _write_run_record(context: RunContext) -> None:
    record = {
        "experiment": context.cfg.experiment_name,
        "overrides": context.overrides,
        "config": plain(context.cfg),
        **provenance(),
    }
    (context.run_dir / "run.json").write_text(json.dumps(record, indent=2, default=str))
    OmegaConf.save(context.cfg, context.run_dir / "config.yaml", resolve=True)


# ---------------------------------------------------------------------------------------------------------------


def stage_train(context: RunContext) -> None:
    from .hspace import hspace_shape
    from .trainer import train_transformations

    cfg = context.cfg
    if cfg.method.kind == "sdisc":
        _train_sdisc(context)
        return
    if cfg.method.kind != "hspace":
        log.info("method %s has nothing to train", cfg.method.name)
        return
    if _modules_up_to_date(context):
        log.info("modules already trained in %s with these settings; nothing to train (model not loaded)",
                 context.modules_dir)
        return
    if context.world > 1:
        # Training is one process's job (modules are tiny, the loop is sequential); several processes would
        # write the same checkpoints, and the others would wait at a barrier for longer than its timeout.
        raise ConfigError(
            f"{context.modules_dir} holds no modules trained with these settings yet, and training runs in one "
            f"process, not {context.world}: train first with `python run.py <same overrides> stage=train`, then "
            "launch the processes with stage=generate (or stage=all: finished training is skipped)"
        )
    pipe = context.pipeline()
    latent = context.spec.resolution // pipe.vae_scale_factor
    train_transformations(
        pipe,
        concept_specs(cfg),
        train_settings(cfg),
        out_dir=context.run_dir,
        base_model=context.spec.identity,
        h_shape=hspace_shape(pipe.unet, latent),
        log=lambda values, step: context.logger.log(values, step=step),
    )


def _modules_up_to_date(context: RunContext) -> bool:
    """Whether modules/ holds a set trained exactly as configured, judged without loading the model.

    Compares the trainer's record of its run (settings, concepts, base model) without the h-space shape, which
    only the model knows. A difference, or a record this code cannot read, leaves the decision to the trainer.
    """
    from .modules import METADATA_FILE
    from .trainer import training_record

    path = context.modules_dir / METADATA_FILE
    if not path.is_file():
        return False
    try:
        saved = dict(json.loads(path.read_text())["run"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    saved.pop("h_shape", None)
    return saved == training_record(concept_specs(context.cfg), train_settings(context.cfg), context.spec.identity)


def _train_sdisc(context: RunContext) -> None:
    from .baselines.sdisc import is_trained, settings_from_config, train_sdisc
    from .hspace import hspace_shape

    concepts, settings = concept_specs(context.cfg), settings_from_config(plain(context.cfg))
    if is_trained(context.modules_dir, concepts, settings, context.spec.identity):
        log.info("SDisc vectors already learnt in %s; nothing to train (model not loaded)", context.modules_dir)
        return
    if context.world > 1:
        raise ConfigError(f"SDisc learns its vectors in one process, not {context.world}: run stage=train first "
                          "with `python run.py <same overrides> stage=train`, then launch stage=generate")
    pipe = context.pipeline()
    train_sdisc(
        pipe,
        concepts,
        settings,
        out_dir=context.run_dir,
        base_model=context.spec.identity,
        h_shape=hspace_shape(pipe.unet, context.spec.resolution // pipe.vae_scale_factor),
        log_fn=lambda values, step: context.logger.log(values, step=step),
    )


def stage_generate(context: RunContext) -> None:
    from .baselines import adjust_manifest, generation_options
    from .generation import SamplerSettings, build_manifest, generate

    cfg = context.cfg
    # Loaded on first use: modules are read only when some benchmark has images to render.
    transformations = functools.cache(lambda: _load_transformations(context))
    sampler = SamplerSettings(
        steps=int(cfg.eval.sampler.steps),
        guidance_scale=float(cfg.eval.sampler.guidance_scale),
        height=context.spec.resolution,
        width=context.spec.resolution,
        batch_size=int(cfg.eval.sampler.batch_size),
        eta=float(cfg.eval.sampler.eta),
    )
    plan = concept_plan(cfg)
    options = generation_options(plain(cfg.method), context.spec.identity)
    for benchmark in _benchmarks(cfg):
        settings = benchmark_settings(cfg, benchmark.name)
        manifest = build_manifest(
            benchmark.name,
            benchmark.prompt_table(settings),
            benchmark.samples_per_prompt(settings, n_concepts=len(cfg.concepts["items"])),
            plan,
            sampler,
            negative_prompt=_negative_prompt(cfg),
        )
        manifest = adjust_manifest(manifest, plain(cfg.method), plain(cfg.concepts), cfg.eval.sampling)
        store = context.images_dir(benchmark.name)
        fingerprint = _generation_fingerprint(context, manifest, options)
        if _generation_done(store, manifest, fingerprint):
            log.info("%s: all %d images already generated in %s; nothing to generate (model not loaded)",
                     benchmark.name, len(manifest), store)
            continue
        generate(
            context.pipeline(),
            manifest,
            store,
            transformations(),
            sampler,
            parts=list(cfg.method.get("inference_parts") or []) or None,
            batch_invariant=batch_invariant(cfg.eval),
            **options,
        )
        if context.is_main:
            _record_generation(store, fingerprint)


def _generation_record(store: Path) -> Path:
    # Beside the store, not in it: the store's folder belongs to the engine.
    return store.with_name(f"{store.name}.generated.json")


def _generation_fingerprint(context: RunContext, manifest, options: dict[str, Any]) -> str:
    """What a finished store's images depend on, as far as it is known without loading the model.

    Deliberately broad (the whole model and method blocks): a difference that would not change a pixel only costs
    a model load, after which the engine decides from the store itself.
    """
    import torch

    from .generation.engine import ENGINE_VERSION
    from .generation.store import canonical_hash, manifest_hash

    cfg = context.cfg
    return canonical_hash({
        "images": manifest_hash(manifest),
        "engine": ENGINE_VERSION,
        "model": plain(cfg.model),
        "device": torch.device(context.device).type,  # not the index: every process must agree
        "method": plain(cfg.method),
        "generation": options,  # the engine's model identity (ESD's includes its weights) and call arguments
        "modules": _folder_digest(context.modules_dir),
    })


def _folder_digest(folder: Path) -> str | None:
    import hashlib

    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _generation_done(store: Path, manifest, fingerprint: str) -> bool:
    """A previous run rendered exactly this manifest with this model and these modules, and every image is intact."""
    from .generation.plan import DONE
    from .generation.store import STORE_FILE, present_rows, read_manifest

    try:
        record = json.loads(_generation_record(store).read_text())
        store_record = json.loads((store / STORE_FILE).read_text())
        if record.get("fingerprint") != fingerprint or record.get("store") != store_record.get("config_hash"):
            return False
        saved = read_manifest(store)
    except (OSError, ValueError):
        return False
    if len(saved) != len(manifest) or not (saved["status"] == DONE).all():
        return False
    return all(present_rows(store, manifest))


def _record_generation(store: Path, fingerprint: str) -> None:
    from .atomic import write_json_atomically
    from .generation.store import STORE_FILE

    store_record = json.loads((store / STORE_FILE).read_text())
    record = {"fingerprint": fingerprint, "store": store_record.get("config_hash")}
    write_json_atomically(_generation_record(store), record)


def concept_plan(cfg: DictConfig):
    from .baselines import MODULE_KINDS
    from .generation import ConceptPlan

    names = list(cfg.concepts["items"])
    if cfg.method.kind not in MODULE_KINDS:
        return ConceptPlan(mode="none", concepts=names, sampling=cfg.eval.sampling, weights={})
    if cfg.eval.get("compose"):
        return ConceptPlan(mode="compose", concepts=names, sampling=cfg.eval.sampling, weights=plain(cfg.eval.compose))
    if cfg.concepts.kind == "safety":
        return ConceptPlan(mode="sum", concepts=names, sampling=cfg.eval.sampling, weights={})
    return ConceptPlan(mode="fair", concepts=names, sampling=cfg.eval.sampling, weights={})


def _negative_prompt(cfg: DictConfig) -> str:
    if cfg.method.kind != "negative_prompt":
        return ""
    return ", ".join(item.negative_prompt for item in cfg.concepts["items"].values() if item.get("negative_prompt"))


def _load_transformations(context: RunContext):
    from .baselines import MODULE_KINDS
    from .hspace import hspace_shape
    from .modules import TransformationSet

    if context.cfg.method.kind not in MODULE_KINDS:
        return None
    pipe = context.pipeline()
    latent = context.spec.resolution // pipe.vae_scale_factor
    return TransformationSet.load(
        context.modules_dir,
        expected_h_shape=hspace_shape(pipe.unet, latent),
        expected_base_model=context.spec.identity,
    ).to(context.device)


def stage_evaluate(context: RunContext) -> None:
    import pandas as pd

    from .evaluation.evaluators import Evaluators
    from .reporting.store import write_result

    cfg = context.cfg
    scale = evaluator_scale(cfg)
    # The cache the benchmarks' asset checks used (paths.cache_dir), so FID statistics and weights land there too.
    evaluators = Evaluators.from_settings({**plain(cfg.eval), "cache_dir": str(cfg.paths.cache_dir)},
                                          device=context.device)
    for benchmark in _benchmarks(cfg):
        settings = benchmark_settings(cfg, benchmark.name)
        store = context.images_dir(benchmark.name)
        manifest_path = store / "manifest.parquet"
        if not manifest_path.is_file():
            raise ConfigError(f"no images for {benchmark.name} in {store}; run stage=generate first")
        result_path = context.results_dir / f"{benchmark.name}.json"
        # What the score depends on besides the images: compared with the previous result's before re-scoring.
        scored_with = _json_round({"benchmark": settings, "evaluators": evaluators.describe_config()})
        if not cfg.eval.force and _results_current(result_path, manifest_path, scored_with):
            log.info("%s: %s is newer than its images and used the same settings; nothing to evaluate "
                     "(eval.force=true re-evaluates)", benchmark.name, result_path)
            continue
        images = pd.read_parquet(manifest_path)
        if not (images["status"] == "done").all():
            missing = int((images["status"] != "done").sum())
            raise ConfigError(f"{missing} images of {benchmark.name} are not generated yet; run stage=generate")
        images["path"] = [str(store / p) for p in images["path"]]
        result = benchmark.evaluate(images, settings, evaluators)
        evaluator = dict(result.evaluator)
        evaluator.setdefault("scale", scale)
        if scale == "tiny":  # a tiny model's images are noise: no evaluator can make their numbers mean anything
            evaluator.setdefault("warning", STAND_IN_WARNING)
        if evaluator.get("warning"):
            log.warning("%s: %s", benchmark.name, evaluator["warning"])
        context.results_dir.mkdir(parents=True, exist_ok=True)
        # Per-image scores first: the results JSON, written last, is what marks the benchmark evaluated.
        result.per_image.to_parquet(context.results_dir / f"{benchmark.name}.per_image.parquet")
        write_result(
            context.run_dir,
            {
                "benchmark": benchmark.name,
                "experiment": cfg.experiment_name,
                "run_name": context.run_dir.name,
                "overrides": context.overrides,
                "method": cfg.method.name,
                "model": cfg.model.name,
                "concepts": cfg.concepts.name,
                "config": plain(cfg),
                "evaluator": evaluator,
                "scored_with": scored_with,
                "n_images": len(images),
                "metrics": result.metric_rows(benchmark.metrics),
            },
        )


def _json_round(value: Any) -> Any:
    """The value as it reads back from JSON (tuples become lists), so it compares equal to a stored copy."""
    return json.loads(json.dumps(value, default=str))


def _results_current(result_path: Path, manifest_path: Path, scored_with: dict) -> bool:
    try:
        if result_path.stat().st_mtime <= manifest_path.stat().st_mtime:
            return False  # images were (re)generated after the last evaluation
        return json.loads(result_path.read_text()).get("scored_with") == scored_with
    except (OSError, ValueError):
        return False


def stage_report(context: RunContext) -> None:
    """The run's summary (results/summary.md) and its metrics on the logger; reads JSONs only, no model work."""
    from .reporting.report import report_run

    frame = report_run(
        context.run_dir,
        plain(context.cfg),
        group=context.cfg.experiment_name,
        name=context.run_dir.name,
        logger=context.logger,
    )
    overall = frame[frame["group"] == ""]
    for row in overall.itertuples():
        log.info("%s %s = %.4f", row.benchmark, row.metric, row.value)
    print(f"results: {context.results_dir} (summary: {context.results_dir / 'summary.md'})")


STAGES = {"train": stage_train, "generate": stage_generate, "evaluate": stage_evaluate, "report": stage_report}
# With several processes these run once, on the main process, after every process has rendered its images.
MAIN_PROCESS_STAGES = ("evaluate", "report")
