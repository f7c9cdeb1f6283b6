"""Checks of evaluator files that need no model, run before the first stage (a bad file must not surface after
hours of generation).

Q16's prompt file: parsed without executing code (q16_prompts.py's array-only unpickler) and its width compared
with the embedding width of the CLIP architecture it will be matched against, read from open_clip's model config
(no weights).
"""

from __future__ import annotations

from respodiff.errors import ConfigError, MissingAssetError, RespodiffError
from respodiff.evaluation.evaluator_settings import EvaluatorSettings


def check_q16_prompts(settings: EvaluatorSettings) -> None:
    """Refuse a Q16 prompt file that is not a safe (2, D) array pickle or whose D is not the chosen CLIP's width.

    A missing file is left to the asset check, which says how to get it.
    """
    from respodiff.evaluation.q16_prompts import converted_path, load_array_pickle, load_q16_prompts

    path = settings.q16_prompts_path
    try:
        if path.suffix == ".safetensors" or converted_path(path).is_file():
            prompts, _ = load_q16_prompts(path)  # reads only: the conversion exists already
        elif path.is_file():
            # Parsed here without writing anything (the evaluate stage converts it): the folder may be read-only.
            prompts = load_array_pickle(path.read_bytes())
        else:
            return
    except MissingAssetError:
        return
    except RespodiffError as error:
        raise ConfigError(f"Q16 prompt file {path} (eval.evaluators.q16.prompts) is not usable: {error}") from None
    if prompts.ndim != 2 or prompts.shape[0] != 2:
        raise ConfigError(f"Q16 prompt file {path} holds an array of shape {tuple(prompts.shape)}; Q16's prompts are "
                          "(2, D): one embedding for 'appropriate', one for 'inappropriate'")
    width = _clip_width(settings.q16.arch)
    if width is not None and prompts.shape[1] != width:
        raise ConfigError(
            f"Q16 prompt file {path} holds embeddings of width {prompts.shape[1]}, but eval.evaluators.q16.arch "
            f"{settings.q16.arch!r} embeds images in {width} dimensions: the file belongs to another CLIP (Q16 "
            "publishes one prompts.p per architecture, e.g. ViT-L-14/prompts.p is 768 wide)"
        )


def _clip_width(arch: str) -> int | None:
    import open_clip

    config = open_clip.get_model_config(arch)
    return None if config is None else int(config["embed_dim"])
