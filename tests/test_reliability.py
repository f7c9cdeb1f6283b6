"""Bad input, one case at a time, as a user meets it through `run.py` on the tiny model: each is refused with exit
code 2 and a message naming the offending file or key, before any model loads where no model is needed, without
writing an image or deleting anything. docs/BAD_INPUT.md is rendered from CASES (`python -m tests.test_reliability`).
"""

from __future__ import annotations

import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_end_to_end import QUICK_WINOBIAS, run_folder, run_py, succeeded

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BAD_INPUT.md"
TINY_GENDER = ("experiment=gender_sd14", "model=tiny", "eval.benchmarks=[winobias]", *QUICK_WINOBIAS,
               "train.iterations=2", "eval.sampler.steps=2")
TINY_SAFETY = ("experiment=safety_sd14", "model=tiny", "eval.benchmarks=[i2p]", "eval.i2p.images_per_prompt=1",
               "train.iterations=2", "eval.sampler.steps=2")
LOADING = "Loading pipeline components"


@dataclass(frozen=True)
class Case:
    id: str
    bad_input: str  # what the user did
    caught: str  # when it is refused
    names: str  # what the message names (a key, or "the file")


CASES = (
    Case("q16_not_a_pickle", "a Q16 prompt file that is not a pickle of a (2, D) array (or tries to run code)",
         "before the first stage", "the file"),
    Case("q16_wrong_width", "a Q16 prompt file of another CLIP's width", "before the first stage", "the file"),
    Case("compose_unknown", "`eval.compose={man: 0.6, martian: 0.4}`", "config check", "eval.compose.martian"),
    Case("no_benchmarks", "`eval.benchmarks=[]` with a stage that generates", "config check", "eval.benchmarks"),
    Case("empty_list", "`eval.winobias.professions=[]` (any empty list without a documented meaning)",
         "config check", "eval.winobias.professions"),
    Case("esd_other_arch", "an ESD file whose keys or shapes do not fit the base UNet",
         "before the first stage (safetensors header / mapped file vs the UNet config)", "the file"),
    Case("esd_other_arch_paper_scale", "an ESD file of the tiny UNet into an SD v1.4 run (`model=sd14_arch`)",
         "before the first stage (the replica's UNet config, built on the meta device)", "the file"),
    Case("module_bytes_changed", "a module file changed or truncated after training",
         "before the model loads (sha256 recorded at save)", "the file"),
    Case("modules_other_model", "modules trained on another base model or architecture (tiny SD into tiny SDXL)",
         "before the model loads", "the modules folder"),
    Case("modules_other_model_paper_scale", "modules trained on the tiny SD model into an SD v1.4 run "
         "(`model=sd14_arch`)", "before the model loads", "the modules folder"),
    Case("foreign_modules_no_checkpoints", "a modules folder of other settings with no checkpoints to resume",
         "before training (kept; train.overwrite=true replaces it)", "the modules folder"),
    Case("truncated_image", "`stage=evaluate` over a store with a truncated image",
         "before any evaluator loads", "the file"),
    Case("missing_images", "`stage=evaluate` after a killed generation", "before any evaluator loads",
         "the true counts (present / missing / damaged)"),
    Case("coco_image_deleted", "a prepared COCO-30K folder with 29,999 images: one deleted after preparing "
         "(`model=sd14_arch`, paper scale)", "before the first stage (its manifest lists every file)",
         "the folder and the missing file"),
    Case("coco_29999_captions", "a COCO folder prepared from 29,999 captions (`--expected-count 29999`) run as "
         "coco30k (`model=sd14_arch`)", "before the first stage (count check)", "the folder and both counts"),
    Case("attack_unknown", "`attack.name=ring_the_bell` (no attack registered under that name; `attack=<name>` "
         "without a conf/attack/<name>.yaml is Hydra's own error, exit 1, listing the known ones)", "config check",
         "attack.name and the known attacks"),
    Case("attack_budget_zero", "`attack.iterations=0` or `attack.population=0` (a search budget of 0)",
         "config check", "the key"),
    Case("attack_no_safety_concept", "`stage=attack` on a run whose concept set has no safety concept "
         "(`experiment=gender_toy attack=plain`)", "config check", "the concept set"),
    Case("attack_white_box_sld", "`attack=white_box` against SLD (its defence acts inside the sampler's loop)",
         "stage start, before the model loads", "the method and its sampler"),
)


