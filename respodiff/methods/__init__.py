"""The methods of the comparison, one class per `method.kind`, each in its own file of this package.

| method.kind      | conf/method/                                         | what differs from the base model          |
|------------------|------------------------------------------------------|-------------------------------------------|
| hspace           | respodiff, ram_only, shared, codsma, respodiff_mlp/conv | h-space modules trained by score matching |
| sdisc            | sdisc                                                | h-space vectors learnt on base images     |
| negative_prompt  | negative_prompt                                      | the manifest's negative prompts           |
| sld              | sld_weak, sld_medium, sld_strong, sld_max            | diffusers' safe pipeline + call arguments |
| esd              | esd                                                  | the UNet's weights (a published ESD file) |
| base             | none                                                 | nothing (the "SD" rows)                   |

`base.py` holds the interface and the registry; a new method is one file (here or in any importable module named
by `method.module`) plus one YAML in conf/method/.
"""

from .base import (
    Method,
    ModuleMethod,
    TrainingRun,
    available_methods,
    build_method,
    method_class,
    register_method,
)

__all__ = [
    "Method",
    "ModuleMethod",
    "TrainingRun",
    "available_methods",
    "build_method",
    "method_class",
    "register_method",
]
