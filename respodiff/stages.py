"""The four stages of a run (train, generate, evaluate, report) over one composed config.

Each stage is idempotent: it looks at what its outputs already hold, does only the missing work and says so.
Everything that can be checked without a model (config values, model and dataset availability) is checked
before the first stage starts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import model_spec, plain, resolve_device, stages_to_run, validate
from .errors import ConfigError
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
    _pipe: Any = field(default=None, repr=False)
    _logger: Any = field(default=None, repr=False)

    def pipeline(self):
        """The pipeline, loaded once per process on first use (never per batch)."""
        if self._pipe is None:
            self._pipe = load_pipeline(self.spec, device=self.device)
        return self._pipe

    @property
    def modules_dir(self) -> Path:
        return self.run_dir / "modules"

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
    spec = model_spec(cfg)
    check_model_available(spec)
    benchmarks = _benchmarks(cfg)
    if {"generate", "evaluate"} & set(stages):
        for benchmark in benchmarks:
            benchmark.check_assets(benchmark_settings(cfg, benchmark.name))
    context = RunContext(cfg, Path(run_dir).resolve(), list(overrides or []), spec, resolve_device(cfg.device))
    context.run_dir.mkdir(parents=True, exist_ok=True)
    _write_run_record(context)
    log.info("run folder: %s", context.run_dir)
    try:
        for stage in stages:
            log.info("stage %s", stage)
            STAGES[stage](context)
    finally:
        context.close()
    return context


def _benchmarks(cfg: DictConfig) -> list:
    from .evaluation.registry import get_benchmark

    return [get_benchmark(name) for name in cfg.eval.benchmarks]


def benchmark_settings(cfg: DictConfig, name: str) -> dict[str, Any]:
    """The benchmark's own block of eval settings plus the shared ones it needs."""
    settings = dict(plain(cfg.eval.get(name, {})) or {})
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
    from .modules import METADATA_FILE
    from .trainer import train_transformations

    cfg = context.cfg
    if cfg.method.kind != "hspace":
        log.info("method %s has nothing to train", cfg.method.name)
        return
    if (context.modules_dir / METADATA_FILE).is_file():
        log.info("modules already trained in %s; nothing to train", context.modules_dir)
        return
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


def concept_specs(cfg: DictConfig) -> list:
    from .trainer import ConceptSpec

    concepts = cfg.concepts
    specs = []
    for name, item in concepts["items"].items():
        specs.append(
            ConceptSpec(
                name=name,
                neutral_prompt=item.get("neutral_prompt") or concepts.neutral_prompt,
                target_prompt=item.get("target_prompt"),
                negative_prompt=item.get("negative_prompt"),
                lr_ram=float(item.lr_ram),
                lr_sam=float(item.lr_sam),
            )
        )
    return specs


def train_settings(cfg: DictConfig):
    from .trainer import TrainSettings

    method, train, concepts = cfg.method, cfg.train, cfg.concepts

    def budget(key: str) -> int:
        # train.<key> beats method.<key> beats the concept set's default (PROTOCOL.md's per-task budgets).
        for source in (train, method, concepts):
            if source.get(key) is not None:
                return int(source[key])
        raise ConfigError(f"no {key} configured for training")

    return TrainSettings(
        kind=concepts.kind,
        guidance_target=float(concepts.guidance_target),
        parts=method.parts,
        parametrization=method.parametrization,
        init=method.init,
        init_scale=float(method.init_scale),
        hidden_channels=int(method.hidden_channels),
        lambda_sem=float(method.lambda_sem),
        iterations=budget("iterations"),
        batch_size=budget("batch_size"),
        guidance_reverse=float(train.guidance_reverse),
        max_step_index=int(train.max_step_index),
        num_inference_steps=int(train.num_inference_steps),
        timestep=train.timestep,
        reverse_parts=method.reverse_parts,
        precision=train.precision,
        checkpoint_every=int(train.checkpoint_every),
        log_every=int(train.log_every),
        seed=int(train.seed),
    )


def stage_generate(context: RunContext) -> None:
    from .generation import SamplerSettings, build_manifest, generate

    cfg = context.cfg
    transformations = _load_transformations(context)
    sampler = SamplerSettings(
        steps=int(cfg.eval.sampler.steps),
        guidance_scale=float(cfg.eval.sampler.guidance_scale),
        height=context.spec.resolution,
        width=context.spec.resolution,
        batch_size=int(cfg.eval.sampler.batch_size),
        eta=float(cfg.eval.sampler.eta),
    )
    plan = concept_plan(cfg)
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
        generate(
            context.pipeline(),
            manifest,
            context.images_dir(benchmark.name),
            transformations,
            sampler,
            parts=list(cfg.method.get("inference_parts") or []) or None,
        )


def concept_plan(cfg: DictConfig):
    from .generation import ConceptPlan

    names = list(cfg.concepts["items"])
    if cfg.method.kind != "hspace":
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
    from .hspace import hspace_shape
    from .modules import TransformationSet

    if context.cfg.method.kind != "hspace":
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
    evaluators = Evaluators.from_settings(plain(cfg.eval), device=context.device)
    for benchmark in _benchmarks(cfg):
        settings = benchmark_settings(cfg, benchmark.name)
        store = context.images_dir(benchmark.name)
        manifest_path = store / "manifest.parquet"
        if not manifest_path.is_file():
            raise ConfigError(f"no images for {benchmark.name} in {store}; run stage=generate first")
        images = pd.read_parquet(manifest_path)
        if not (images["status"] == "done").all():
            missing = int((images["status"] != "done").sum())
            raise ConfigError(f"{missing} images of {benchmark.name} are not generated yet; run stage=generate")
        images["path"] = [str(store / p) for p in images["path"]]
        result = benchmark.evaluate(images, settings, evaluators)
        result.per_image.to_parquet(context.run_dir / "results" / f"{benchmark.name}.per_image.parquet")
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
                "evaluator": result.evaluator,
                "n_images": len(images),
                "metrics": result.metric_rows(benchmark.metrics),
            },
        )


def stage_report(context: RunContext) -> None:
    from .reporting.store import load_results

    results_dir = context.run_dir / "results"
    if not results_dir.is_dir():
        log.info("no results to report yet in %s", results_dir)
        return
    frame = load_results([results_dir])
    overall = frame[frame["group"] == ""]
    for row in overall.itertuples():
        log.info("%s %s = %.4f", row.benchmark, row.metric, row.value)
    context.logger.log({f"{r.benchmark}/{r.metric}": r.value for r in overall.itertuples()})
    for benchmark in frame["benchmark"].unique():
        context.logger.log_table(benchmark, frame[frame["benchmark"] == benchmark])
    print(f"results: {results_dir}")


STAGES = {"train": stage_train, "generate": stage_generate, "evaluate": stage_evaluate, "report": stage_report}