def render_table() -> str:
    lines = ["# Bad input: when it is caught and what the message names", "",
             "Generated from `tests/test_reliability.py` (`python -m tests.test_reliability > docs/BAD_INPUT.md`); "
             "each row is a test that runs `run.py` on the tiny model and asserts exit code 2, the name below in the "
             "message and, where no model is needed, that no model was loaded.", "",
             "| bad input | when it is caught | the message names |", "|---|---|---|"]
    lines += [f"| {case.bad_input} | {case.caught} | {case.names} |" for case in CASES]
    return "\n".join(lines) + "\n"


def test_the_docs_table_is_rendered_from_these_cases():
    assert DOC.read_text() == render_table(), "run: python -m tests.test_reliability > docs/BAD_INPUT.md"


def refused(done, *names: str, model_loaded: bool = False) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-4000:]
    for name in names:
        assert str(name) in output, output[-4000:]
    assert "Traceback" not in output
    if not model_loaded:
        assert LOADING not in output, "refused only after the model loaded"
    return output


def files_of(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


# --- before any run -------------------------------------------------------------------------------------------


class Exploit:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


@pytest.mark.parametrize("case", ["q16_not_a_pickle", "q16_wrong_width"])
def test_a_bad_q16_file_is_refused_before_the_first_stage(case, workspace, tmp_path):
    path = tmp_path / "prompts.p"
    if case == "q16_not_a_pickle":
        path.write_bytes(pickle.dumps(Exploit()))
    else:  # the tiny stand-in classifies with ViT-S-32 (384 wide); this file is ViT-L-14's width
        path.write_bytes(pickle.dumps(np.zeros((2, 768), dtype=np.float32)))
    done = run_py(workspace, *TINY_SAFETY, "method=none", f"eval.evaluators.q16.prompts={path}")
    output = refused(done, path)
    assert "this pickle runs code" not in output


@pytest.mark.parametrize("args, key", [
    (("eval.compose={man:0.6,martian:0.4}",), "eval.compose.martian"),
    (("eval.benchmarks=[]",), "eval.benchmarks"),
    (("eval.winobias.professions=[]",), "eval.winobias.professions"),
])
def test_config_mistakes_are_refused_by_key(args, key, workspace):
    refused(run_py(workspace, "experiment=gender_sd14", "model=tiny", *args), key)


def prepared_coco(folder: Path, captions: int) -> Path:
    """A prepared coco30k folder of `captions` rows, as `python -m respodiff.datasets prepare` lays it out, with
    one tiny JPEG written under every name (the checks read names, sizes and the manifest, not pixels)."""
    import hashlib
    import io

    import pandas as pd
    from PIL import Image

    from respodiff.datasets.folder import file_entry, write_manifest

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 90, 60)).save(buffer, format="JPEG")
    image = buffer.getvalue()
    entry = {"sha256": hashlib.sha256(image).hexdigest(), "size": len(image)}
    (folder / "images").mkdir(parents=True)
    names = [f"images/{i:05d}.jpg" for i in range(captions)]
    for name in names:
        (folder / name).write_bytes(image)
    table = pd.DataFrame({"prompt_id": [f"{i:05d}" for i in range(captions)], "caption_index": range(captions),
                          "caption": [f"caption {i}" for i in range(captions)], "file": names, "source_file": names})
    table.to_parquet(folder / "captions.parquet", index=False)
    files = dict.fromkeys(names, entry) | {"captions.parquet": file_entry(folder / "captions.parquet")}
    write_manifest(folder, "coco30k", "files:test", {"captions": captions, "images": captions}, files, captions)
    return folder


