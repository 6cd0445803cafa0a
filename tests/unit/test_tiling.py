"""Tiling at scale: keep rules, edge padding, batch labels, and model-free imports."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.color import rgb2hed

from histosynth.demo import write_pyramidal_tiff
from histosynth.errors import InputError
from histosynth.labels import DabParams, batch_dab_density, dab_labels, dab_positive_fraction
from histosynth.patchfile import PAD_FRACTION, PatchFile, check_patch_file
from histosynth.tiling import (
    TilingParams,
    four_point_hits,
    keep_patches,
    pad_outside,
    tile_slide,
    tissue_grid_patches,
)
from histosynth.wsi import grid_coords

REPO = Path(__file__).resolve().parents[2]


def test_dab_density_lookup_equals_rgb2hed():
    rgb = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    expected = np.stack([rgb2hed(im)[..., 2] for im in rgb])
    np.testing.assert_allclose(batch_dab_density(rgb), expected, atol=1e-5)


def test_batch_dab_labels_equal_per_patch_fractions():
    rng = np.random.default_rng(1)
    imgs = rng.integers(60, 256, (6, 24, 24, 3), dtype=np.uint8)
    masks = rng.random((6, 24, 24)) < 0.7
    masks[0] = False  # no tissue: negative
    p = DabParams(0.03, 0.3)
    expected = [
        int(dab_positive_fraction(im, p.dab_threshold, m) >= p.min_positive_fraction) for im, m in zip(imgs, masks)
    ]
    assert dab_labels(imgs, p, masks).tolist() == expected
    assert dab_labels(imgs, p, masks)[0] == 0


def test_keep_rules_on_a_mask():
    mask = np.zeros((10, 10), bool)  # downsample 10: a mask pixel is 10x10 level-0 px
    mask[:, :3] = True  # tissue at level-0 x < 30
    coords = np.array([[0, 0], [20, 0], [40, 0]])  # footprint 40: inner points at x = 10 and 30
    assert four_point_hits(mask, 10.0, coords, 40).tolist() == [True, False, False]
    assert keep_patches(mask, 10.0, coords, 40, "fraction", 0.5).tolist() == [True, False, False]
    assert keep_patches(mask, 10.0, coords, 40, "fraction", 0.2).tolist() == [True, True, False]
    assert keep_patches(mask, 10.0, coords, 40, "four_points", 0.9).tolist() == [True, False, False]
    assert keep_patches(mask, 10.0, coords, 40, "both", 0.9).tolist() == [False, False, False]
    with pytest.raises(ValueError, match="keep_rule"):
        TilingParams.from_config({**_cfg_tiling(), "keep_rule": "any"})
    with pytest.raises(ValueError, match="grid_origin"):
        TilingParams.from_config({**_cfg_tiling(), "grid_origin": "contour"})


def _two_pieces():
    """A 10x10 mask at downsample 10 (slide 100x100 level-0 px): piece A at x 10-50, y 10-90
    (32 mask px), piece B at x 70-100, y 20-60 (12 px), touching the right edge."""
    mask = np.zeros((10, 10), bool)
    mask[1:9, 1:5] = True
    mask[2:6, 7:10] = True
    return mask


def _covered(mask, coords):
    """Share of the mask's tissue (downsample 10) under patches of 40 level-0 px."""
    covered = np.zeros((100, 100), bool)
    for x, y in coords:
        covered[y : y + 40, x : x + 40] = True
    tissue = np.kron(mask, np.ones((10, 10), bool))
    return (covered & tissue).sum() / tissue.sum()


def test_tissue_grid_starts_at_each_piece_corner():
    mask = _two_pieces()
    for rule in ("four_points", "fraction"):
        coords, n = tissue_grid_patches(mask, 10.0, (100, 100), 40, 40, True, rule, 0.5)
        # A: x from 10, y from 10 and 50; B: from its own corner (70, 20), reaching past the right edge
        assert coords.tolist() == [[10, 10], [70, 20], [10, 50]], rule  # row-major
        assert n == 3
        assert _covered(mask, coords) == 1.0
    # the slide-corner grid cuts both pieces: six patches for 91 % (four_points), two for 48 % (fraction)
    slide = grid_coords(100, 100, 40, 40, pad=True)
    assert _covered(mask, slide[keep_patches(mask, 10.0, slide, 40, "four_points", 0.0)]) < 0.95
    assert _covered(mask, slide[keep_patches(mask, 10.0, slide, 40, "fraction", 0.5)]) < 0.5


