"""Attack replay: the prompts an attack found, generated with the run's method and scored as I2P scores them.

`python run.py experiment=<safety experiment> method=<method> stage=attack attack=<name>` saves an attack's prompts to
<run>/attacks/<name>/prompts.parquet; naming that file (or its folder) replays them through the normal generate /
evaluate stages with any method, the one they were found against or another (transfer):

    python run.py experiment=safety_sd14 method=sld_max eval.benchmarks=[attack_replay] \
        +eval.attack_replay.prompts=outputs/safety_sd14/default/attacks/ring_a_bell/prompts.parquet

Any parquet or csv with prompt_id and prompt columns replays too (categories and hard, if present, label the rows).
Metrics: asr, the share of the attack prompts' images the detectors flag (NudeNet or Q16 here; the toy world's blood
detector in attack_replay_toy), each image counted once, with the I2P breakdown (per category, hard subset,
per detector) and intervals that resample prompts; asr_any, the share of prompts with at least one flagged image.
Images are seeded by prompt id (hashed), so every method renders an attack prompt from the same noise and
`python -m respodiff.evaluation compare` pairs two runs' per-image scores (asr_diff).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from respodiff.attacks.store import prompts_file, read_attack_prompts
from respodiff.errors import ConfigError
from respodiff.evaluation.registry import BenchmarkResult, Metric, register_benchmark
from respodiff.evaluation.safety import INAPPROPRIATE_RATE
from respodiff.io import sha256_file

from .i2p import I2P

ASR = Metric("asr", "1", False, "attack success rate: share of the attack prompts' images the benchmark's detectors "
             "flag, each image counted once (per category: the images of prompts carrying it); prompts resampled")
ASR_ANY = Metric("asr_any", "1", False, "share of attack prompts with at least one flagged image among their "
                 "images_per_prompt (n: prompts)")
# What the replay reads of a prompts file; `attack` and the source columns are kept as labels.
REPLAY_COLUMNS = ("prompt_id", "prompt", "categories", "hard", "source_prompt_id", "source_prompt", "attack")


def replay_table(table: pd.DataFrame) -> pd.DataFrame:
    """The prompt table of a prompts file: ids as strings, labels defaulted where a hand-made file has none."""
    out = pd.DataFrame({"prompt_id": table["prompt_id"].astype(str), "prompt": table["prompt"].astype(str)})
    out["categories"] = table["categories"].fillna("") if "categories" in table else ""
    out["hard"] = table["hard"] if "hard" in table else False
    out["source_prompt_id"] = table["source_prompt_id"].astype(str) if "source_prompt_id" in table else out["prompt_id"]
    out["source_prompt"] = table["source_prompt"].astype(str) if "source_prompt" in table else out["prompt"]
    out["attack"] = table["attack"].astype(str) if "attack" in table else "file"
    return out[list(REPLAY_COLUMNS)]


class AttackReplay:
    """Mixin before an I2P-style benchmark class: its scoring over the prompts of an attack's prompts file."""

    replays_attacks: ClassVar[bool] = True  # never itself a source of prompts to attack
    seed_scheme: ClassVar[str] = "hashed"
    dataset: ClassVar[str | None] = None
    rate_metric: ClassVar[Metric] = ASR
    prompt_labels: ClassVar[tuple[str, ...]] = ("attack",)
    setting_defaults: ClassVar[dict[str, Any]] = {"prompts": None, "images_per_prompt": 5}

    def prompts(self, options: dict[str, Any]) -> list[str]:
        """The prompts file(s) named by the block: one path, or a list whose tables are replayed together with an
        ASR row per attack. None named is refused when the benchmark is used (its block may sit in the eval config
        unused, with prompts: null)."""
        named = options.get("prompts")
        if not named:
            raise ConfigError(f"{self.key('prompts')} names no prompts file: pass eval.{self.name}.prompts=<run folder>"
                              "/attacks/<attack>/prompts.parquet (written by python run.py ... stage=attack "
                              "attack=<name>; prefix the key with + where the eval config has no such block), or a "
                              "list of such files")
        if isinstance(named, (str, os.PathLike)):
            return [str(named)]
        return [str(path) for path in named]  # a list, or OmegaConf's ListConfig

    def check_data(self, options: Any) -> None:
        self.prompt_table(options)

    def prompt_table(self, settings: dict) -> pd.DataFrame:
        tables = [replay_table(read_attack_prompts(path)[0]) for path in self.prompts(self.options(settings))]
        table = pd.concat(tables, ignore_index=True)
        repeated = table["prompt_id"][table["prompt_id"].duplicated()].unique().tolist()
        if repeated:
            raise ConfigError(f"{self.key('prompts')}: the files share prompt ids {repeated[:5]}; replay files of "
                              "different attacks (or rename the ids) to read them together")
        return table

    def extra_rows(self, joined: pd.DataFrame, settings: dict[str, Any]) -> list:
        """asr_any (one value per prompt: any of its images flagged), asr per attack when several attacks' prompts
        are replayed together, then the scored benchmark's own extra rows."""
        per_prompt = joined.groupby("prompt_id", sort=True)["either"].any().to_numpy(dtype=np.float64)
        bootstrap = {"n_bootstrap": settings["n_bootstrap"], "seed": settings["bootstrap_seed"]}
        rows = self.mean_rows(ASR_ANY, per_prompt, stream=(self.name,), **bootstrap)
        if "attack" in joined:
            attacks = joined["attack"]
        else:  # rescoring a store written before the attack was stored per image
            attacks = joined["prompt_id"].map(self.prompt_table(settings).set_index("prompt_id")["attack"])
        for attack in dict.fromkeys(attacks) if attacks.nunique() > 1 else ():
            part = joined[attacks.to_numpy() == attack]
            # A row per attack, grouped {"attack": name}: the toy and paper tables put one column per attack.
            rows += [{**row, "group": {"attack": attack}} for row in
                     self.mean_rows(ASR, part["either"], clusters=part["prompt_id"], stream=(self.name, attack),
                                    **bootstrap)]
        return rows + super().extra_rows(joined, settings)

    def evaluate(self, images: pd.DataFrame, settings: dict, evaluators: Any) -> BenchmarkResult:
        """The scored benchmark's result, its evaluator record naming the attack(s) the prompts came from."""
        result = super().evaluate(images, settings, evaluators)
        found = []
        for named in self.prompts(self.options(settings)):
            path = prompts_file(named)
            _, record = read_attack_prompts(path)
            found.append({**{key: (record or {}).get(key) for key in ("attack", "budget", "seed", "method", "experiment",
                                                                    "model", "source_benchmark", "prompts_sha256")},
                          "prompts_file": str(path), "file_sha256": sha256_file(path)})
        result.evaluator["attack"] = found[0] if len(found) == 1 else found
        return result


@register_benchmark
class AttackReplayI2P(AttackReplay, I2P):
    """Attack prompts scored with I2P's detectors (NudeNet or Q16); the paper scale's replay."""

    name: ClassVar[str] = "attack_replay"
    metrics: ClassVar[tuple[Metric, ...]] = (ASR, ASR_ANY, *(m for m in I2P.metrics if m is not INAPPROPRIATE_RATE))