@pytest.mark.parametrize("case", ["coco_image_deleted", "coco_29999_captions"])
def test_a_coco_folder_one_image_short_is_refused_at_paper_scale_before_loading(case, workspace, tmp_path):
    if case == "coco_image_deleted":
        folder = prepared_coco(tmp_path / "coco30k", 30000)
        (folder / "images" / "12345.jpg").unlink()
        names = (folder, "1 of 30001 files are missing", "images/12345.jpg")
    else:
        folder = prepared_coco(tmp_path / "coco30k", 29999)
        names = (folder, "found 29999 entries, expected 30000")
    done = run_py(workspace, "experiment=gender_sd14", "model=sd14_arch", "eval.benchmarks=[coco30k]",
                  f"eval.coco30k.data_dir={folder}")
    refused(done, *names)
    assert "stage train" not in done.stdout + done.stderr  # before the first stage, so before any weight


def test_an_esd_file_for_another_architecture_is_refused_before_loading(workspace, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "esd.safetensors"
    save_file({"conv_in.weight": torch.zeros(8, 4, 3, 3), "not_a_unet_key": torch.zeros(1)}, str(path))
    refused(run_py(workspace, *TINY_SAFETY, "method=esd", f"method.weights={path}"), path, "unexpected keys")


def test_an_esd_file_of_the_tiny_unet_is_refused_at_paper_scale_before_loading(workspace, tiny_pipe, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "esd_tiny.safetensors"
    save_file({key: value.contiguous() for key, value in tiny_pipe.unet.state_dict().items()}, str(path))
    done = run_py(workspace, *TINY_SAFETY, "model=sd14_arch", "method=esd", f"method.weights={path}")
    refused(done, path)
    assert "stage train" not in done.stdout + done.stderr


@pytest.mark.parametrize("args, names", [
    (("experiment=safety_toy", "attack=ring_a_bell", "attack.name=ring_the_bell"),
     ("attack.name", "known attacks: plain, ring_a_bell")),
    (("experiment=safety_toy", "attack=ring_a_bell", "attack.iterations=0"), ("attack.iterations",)),
    (("experiment=safety_toy", "attack=white_box", "attack.population=0"), ("attack.population",)),
    (("experiment=gender_toy", "attack=plain"), ("no safety concept", "toy_gender")),
    (("experiment=safety_toy", "method=sld_max", "attack=white_box"), ("sld_max", "sampler")),
])
def test_bad_attack_input_is_refused_before_any_model_loads(args, names, workspace, tmp_path):
    refused(run_py(workspace, *args, "model=tiny", "stage=attack", f"hydra.run.dir={tmp_path}"), *names)


# --- around a finished tiny run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(workspace) -> Path:
    return run_folder(succeeded(run_py(workspace, *TINY_GENDER)))


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def again(workspace: Path, run_dir: Path, *args: str):
    """TINY_GENDER with `args` replacing or adding keys, run in `run_dir`."""
    given = dict(arg.split("=", 1) for arg in (*TINY_GENDER, *args))
    return run_py(workspace, *(f"{key}={value}" for key, value in given.items()), f"hydra.run.dir={run_dir}")


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "bad_header"])
def test_changed_module_bytes_are_refused_and_nothing_is_written_or_deleted(damage, workspace, run_copy):
    module = next((run_copy / "modules").rglob("*.safetensors"))
    data = bytearray(module.read_bytes())
    if damage == "flipped_byte":
        data[-1] ^= 0xFF  # the last byte of the tensor data: the file still parses
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[:8] = (10**9).to_bytes(8, "little")  # a header length beyond the file
    module.write_bytes(bytes(data))
    before = files_of(run_copy / "images")
    refused(again(workspace, run_copy, "stage=generate"), module)
    assert files_of(run_copy / "images") == before