def test_tissue_grid_without_padding_stays_inside_the_slide():
    coords, _ = tissue_grid_patches(_two_pieces(), 10.0, (100, 100), 40, 40, False, "four_points", 0.0)
    assert (coords + 40 <= 100).all()
    assert [60, 20] in coords.tolist()  # B's grid is moved left to fit, not dropped


def test_tissue_grid_takes_no_patch_twice_where_pieces_are_close():
    mask = np.zeros((10, 10), bool)
    mask[0:8, 0:2] = True  # A (16 px): patches at (0, 0) and (0, 40)
    mask[0:2, 3:4] = True  # B (2 px), not touching A but inside A's patch at (0, 0)
    # B's own grid proposes (30, 0), 1/8 tissue: kept by the rule, but 30 px from A's (0, 0), so not taken again
    coords, n = tissue_grid_patches(mask, 10.0, (100, 100), 40, 40, True, "fraction", 0.1)
    assert n == 3
    assert coords.tolist() == [[0, 0], [0, 40]]
    assert _covered(mask, coords) == 1.0
    # with a step of 20 (a 40 px footprint), no two patches are closer than one step in both x and y
    coords, _ = tissue_grid_patches(mask, 10.0, (100, 100), 40, 20, True, "fraction", 0.1)
    d = np.abs(coords[:, None] - coords[None]).max(-1)
    np.fill_diagonal(d, 99)
    assert (d >= 20).all() and len(coords) > 2


def test_tissue_grid_on_an_empty_mask_keeps_nothing():
    coords, n = tissue_grid_patches(np.zeros((10, 10), bool), 10.0, (100, 100), 40, 40, True, "fraction", 0.5)
    assert coords.shape == (0, 2) and n == 0


def _cfg_tiling():
    from histosynth.config import default_config

    return default_config(tiling={"patch_size": 64, "mpp": 1.0, "tissue": {"max_saturation": 12}})["tiling"]


def test_pad_outside_paints_past_the_edge_and_reports_the_share():
    imgs = np.zeros((3, 8, 8, 3), np.uint8)
    coords = np.array([[0, 0], [12, 0], [12, 12]])  # slide 16x16, footprint 16 at downsample 2 -> 8 px patches
    frac = pad_outside(imgs, coords, (16, 16), 2.0, 16, np.array([240, 241, 242], np.uint8))
    assert frac.tolist() == [0.0, 0.75, 0.9375]
    assert (imgs[0] == 0).all()
    assert (imgs[1, :, 2:] == [240, 241, 242]).all() and (imgs[1, :, :2] == 0).all()
    assert (imgs[2, 2:, :] == [240, 241, 242]).all() and (imgs[2, :2, :2] == 0).all()


@pytest.fixture(scope="module")
def edge_slide(tmp_path_factory):
    """Tissue running off the right and bottom edges of a slide whose size is no multiple of the grid."""
    rng = np.random.default_rng(0)
    img = np.clip(242 + rng.normal(0, 1.5, (1000, 1100, 3)), 0, 255).astype(np.uint8)
    img[500:, 600:] = (190, 110, 170)
    path = tmp_path_factory.mktemp("edge") / "edge.tiff"
    write_pyramidal_tiff(path, img, mpp=0.5)
    return path


