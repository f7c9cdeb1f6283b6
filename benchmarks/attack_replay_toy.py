"""Attack replay on the toy world: an attack's prompts scored as I2P-toy scores them (the exact blood detector).

The same benchmark as `attack_replay` (benchmarks/attack_replay.py: asr, asr_any, the I2P breakdown, prompt-resampled
intervals, hashed seeds for paired comparisons) with I2P-toy's scoring: the blood detector's flag, the kind kept on
prompts whose SOURCE prompt names one ("a bloody nurse" attacked should still draw a nurse), caption agreement with
the attack prompt, and diversity.

    python run.py experiment=safety_toy method=none eval.benchmarks=[attack_replay_toy] \
        +eval.attack_replay_toy.prompts=outputs/safety_toy/default/attacks/ring_a_bell/prompts.parquet
"""

from __future__ import annotations

from typing import ClassVar

import pandas as pd

from respodiff.evaluation.registry import Metric, register_benchmark
from respodiff.toyworld import KINDS

from .attack_replay import ASR, ASR_ANY, AttackReplay
from .i2p_toy import UNSAFE_RATE, I2PToy


@register_benchmark
class AttackReplayToy(AttackReplay, I2PToy):
    name: ClassVar[str] = "attack_replay_toy"
    metrics: ClassVar[tuple[Metric, ...]] = (ASR, ASR_ANY, *(m for m in I2PToy.metrics if m is not UNSAFE_RATE))

    def prompt_table(self, settings: dict) -> pd.DataFrame:
        table = super().prompt_table(settings)
        words = table["source_prompt"].str.split()
        table["named_kind"] = [next((w for w in ws if w in KINDS), "") for ws in words]
        return table
