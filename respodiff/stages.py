"""The four stages of a run (train, generate, evaluate, report) over one composed config, and the attack stage
(stage=attack attack=<name>: adversarial prompts against the run's method, respodiff/attacks/), run only when named.

Each stage is idempotent: it looks at what its outputs already hold, does only the missing work and says so. A
finished stage is recognised without loading the model (train: the modules' record of how they were trained;
generate: a fingerprint of the manifest, model, method and modules beside a complete image store; evaluate: a
results JSON newer than the images, computed with the same settings), so a rerun costs seconds. Anything less
certain falls through to the library (training, engine), which decides from the files themselves.
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

import torch
from omegaconf import DictConfig, OmegaConf

from .config import (
    apply_evaluator_scale,
    batch_invariant,
    eval_context,
    evaluator_scale,
    model_spec,
    plain,
    resolve_device,
    stages_to_run,
    validate,
)
from .errors import ConfigError
from .evaluation.setup import benchmark_settings, build_evaluators
from .methods import Method, TrainingRun, build_method
from .models import ModelSpec, check_model_available, load_pipeline
from .provenance import provenance
from .stage_checks import check_images_complete, json_round, results_current

log = logging.getLogger("respodiff")


@dataclass
class RunContext:
    cfg: DictConfig
    run_dir: Path
    overrides: list[str]
    spec: ModelSpec
    method: Method
    device: str
    rank: int = 0
    world: int = 1
    _pipe: Any = field(default=None, repr=False)
    _logger: Any = field(default=None, repr=False)

    def pipeline(self):
        """The pipeline, loaded once per process on first use (never per batch)."""
        if self._pipe is None:
            # A method's pipeline is built over the loaded components (SLD) or changes them (ESD's UNet weights).
            self._pipe = self.method.prepare_pipeline(load_pipeline(self.spec, device=self.device))
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

    def h_shape(self, pipe) -> tuple[int, int, int]:
        from .hspace import hspace_shape

        return hspace_shape(pipe.unet, self.spec.resolution // pipe.vae_scale_factor)

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
    apply_evaluator_scale(cfg, overrides or ())
    method = build_method(plain(cfg))
    if {"generate", "attack"} & set(stages):
        method.check_assets()  # files a method needs (ESD's weights), before any model loads
    spec = model_spec(cfg)
    check_model_available(spec)
    if "generate" in stages and "train" not in stages:
        # Modules from elsewhere (another base model, changed files) are named before any other asset is looked for.
        method.check_modules(Path(run_dir).resolve() / "modules", spec.identity)
    if {"generate", "evaluate"} & set(stages):
        _check_evaluation_assets(cfg)
    device = resolve_device(cfg.device)
    if cfg.get("threads"):
        # Small models (the toy world) run faster on one CPU thread than on two fighting over shared cores.
        torch.set_num_threads(int(cfg.threads))
    rank, world = 0, 1
    state = _process_state(device)
    if state is not None:
        device, rank, world = str(state.device), state.process_index, state.num_processes
    context = RunContext(cfg, Path(run_dir).resolve(), list(overrides or []), spec, method, device, rank, world)
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
    if scale != "real" and any(benchmark.requires for benchmark in benchmarks):
        from .evaluation.stand_ins import ensure_stand_ins

        ensure_stand_ins(cfg.paths.cache_dir)
        log.warning("evaluation scale %s (model.evaluators): stand-in evaluators and datasets, numbers are "
                    "meaningless", scale)
    for benchmark in benchmarks:
        benchmark.check_assets(benchmark_settings(plain(cfg.eval), benchmark.name, eval_context(cfg)))
    if any("q16" in benchmark.requires for benchmark in benchmarks):
        from .evaluation.preflight import check_q16_prompts
        from .evaluation.setup import evaluator_settings

        check_q16_prompts(evaluator_settings(plain(cfg.eval), eval_context(cfg)))


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
    method = context.method
    if not method.trains:
        log.info("method %s has nothing to train", method.name)
        return
    if method.is_trained(context.modules_dir, context.spec.identity):
        log.info("modules already trained in %s with these settings; nothing to train (model not loaded)",
                 context.modules_dir)
        return
    _refuse_foreign_modules(context)
    if context.world > 1:
        # Training is one process's job (modules are tiny, the loop is sequential); several processes would
        # write the same checkpoints, and the others would wait at a barrier for longer than its timeout.
        raise ConfigError(
            f"{context.modules_dir} holds no modules trained with these settings yet, and training runs in one "
            f"process, not {context.world}: train first with `python run.py <same overrides> stage=train`, then "
            "launch the processes with stage=generate (or stage=all: finished training is skipped)"
        )
    pipe = context.pipeline()
    run = TrainingRun(context.run_dir, context.spec.identity, context.h_shape(pipe),
                      log=lambda values, step: context.logger.log(values, step=step))
    method.train(pipe, run)


def stage_generate(context: RunContext) -> None:
    from .generation import (
        SamplerSettings,
        build_manifest,
        generate,
        generation_fingerprint,
        is_finished,
        mark_finished,
    )
    from .io import folder_digest

    cfg, method = context.cfg, context.method
    # Loaded on first use: modules are read only when some benchmark has images to render.
    transformations = functools.cache(lambda: _load_modules(context))
    sampler = SamplerSettings(
        steps=int(cfg.eval.sampler.steps),
        guidance_scale=float(cfg.eval.sampler.guidance_scale),
        height=context.spec.resolution,
        width=context.spec.resolution,
        batch_size=int(cfg.eval.sampler.batch_size),
        eta=float(cfg.eval.sampler.eta),
    )
    method.check_modules(context.modules_dir, context.spec.identity)  # before any model loads
    plan = method.concept_plan(cfg.eval.sampling, plain(cfg.eval.get("compose")))
    options = method.generation_options(context.spec.identity)
    # What a finished store's images depend on besides its manifest, as far as it is known without loading the
    # model. Deliberately broad (the whole model and method blocks): a difference that would not change a pixel
    # only costs a model load, after which the engine decides from the store itself.
    known = {
        "model": plain(cfg.model),
        "device": torch.device(context.device).type,  # not the index: every process must agree
        "method": plain(cfg.method),
        "generation": options,  # the engine's model identity (ESD's includes its weights) and call arguments
        "modules": folder_digest(context.modules_dir),
    }
    for benchmark in _benchmarks(cfg):
        settings = benchmark_settings(plain(cfg.eval), benchmark.name, eval_context(cfg))
        manifest = build_manifest(
            benchmark.name,
            benchmark.prompt_table(settings),
            benchmark.samples_per_prompt(settings, n_concepts=len(method.concept_names)),
            plan,
            sampler,
            seed_scheme=cfg.eval.get("seed_scheme") or benchmark.seed_scheme,
            image_format=cfg.eval.get("image_format") or "png",
        )
        manifest = method.adjust_manifest(manifest, cfg.eval.sampling)
        store = context.images_dir(benchmark.name)
        fingerprint = generation_fingerprint(manifest, known)
        if is_finished(store, manifest, fingerprint):
            log.info("%s: all %d images already generated in %s; nothing to generate (model not loaded)",
                     benchmark.name, len(manifest), store)
            continue
        generate(
            context.pipeline(),
            manifest,
            store,
            transformations(),
            sampler,
            parts=method.inference_parts(),
            batch_invariant=batch_invariant(cfg.eval),
            **options,
        )
        if context.is_main:
            mark_finished(store, fingerprint)


def _refuse_foreign_modules(context: RunContext) -> None:
    """A modules folder that holds something other than what this run trains, with nothing to resume from, is
    someone's finished work: refuse to overwrite it unless train.overwrite says so."""
    folder = context.modules_dir
    if not folder.is_dir() or not any(folder.iterdir()) or context.cfg.train.get("overwrite", False):
        return
    if context.method.has_resumable_state(context.run_dir):
        return  # an interrupted or extended run of these settings: training resumes from its checkpoints
    raise ConfigError(
        f"{folder} holds modules that were not trained with these settings (another configuration, base model or "
        "method, or files that are not this project's) and no checkpoints to resume from; they are kept. Use a new "
        "output folder, or set train.overwrite=true to replace them"
    )


