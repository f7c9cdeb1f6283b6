"""FID in the run's image format (eval.image_format, docs/PUBLIC_SCRIPTS.md row 4): with jpeg75 the generated
images are JPEG quality 75 files and the reference images are re-encoded the same way in memory before feature
extraction; png and jpeg75 reference statistics are cached apart. A small feature extractor that sees fine detail
(what JPEG compression removes) stands in for Inception."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from respodiff import datasets
from respodiff.errors import ConfigError
from respodiff.evaluation.classifiers import ClipScorer
from respodiff.evaluation.evaluator_settings import EvaluatorSettings
from respodiff.evaluation.evaluators import Evaluators
from respodiff.evaluation.quality import (
    FORMAT_OF_SUFFIX,
    REFERENCE_REENCODING,
    FidScorer,
    image_format_of,
    jpeg_reencoded,
    reference_key,
)
from respodiff.evaluation.registry import get_benchmark
from respodiff.evaluation.testing import save_tiny_clip, write_images
from respodiff.generation.plan import IMAGE_FORMATS
from respodiff.generation.store import JPEG_QUALITY, image_ok, write_image

N = 24


class ColourAndDetail(torch.nn.Module):
    """Per image quadrant: mean colour and mean fine detail (|x - 3x3 mean|), x100. JPEG keeps the colours and
    smooths the detail, so this extractor tells a JPEG-75 copy from its lossless original."""

    identity = "colour-and-detail-24"

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float() / 255.0
        detail = (x - torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).abs()
        pooled = [torch.nn.functional.adaptive_avg_pool2d(t, 2).flatten(1) for t in (x, detail)]
        return 100.0 * torch.cat(pooled, dim=1)


def lossless_references(folder):
    return write_images(folder, [f"r{i:02d}" for i in range(N)], lambda i: (100 + 7 * (i % 5), 120 + 3 * (i % 7), 80),
                        size=64, seed=1)


def jpeg_copies(paths, folder):
    """What a jpeg75 store holds for these pixels: each written by the store's own writer."""
    copies = []
    for path in paths:
        copy = folder / f"{path.stem}.jpg"
        with Image.open(path) as image:
            write_image(copy, image.convert("RGB"))
        copies.append(copy)
    return copies


# --- the store writes what jpeg75 names ---------------------------------------------------------------------------


