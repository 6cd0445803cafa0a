import logging

import numpy as np
import openslide
import pytest

from histosynth.errors import InputError
from histosynth.patchfile import PatchFile, check_patch_file
from histosynth.tiling import TilingParams, tile_slide
from histosynth.wsi import PatchReader, best_level, grid_coords, mask_fraction, open_slide, plan_read, slide_mpp


def test_demo_slide_is_a_real_pyramid(demo_slide):
    s = openslide.OpenSlide(str(demo_slide))
    assert s.level_count >= 2 and s.level_downsamples[1] == pytest.approx(2.0)
    assert slide_mpp(s, "demo", None) == (0.5, "metadata")


@pytest.mark.parametrize(
    "target, level, read, footprint",
    [(0.5, 0, 64, 64), (1.0, 1, 64, 128), (1.5, 1, 96, 192), (2.0, 2, 64, 256), (0.25, 0, 32, 32)],
)
def test_plan_read_picks_best_level_and_size(demo_slide, target, level, read, footprint):
    s = openslide.OpenSlide(str(demo_slide))
    plan = plan_read(s, 0.5, target, patch_size=64, stride=64)
    assert (plan.level, plan.read_size, plan.footprint) == (level, read, footprint)
    assert plan.step == footprint


def test_missing_mpp_uses_assume_mpp_or_names_the_slide(tmp_path):
    from PIL import Image

    png = tmp_path / "plain.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(png)
    s = open_slide(png, "plain")
    assert slide_mpp(s, "plain", 0.25) == (0.25, "tiling.assume_mpp")
    with pytest.raises(InputError, match="slide 'plain'.*assume_mpp"):
        slide_mpp(s, "plain", None)


def test_grid_and_mask_fraction():
    coords = grid_coords(100, 50, footprint=20, step=20)
    assert len(coords) == 5 * 2 and coords[-1].tolist() == [80, 20]
    mask = np.zeros((5, 10), bool)  # mask downsample 10: one mask px = 10x10 level-0 px
    mask[:, :5] = True  # left half is tissue
    frac = mask_fraction(mask, 10.0, coords, 20)
    assert frac.reshape(2, 5)[0].tolist() == [1, 1, 0.5, 0, 0]


@pytest.mark.parametrize(
    "content, match",
    [(b"this is a pathology report, not a slide\n", "not a whole-slide image"), (None, "file not found")],
)
def test_bad_slide_files_name_the_slide(tmp_path, content, match):
    path = tmp_path / "fake.svs"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=f"slide 'S1'.*{match}"):
        open_slide(path, "S1")


