"""SDisc (Li et al., CVPR 2024): one h-space vector per concept, learnt with the plain denoising loss on images the
base model itself generates (`method.kind: sdisc`; the training is respodiff/training/sdisc.py).

Generation applies the vectors exactly as RespoDiff's modules: one concept per image for fairness, summed for
safety, on the conditional half of the CFG batch.
"""

from __future__ import annotations

from pathlib import Path

from .base import ModuleMethod, TrainingRun, register_method


@register_method
class SDiscMethod(ModuleMethod):
    kind = "sdisc"
    keys = frozenset({
        "images_per_concept", "iterations", "batch_size", "lr", "parametrization", "init", "init_scale",
        "hidden_channels", "image_steps", "image_guidance_scale",
    })
    trains = True

    def _training(self):
        from ..training import concept_specs, sdisc_settings

        return concept_specs(self.cfg), sdisc_settings(self.cfg)

    def validate(self, arch: str) -> None:
        from ..training import image_prompts

        concepts, settings = self._training()  # SDiscSettings checks its own values
        for concept in concepts:
            image_prompts(concept, settings.kind)
        self.check_compose_cycle()

    def is_trained(self, modules_dir: Path, base_model: str) -> bool:
        from ..training import is_trained, sdisc_record

        concepts, settings = self._training()
        return is_trained(modules_dir, sdisc_record(concepts, settings, base_model))

    def has_resumable_state(self, run_dir: Path) -> bool:
        from ..training.sdisc import DONE_DIR

        return any((run_dir / DONE_DIR).glob("*/run.json"))

    def train(self, pipe, run: TrainingRun) -> None:
        from ..training import train_sdisc

        concepts, settings = self._training()
        train_sdisc(pipe, concepts, settings, out_dir=run.run_dir, base_model=run.base_model, h_shape=run.h_shape,
                    log_fn=run.log)