def test_the_store_writes_jpeg_quality_75_and_fid_reencodes_the_same_way(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    write_image(tmp_path / "0.jpg", Image.fromarray(pixels))
    expected = io.BytesIO()
    Image.fromarray(pixels).save(expected, format="JPEG", quality=75)
    assert (tmp_path / "0.jpg").read_bytes() == expected.getvalue()
    other = io.BytesIO()
    Image.fromarray(pixels).save(other, format="JPEG", quality=90)
    assert other.getvalue() != expected.getvalue()  # the quality is visible in the bytes, so the check above can fail
    with Image.open(tmp_path / "0.jpg") as written:
        assert written.format == "JPEG"
        np.testing.assert_array_equal(np.asarray(written.convert("RGB")), jpeg_reencoded(pixels, 75))
    assert image_ok(tmp_path / "0.jpg", 32, 32)
    # One choice, two sides: the generation side's formats and quality are the evaluation side's.
    assert JPEG_QUALITY == REFERENCE_REENCODING["jpeg75"] == 75
    assert {suffix: name for name, suffix in IMAGE_FORMATS.items()} == FORMAT_OF_SUFFIX
    assert set(REFERENCE_REENCODING) == set(IMAGE_FORMATS)


def test_the_store_refuses_a_suffix_it_does_not_write(tmp_path):
    with pytest.raises(ValueError, match="webp"):
        write_image(tmp_path / "0.webp", Image.new("RGB", (8, 8)))
    assert not (tmp_path / "0.webp").exists()


# --- FidScorer --------------------------------------------------------------------------------------------------


def test_jpeg75_fid_reencodes_the_references_and_caches_apart_from_png(tmp_path):
    references = lossless_references(tmp_path / "ref")
    generated = jpeg_copies(references, tmp_path / "gen")
    scorer = FidScorer(ColourAndDetail(), ColourAndDetail.identity, tmp_path / "stats", batch_size=8)

    as_jpeg = scorer.fid(generated, references, expected=N, reference_root=tmp_path / "ref",
                         reference_format="jpeg75")
    as_png = scorer.fid(generated, references, expected=N, reference_root=tmp_path / "ref")
    # The JPEG copies against references re-encoded the same way: the same pixels, distance zero. Against the
    # lossless originals the lost detail shows.
    assert abs(as_jpeg.value) < 1e-6 < 0.01 < as_png.value
    assert scorer.identity()["fid_reference_format"] == "png" and as_jpeg.reference_format == "jpeg75"

    # Two statistics files, one per format, each saying which it is.
    assert as_jpeg.reference_key != as_png.reference_key
    assert as_jpeg.reference_key == reference_key(references, ColourAndDetail.identity, root=tmp_path / "ref",
                                                  image_format="jpeg75")
    meta = {json.loads(p.read_text())["image_format"]: p.stem for p in (tmp_path / "stats").glob("*.json")}
    assert meta == {"jpeg75": as_jpeg.reference_key, "png": as_png.reference_key}

    # The cached jpeg75 statistics are read back, not the png ones: the same value again, no new file.
    again = scorer.fid(generated, references, expected=N, reference_root=tmp_path / "ref", reference_format="jpeg75")
    assert again.value == pytest.approx(as_jpeg.value, abs=1e-9)
    assert len(list((tmp_path / "stats").glob("*.npz"))) == 2

    with pytest.raises(ConfigError, match="webp"):
        scorer.fid(generated, references, reference_format="webp")


def test_the_image_format_is_read_off_the_generated_files():
    assert image_format_of(["a/0.jpg", "b/1.jpg"]) == "jpeg75"
    assert image_format_of(["a/0.png"]) == "png"
    with pytest.raises(ConfigError, match="one format"):
        image_format_of(["a/0.png", "a/1.jpg"])
    with pytest.raises(ConfigError, match="one format"):
        image_format_of(["a/0.webp"])


# --- the COCO benchmark ------------------------------------------------------------------------------------------


@pytest.fixture
def coco_with_lossless_references(tmp_path):
    """A prepared COCO folder (dev size N) whose references are PNG files, so JPEG re-encoding changes them."""
    source = tmp_path / "src"
    references = lossless_references(source / "val2014")
    pd.DataFrame({"file_name": [f"val2014/{p.name}" for p in references],
                  "caption": [f"a photo of thing {i}" for i in range(N)]}).to_csv(source / "captions.csv", index=False)
    datasets.prepare("coco30k", tmp_path / "coco", from_files=source, expected_count=N)
    return tmp_path / "coco"


def generated_store(captions: pd.DataFrame, folder, image_format: str) -> pd.DataFrame:
    """A finished coco store whose image i holds caption i's reference pixels, saved in `image_format`."""
    suffix = IMAGE_FORMATS[image_format]
    rows = []
    for record in captions.itertuples(index=False):
        path = folder / f"{record.prompt_id}{suffix}"
        with Image.open(record.reference) as image:
            write_image(path, image.convert("RGB"))
        rows.append({"image_id": f"coco30k/{record.prompt_id}/0", "prompt_id": record.prompt_id,
                     "prompt": record.caption, "sample_index": 0, "status": "done", "path": str(path)})
    return pd.DataFrame(rows)


def test_coco_fid_compares_in_the_format_the_store_was_saved_in(tmp_path, coco_with_lossless_references):
    settings = {"data_dir": str(coco_with_lossless_references), "dataset_size": N, "n_bootstrap": 0}
    bench = get_benchmark("coco30k")
    captions = datasets.load_coco(coco_with_lossless_references, expected_count=N)
    clip = ClipScorer.from_folder(save_tiny_clip(tmp_path / "tiny-clip"), batch_size=16,
                                  identity={"clip_model": "tiny-clip"})
    fid = FidScorer(ColourAndDetail(), ColourAndDetail.identity, tmp_path / "stats", batch_size=8)
    evaluators = Evaluators(EvaluatorSettings(), clip=clip, fid=fid)

    jpeg = bench.evaluate(generated_store(captions, tmp_path / "jpeg", "jpeg75"), settings, evaluators)
    png = bench.evaluate(generated_store(captions, tmp_path / "png", "png"), settings, evaluators)
    # Each store holds the references' own pixels in its format: both distances are zero only because the jpeg75
    # store's references were re-encoded as JPEG 75 first.
    assert abs(jpeg.metric("fid")["value"]) < 1e-6 and abs(png.metric("fid")["value"]) < 1e-6
    assert jpeg.evaluator["fid_reference_format"] == "jpeg75" and png.evaluator["fid_reference_format"] == "png"
    assert jpeg.evaluator["fid_reference_stats"] != png.evaluator["fid_reference_stats"]
    # Every image keeps its zero-shot gender and race and what its caption names, for a safety module's leakage.
    assert {"gender", "race", "names_gender", "names_race", "subject"} <= set(jpeg.per_image.columns)
    assert set(jpeg.per_image["gender"]) <= {"man", "woman"} and jpeg.per_image["race"].notna().all()
    # Without the re-encoding (the png references) the JPEG store is measurably off.
    unencoded = fid.fid(sorted((tmp_path / "jpeg").glob("*.jpg")), captions["reference"].tolist(), expected=N)
    assert unencoded.value > 0.01

    mixed = generated_store(captions, tmp_path / "jpeg", "jpeg75")
    mixed.loc[0, "path"] = str(tmp_path / "png" / f"{captions['prompt_id'][0]}.png")
    with pytest.raises(ConfigError, match="one format"):
        bench.evaluate(mixed, settings, evaluators)
