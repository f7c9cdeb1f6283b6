"""The static report site (`make report`, `python -m respodiff.reporting site`): one page per reproduction table
with its plots, image grids beside the numbers, and the evaluator card and provenance of every number.

Templates (templates/*.html) and the style sheet (static/style.css) are package data. Matplotlib, Jinja2,
markdown-it and Pillow load only when a site is built.
"""

from __future__ import annotations


def build_site(*args, **kwargs):
    """See respodiff.reporting.site.build.build_site."""
    from respodiff.reporting.site.build import build_site as build

    return build(*args, **kwargs)


__all__ = ["build_site"]