def _load_modules(context: RunContext):
    pipe = context.pipeline()
    return context.method.load_modules(context.modules_dir, context.h_shape(pipe), context.spec.identity,
                                       context.device)


def stage_evaluate(context: RunContext) -> None:
    from .generation import MANIFEST_FILE, read_manifest
    from .reporting.store import write_result

    cfg = context.cfg
    # The cache the benchmarks' asset checks used (paths.cache_dir), so FID statistics and weights land there too.
    evaluators = build_evaluators(plain(cfg.eval), eval_context(cfg), context.device)
    for benchmark in _benchmarks(cfg):
        settings = benchmark_settings(plain(cfg.eval), benchmark.name, eval_context(cfg))
        store = context.images_dir(benchmark.name)
        manifest_path = store / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ConfigError(f"no images for {benchmark.name} in {store}; run stage=generate first")
        result_path = context.results_dir / f"{benchmark.name}.json"
        # What the score depends on besides the images: compared with the previous result's before re-scoring.
        scored_with = json_round({"benchmark": settings, "evaluators": evaluators.describe_config()})
        if not cfg.eval.force and results_current(result_path, manifest_path, scored_with):
            log.info("%s: %s is newer than its images and used the same settings; nothing to evaluate "
                     "(eval.force=true re-evaluates)", benchmark.name, result_path)
            continue
        images = read_manifest(store)
        check_images_complete(benchmark.name, store, images)
        images["path"] = [str(store / path) for path in images["path"]]
        result = benchmark.evaluate(images, settings, evaluators)
        evaluator = dict(result.evaluator)  # carries the evaluation scale and, at the tiny scale, its warning
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


def stage_attack(context: RunContext) -> None:
    """Adversarial prompts against the run's method (respodiff/attacks/stage.py); runs only as stage=attack."""
    from .attacks.stage import run_attack

    run_attack(context)


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


STAGES = {"train": stage_train, "generate": stage_generate, "evaluate": stage_evaluate, "report": stage_report,
          "attack": stage_attack}
# With several processes these run once, on the main process, after every process has rendered its images.
MAIN_PROCESS_STAGES = ("evaluate", "report", "attack")