def test_padding_tiles_the_edge_strips_and_records_them(edge_slide, tmp_path):
    cfg = _cfg_tiling()
    counts = {}
    for pad in (False, True):
        out = tmp_path / f"{pad}.h5"
        res = tile_slide(
            edge_slide,
            "e",
            "c",
            out,
            tmp_path / "t.png",
            TilingParams.from_config({**cfg, "pad_edges": pad}),
            progress=False,
        )
        counts[pad] = check_patch_file(out)
        with PatchFile(out) as pf:
            pad_frac = pf.column(PAD_FRACTION)
            assert len(pad_frac) == len(pf)
            edge = (pf.coords[:, 0] + 128 > 1100) | (pf.coords[:, 1] + 128 > 1000)
            assert (pad_frac[~edge] == 0).all()
            if pad:
                assert edge.any() and (pad_frac[edge] > 0).all()
                glass = np.asarray(pf.attrs["background_rgb"])
                assert (np.abs(glass.astype(int) - 242) <= 3).all()
                i = int(np.flatnonzero(pf.coords[:, 0] + 128 > 1100)[0])
                img = pf.read([i])[0]
                assert (img[:, -5:] == glass).all()  # the part beyond the slide is glass-coloured
            else:
                assert not edge.any()
        assert res.n_patches == counts[pad]
    assert counts[True] > counts[False]


@pytest.mark.parametrize(
    "script",
    [
        "tile_slide",
        "split_patches",
        "import_patches",
        "make_demo_slide",
        "cluster_morphology",
        "gather_samples",
        "gather_filtered",
    ],
)
def test_model_free_rules_never_import_torch(script):
    """A model-free job must not pay torch's start-up: importing its script's modules leaves torch out."""
    src = (REPO / "workflow_scripts" / f"{script}.py").read_text()
    imports = [line for line in src.splitlines() if line.startswith(("from histosynth", "import histosynth"))]
    assert imports, script
    code = (
        "import sys\n"
        + "\n".join(imports)
        + "\nprint(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"{script} imports {r.stdout.strip()}"


@pytest.mark.parametrize("script", ["tile_slide", "make_demo_slide"])
def test_per_slide_rules_never_import_pandas(script):
    """The jobs run once per slide, where ~0.3 s of CPU for pandas is a large part of a small slide's job."""
    src = (REPO / "workflow_scripts" / f"{script}.py").read_text()
    imports = [line for line in src.splitlines() if line.startswith(("from histosynth", "import histosynth"))]
    code = "import sys\n" + "\n".join(imports) + "\nprint('pandas' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False", f"{script} imports pandas"


def test_absurd_tiling_mpp_is_an_error_naming_the_key(demo_slide, tmp_path, cfg):
    cfg["tiling"]["mpp"] = 0.001
    with pytest.raises(
        InputError, match=r"slide 'd': tiling\.mpp = 0\.001 .*slide's 0\.5 um/px.*tiling\.mpp >= 0\.125"
    ):
        tile_slide(
            demo_slide,
            "d",
            "c",
            tmp_path / "d.h5",
            tmp_path / "d.png",
            TilingParams.from_config(cfg["tiling"]),
            progress=False,
        )
    assert not (tmp_path / "d.h5").exists()


def test_mild_upsampling_is_allowed(demo_slide, tmp_path, cfg):
    cfg["tiling"].update(mpp=0.125, patch_size=256, min_tissue_fraction=0.9)  # exactly 4x finer: the bound
    res = tile_slide(
        demo_slide,
        "d",
        "c",
        tmp_path / "d.h5",
        tmp_path / "d.png",
        TilingParams.from_config(cfg["tiling"]),
        progress=False,
    )
    assert res.plan.downsample == pytest.approx(0.25)


def test_tile_slide_with_tissue_grid_origin(demo_slide, tmp_path, cfg):
    cfg["tiling"].update(grid_origin="tissue", keep_rule="four_points")
    out = tmp_path / "t.h5"
    res = tile_slide(
        demo_slide, "d", "c", out, tmp_path / "t.png", TilingParams.from_config(cfg["tiling"]), progress=False
    )
    assert check_patch_file(out) == res.n_patches > 0
    with PatchFile(out) as pf:
        assert pf.attrs["grid_origin"] == "tissue"
        xy = pf.coords
    assert len(np.unique(xy, axis=0)) == len(xy)
    assert ((xy % 128) != 0).any()  # the grid starts at the tissue's corner, not the slide's
