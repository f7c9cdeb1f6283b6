"""Hydra entry point: python run.py experiment=<name> [stage=train|generate|evaluate|report|all] [overrides].

Multirun sweeps: python run.py -m experiment=gender_sd14 method=none,respodiff,ram_only
Several GPUs:    accelerate launch --multi_gpu run.py experiment=gender_sd14 stage=generate
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from respodiff.config import register_resolvers
from respodiff.errors import RespodiffError

register_resolvers()
log = logging.getLogger("respodiff")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from respodiff.stages import run_stages

    try:
        run_stages(cfg, run_dir=HydraConfig.get().runtime.output_dir, overrides=HydraConfig.get().overrides.task)
    except RespodiffError as error:
        # A user-facing error: the message says what to do; a traceback would only bury it.
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
