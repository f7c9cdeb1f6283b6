"""Turn a run's trained modules into a shareable folder (for a colleague, or `HSpaceModules.push_to_hub`):

    python -m respodiff.export outputs/gender_sd14/<run> my-gender-modules

The folder holds the suite's own layout (metadata.json with every file's sha256, <concept>/<part>/config.json +
safetensors) and a model card (README.md) with the training settings, the base model, the run's metrics when its
results/ folder is there, and the snippet that applies the modules to a diffusers pipeline.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, RespodiffError
from .modules import METADATA_FILE

# Training settings worth a line in the card (the full record stays in metadata.json).
CARD_SETTINGS = ("kind", "parametrization", "parts", "lambda_sem", "iterations", "batch_size")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def run_metrics(results_dir: Path | None) -> list[dict[str, Any]]:
    """The overall value of every metric in a run's results/*.json (docs/CONTRACTS.md), by benchmark."""
    if results_dir is None or not results_dir.is_dir():
        return []
    metrics = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(result, dict) or not isinstance(result.get("metrics"), list):
            continue  # not a results file (e.g. summary data of another tool)
        for metric in result["metrics"]:
            if isinstance(metric, dict) and not metric.get("group"):
                metrics.append({"benchmark": result.get("benchmark", path.stem), **metric})
    return metrics


def model_card(metadata: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]) -> str:
    """A Hugging Face model card (README.md with YAML front matter) for a set of modules."""
    base_model = str(metadata.get("base_model") or "unknown")
    hub_base = base_model.split("@")[0]
    concepts = list(metadata.get("concept_order") or metadata.get("concepts") or [])
    front = ["---", "library_name: respodiff", "tags: [diffusers, stable-diffusion, h-space, respodiff]"]
    if _HUB_ID.match(hub_base):
        front.append(f"base_model: {hub_base}")
    lines = [*front, "---", "", f"# h-space modules: {', '.join(concepts)}", ""]
    lines += [
        "Responsible-generation modules trained with respodiff (RespoDiff / CoDSMa): small "
        "transformations added to the bottleneck (h-space, the output of `unet.mid_block`) of a frozen UNet.",
        "",
        f"- base model: `{base_model}`",
        f"- h-space shape: {tuple(metadata.get('h_shape', ()))}",
    ]
    if metadata.get("unet_class"):
        lines.append(f"- UNet: {metadata['unet_class']}, config sha256 {metadata.get('unet_config_sha256')}")
    lines += ["", "## Training settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {metadata[key]} |" for key in CARD_SETTINGS if key in metadata]
    for concept, prompts in dict(metadata.get("prompts") or {}).items():
        shown = ", ".join(f"{role}: {text!r}" for role, text in prompts.items() if text)
        lines.append(f"| prompts of {concept} | {shown} |")
    lines += ["", "## Metrics of the run", ""]
    if metrics:
        lines += ["| benchmark | metric | value | CI | n |", "|---|---|---:|---|---:|"]
        for metric in metrics:
            low, high = metric.get("ci_low"), metric.get("ci_high")
            interval = f"{low:.3g} - {high:.3g}" if low is not None and high is not None else ""
            value = metric.get("value")
            shown = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
            lines.append(f"| {metric['benchmark']} | {metric['name']} | {shown} | {interval} | {metric.get('n', '')} |")
    else:
        lines.append("No evaluation results were found beside these modules.")
    model = hub_base if _HUB_ID.match(hub_base) else "<the base model's folder or Hub id>"
    snippet = usage_snippet(model, summed=metadata.get("kind") == "safety")
    lines += ["", "## Usage", "", "```python", *snippet.splitlines(), "```", "",
              f"Every file's sha256 is in {METADATA_FILE}; loading refuses a changed file and a UNet of another "
              "architecture than the one recorded.", ""]
    return "\n".join(lines)


def usage_snippet(base_model: str, summed: bool = False, modules: str = "<this folder or Hub repo id>") -> str:
    effect = "all concepts summed (the safety transformation)" if summed else "image i gets concept i % (concepts)"
    return f"""import torch
from diffusers import DiffusionPipeline
import respodiff

pipe = DiffusionPipeline.from_pretrained("{base_model}")
edit = respodiff.HSpaceModules.from_pretrained("{modules}")
seeds = [0, 1, 2, 3]
with edit.apply(pipe):  # {effect}
    images = pipe("photo of a doctor", num_images_per_prompt=len(seeds),
                  generator=[torch.Generator().manual_seed(seed) for seed in seeds]).images
"""


def export(run_folder: str | Path, out_folder: str | Path) -> Path:
    """Write the modules of `run_folder` (a run folder with modules/, or a modules folder) into a new `out_folder`."""
    from .pretrained import HSpaceModules

    run_folder, out_folder = Path(run_folder), Path(out_folder)
    source = run_folder / "modules" if (run_folder / "modules" / METADATA_FILE).is_file() else run_folder
    if not (source / METADATA_FILE).is_file():
        raise ConfigError(f"{run_folder} holds no trained modules (no modules/{METADATA_FILE}); train them first "
                          "with `python run.py ... stage=train`")
    if out_folder.exists() and any(out_folder.iterdir()):
        raise ConfigError(f"{out_folder} exists and is not empty; export into a new folder")
    return HSpaceModules.from_pretrained(source).save_pretrained(out_folder)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m respodiff.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_folder", help="a run folder (with modules/) or a modules folder")
    parser.add_argument("out_folder", help="a new folder to write the shareable modules into")
    args = parser.parse_args(argv)
    try:
        folder = export(args.run_folder, args.out_folder)
    except RespodiffError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"modules written to {folder} (model card: {folder / 'README.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