def test_modules_of_another_architecture_are_refused_before_loading(workspace, run_copy):
    refused(again(workspace, run_copy, "stage=generate", "model=tiny_sdxl"), run_copy / "modules", "tiny|sdxl")


def test_modules_of_the_tiny_model_are_refused_at_paper_scale_before_loading(workspace, run_copy):
    refused(again(workspace, run_copy, "stage=generate", "model=sd14_arch"), run_copy / "modules")


def test_foreign_modules_without_checkpoints_are_kept(workspace, run_copy):
    shutil.rmtree(run_copy / "checkpoints")
    before = files_of(run_copy / "modules")
    refused(again(workspace, run_copy, "stage=train", "method.lambda_sem=1"), run_copy / "modules",
            "train.overwrite=true")
    assert files_of(run_copy / "modules") == before


def test_a_truncated_image_is_named_before_evaluating(workspace, run_copy):
    image = sorted((run_copy / "images" / "winobias").rglob("*.png"))[3]
    image.write_bytes(image.read_bytes()[:200])
    before = files_of(run_copy / "images")
    refused(again(workspace, run_copy, "stage=evaluate", "eval.force=true"), image, "1 damaged")
    assert files_of(run_copy / "images") == before


def test_counts_after_a_killed_generation_are_true(workspace, run_copy):
    images = sorted((run_copy / "images" / "winobias").rglob("*.png"))
    for path in images[:3]:
        path.unlink()
    refused(again(workspace, run_copy, "stage=evaluate", "eval.force=true"),
            f"{len(images) - 3} of {len(images)} images are present", "3 not generated yet")


def test_stand_ins_keep_what_the_user_set_and_say_what_they_replace(caplog):
    import logging

    from respodiff.config import apply_evaluator_scale
    from tests.test_config import compose_config

    cfg = compose_config("experiment=safety_sd14", "model=tiny", "+eval.i2p.dataset_size=3")
    with caplog.at_level(logging.INFO, logger="respodiff"):
        apply_evaluator_scale(cfg, ["+eval.i2p.dataset_size=3"])
    assert cfg.eval.i2p.dataset_size == 3
    assert "eval.i2p.dataset_size=3 kept as given" in caplog.text
    assert "eval.i2p.data_dir:" in caplog.text and "stand-in" in caplog.text


def test_a_damaged_checkpoint_is_named_not_loaded(tiny_pipe, tmp_path):
    from dataclasses import replace

    from respodiff.errors import CheckpointMismatchError
    from respodiff.training import train_transformations
    from tests.test_trainer import H_SHAPE, QUICK, WOMAN

    train_transformations(tiny_pipe, [WOMAN], replace(QUICK, iterations=2), tmp_path, "tiny", H_SHAPE)
    checkpoint = tmp_path / "checkpoints" / "woman" / "state.pt"
    assert (tmp_path / "checkpoints" / "woman" / "state.pt.sha256.json").is_file()
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(CheckpointMismatchError, match=f"checkpoint {checkpoint} was changed or damaged"):
        train_transformations(tiny_pipe, [WOMAN], replace(QUICK, iterations=4), tmp_path, "tiny", H_SHAPE)


def test_the_i2p_hard_flag_is_read_strictly():
    import pandas as pd

    from respodiff.errors import ConfigError
    from respodiff.evaluation.safety import strict_flags

    read = strict_flags(pd.Series(["False", "True", "0", "1", False, 1, "no"]), "hard")
    assert read.tolist() == [False, True, False, True, False, True, False]
    with pytest.raises(ConfigError, match="hard holds 'maybe'"):
        strict_flags(pd.Series(["maybe"]), "hard")


if __name__ == "__main__":
    sys.stdout.write(render_table())
