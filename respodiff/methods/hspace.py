"""RespoDiff and its h-space ablations (`method.kind: hspace`): per-concept modules on the bottleneck of the frozen
UNet, trained with the score-matching objective (PROTOCOL.md section 2; respodiff/training/).

One kind serves every variant; the YAML says which (conf/method/): `respodiff` (RAM + SAM), `ram_only`, `shared`
(one module trained by both losses), `codsma` (one C-vector, RAM only), `respodiff_mlp`, `respodiff_conv`.

A concept set with a `compose_cycle` block (conf/concepts/gender_race.yaml) generates compositions: every image
gets one weighted combination of its concepts, cycling through all of them (the public composition script).
"""

from __future__ import annotations

from pathlib import Path

from .base import ModuleMethod, TrainingRun, register_method


@register_method
class HSpaceMethod(ModuleMethod):
    kind = "hspace"
    keys = frozenset({
        "parts", "parametrization", "init", "init_scale", "hidden_channels", "lambda_sem", "lambda_mode",
        "reverse_parts", "inference_parts", "iterations", "batch_size", "lambda_zero",
    })
    trains = True

    def _training(self):
        from ..training import concept_specs, train_settings

        return concept_specs(self.cfg), train_settings(self.cfg)

    def validate(self, arch: str) -> None:
        from ..training import validate_concepts

        # The trainer's own settings check every training choice; building them here makes those checks speak
        # before any model loads.
        concepts, settings = self._training()
        validate_concepts(concepts, settings)
        self.check_compose_cycle()

    def is_trained(self, modules_dir: Path, base_model: str) -> bool:
        from ..training import is_trained, training_record

        concepts, settings = self._training()
        return is_trained(modules_dir, training_record(concepts, settings, base_model))

    def train(self, pipe, run: TrainingRun) -> None:
        from ..training import train_transformations

        concepts, settings = self._training()
        train_transformations(pipe, concepts, settings, out_dir=run.run_dir, base_model=run.base_model,
                              h_shape=run.h_shape, log=run.log)

    def has_resumable_state(self, run_dir: Path) -> bool:
        from ..training.records import CHECKPOINT_FILE

        return any((run_dir / "checkpoints").glob(f"*/{CHECKPOINT_FILE}"))

    def inference_parts(self) -> list[str] | None:
        return list(self.options.get("inference_parts") or []) or None