def test_truncated_slide_fails_naming_the_slide_and_leaves_no_output(demo_slide, tmp_path, cfg):
    data = demo_slide.read_bytes()
    bad = tmp_path / "truncated.tiff"
    bad.write_bytes(data[: len(data) // 3])
    out = tmp_path / "out.h5"
    with pytest.raises(InputError, match="slide 'trunc'"):
        tile_slide(bad, "trunc", "c", out, tmp_path / "t.png", TilingParams.from_config(cfg["tiling"]), progress=False)
    assert not out.exists()
    assert not list(tmp_path.glob("*.partial"))


def test_tile_slide_writes_the_contract(demo_slide, tmp_path, cfg):
    cfg["tiling"]["labels"]["method"] = "dab"
    out = tmp_path / "demo.h5"
    res = tile_slide(
        demo_slide,
        "demo",
        "case1",
        out,
        tmp_path / "demo.png",
        TilingParams.from_config(cfg["tiling"]),
        threads=2,
        progress=False,
    )
    assert res.n_patches == check_patch_file(out) > 0
    with PatchFile(out) as pf:
        assert pf.label_names == ["dab_negative", "dab_positive"]
        assert set(pf.labels) <= {0, 1}
        assert set(pf.slide_ids) == {"demo"} and set(pf.case_ids) == {"case1"}
        assert pf.coords_attrs["patch_level"] == 1 and pf.coords_attrs["patch_size"] == 64
        assert pf.coords_attrs["mpp"] == 1.0 and pf.coords_attrs["magnification"] == pytest.approx(10.0)
        assert np.allclose(pf.mpp, 1.0)
        imgs = pf.read(np.arange(len(pf)))
        # every kept patch shows tissue, not glass
        assert (imgs.reshape(len(imgs), -1, 3).mean(axis=1).mean(axis=1) < 225).all()
        # coordinates lie on the stride grid, inside the slide
        assert (pf.coords % 128 == 0).all() and (pf.coords + 128 <= 1024).all()
    # tissue area ~ patch area: kept patches cover between half and twice the tissue
    patch_mm2 = res.n_patches * (64 * 1.0) ** 2 / 1e6
    assert 0.5 * res.tissue_area_mm2 < patch_mm2 < 2 * res.tissue_area_mm2
    assert (tmp_path / "demo.png").stat().st_size > 1000


def test_threaded_reading_equals_single_thread(demo_slide):
    s = openslide.OpenSlide(str(demo_slide))
    plan = plan_read(s, 0.5, 1.0, 64, 64)
    coords = grid_coords(1024, 1024, plan.footprint, plan.step)[:20]
    one = np.concatenate([b for _, b in PatchReader(demo_slide, "d", plan, 64, threads=1).iter_batches(coords, 7)])
    four = np.concatenate([b for _, b in PatchReader(demo_slide, "d", plan, 64, threads=4).iter_batches(coords, 7)])
    assert np.array_equal(one, four)


def test_slide_without_tissue_gives_empty_file_and_warning(blank_slide, tmp_path, cfg, caplog):
    out = tmp_path / "blank.h5"
    with caplog.at_level(logging.WARNING):
        res = tile_slide(
            blank_slide, "blank", "c", out, tmp_path / "b.png", TilingParams.from_config(cfg["tiling"]), progress=False
        )
    assert res.n_patches == 0 and check_patch_file(out) == 0
    assert "no tissue" in caplog.text


def test_sample_label_is_applied(demo_slide, tmp_path, cfg):
    out = tmp_path / "s.h5"
    tile_slide(
        demo_slide,
        "s",
        "c",
        out,
        tmp_path / "s.png",
        TilingParams.from_config(cfg["tiling"]),
        sample_label="tumor",
        label_names=["normal", "tumor"],
        progress=False,
    )
    with PatchFile(out) as pf:
        assert pf.label_names == ["normal", "tumor"] and set(pf.labels) == {1}


def test_a_failure_mid_slide_leaves_no_file(demo_slide, tmp_path, cfg, monkeypatch):
    calls = {"n": 0}
    real = PatchReader.read_one

    def flaky(self, xy):
        calls["n"] += 1
        if calls["n"] > 10:
            raise RuntimeError("simulated crash")
        return real(self, xy)

    monkeypatch.setattr(PatchReader, "read_one", flaky)
    out = tmp_path / "crash.h5"
    cfg["tiling"]["batch_size"] = 4
    with pytest.raises(RuntimeError):
        tile_slide(
            demo_slide, "c", "c", out, tmp_path / "c.png", TilingParams.from_config(cfg["tiling"]), progress=False
        )
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_level_choice_tolerates_rounded_downsamples():
    ds = (1.0, 2.0005, 4.0011, 8.003)
    assert best_level(ds, 2.0) == 1  # 2.0005 is the 2x level; without tolerance level 0 (4x the pixels)
    assert best_level(ds, 4.0) == 2 and best_level(ds, 3.9) == 1
    assert best_level(ds, 1.9) == 0 and best_level(ds, 0.5) == 0
    assert best_level((1.0, 2.1), 2.0) == 0  # 5 % too coarse is not a rounding error


def test_padded_grid_reaches_the_right_and_bottom_edges():
    plain = grid_coords(100, 50, footprint=30, step=30)
    padded = grid_coords(100, 50, footprint=30, step=30, pad=True)
    assert sorted(set(plain[:, 0])) == [0, 30, 60] and sorted(set(plain[:, 1])) == [0]
    assert sorted(set(padded[:, 0])) == [0, 30, 60, 90] and sorted(set(padded[:, 1])) == [0, 30]
    assert len(grid_coords(90, 60, 30, 30, pad=True)) == len(grid_coords(90, 60, 30, 30))  # nothing left over
    assert grid_coords(20, 20, 30, 30, pad=True).tolist() == [[0, 0]]  # a slide smaller than one patch
    # the tissue fraction of a padded patch is over its whole footprint
    mask = np.ones((5, 10), bool)
    frac = mask_fraction(mask, 10.0, np.array([[0, 0], [90, 0]]), 20)
    assert frac.tolist() == [1.0, 0.5]


def test_scores_labels_are_the_tumour_level_of_each_patch(demo_slide, cfg, tmp_path):
    """PathLDM's slides carry no class: tiling.labels.method scores labels each patch low/high tumour
    from its per-patch scores (slide_id, level-0 corner); a patch without a score names slide and corner."""
    import pandas as pd

    step = 128  # cfg tiles 64 px at 1 um/px from a 0.5 um/px slide: 128 level-0 px per patch
    rows = [("s", x, y, ((x + y) // step) % 2 * 0.9, 0.1) for x in range(0, 1024, step) for y in range(0, 1024, step)]
    scores = tmp_path / "scores.tsv"
    pd.DataFrame(rows, columns=["slide_id", "x", "y", "tumor", "til"]).to_csv(scores, sep="\t", index=False)
    cfg["tiling"]["labels"] = {**cfg["tiling"]["labels"], "method": "scores", "scores": str(scores)}
    out = tmp_path / "s.h5"
    tile_slide(demo_slide, "s", "c", out, tmp_path / "s.png", TilingParams.from_config(cfg["tiling"]), progress=False)
    with PatchFile(out) as pf:
        assert pf.label_names == ["low_tumor", "high_tumor"]
        assert pf.labels.tolist() == [((x + y) // step) % 2 for x, y in pf.coords]
        assert set(pf.labels.tolist()) == {0, 1}
    pd.DataFrame(rows[:1], columns=["slide_id", "x", "y", "tumor", "til"]).to_csv(scores, sep="\t", index=False)
    with pytest.raises(InputError, match=r"patch scores .*scores.tsv: no row for \d+ patch\(es\), e.g. slide s at x="):
        tile_slide(
            demo_slide, "s", "c", out, tmp_path / "s.png", TilingParams.from_config(cfg["tiling"]), progress=False
        )


@pytest.mark.parametrize("fraction", [0.66, 0.8, 0.9, 0.99])
def test_truncated_demo_tiff_is_called_truncated(demo_slide, tmp_path, fraction):
    data = demo_slide.read_bytes()
    bad = tmp_path / "cut.tiff"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InputError, match=rf"slide 'S7' looks truncated or corrupt: {bad}"):
        open_slide(bad, "S7")
