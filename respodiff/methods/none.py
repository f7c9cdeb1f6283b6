"""The base model (`method.kind: base`, conf/method/none.yaml): the "SD" rows of every table.

Every hook of Method already means "change nothing"; this class only gives that behaviour its registry name.
"""

from __future__ import annotations

from .base import Method, register_method


@register_method
class BaseModel(Method):
    kind = "base"
