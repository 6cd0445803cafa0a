"""histosynth.plots: grids, strips, charts and slide thumbnails people read — whole titles, readable text."""

import numpy as np
from PIL import Image

from histosynth.plots import CELL, image_grid, patch_strip


def test_long_titles_are_wrapped_whole_not_cut(tmp_path):
    imgs = np.zeros((2, 16, 16, 3), np.uint8)
    short, long = tmp_path / "short.png", tmp_path / "long.png"
    image_grid([("tumor", imgs)], short, columns=2)
    prompt = "Histology image of DAB-positive tissue, morphology type thirty-two, " * 3
    image_grid([(prompt, imgs), ("a", imgs)], long, columns=2)
    s, lg = Image.open(short), Image.open(long)
    assert s.height == CELL and lg.height > 2 * CELL  # the long prompt's row grew to hold every line
    assert lg.width - 2 * CELL < 400  # wrapped, not one endless line


def test_patch_strip_shows_every_patch_at_one_scale_and_greys_empty_cells():
    imgs = np.stack([np.full((16, 16, 3), v, np.uint8) for v in (10, 200)])
    out = np.asarray(patch_strip(imgs, slots=3, min_px=32))
    assert out.shape == (32, 3 * 36 - 4, 3)  # small patches enlarged to min_px, 4 px gaps
    assert (out[:, :32] == 10).all() and (out[:, 36:68] == 200).all()  # nearest-neighbour: pixels kept
    assert (out[:, 72:] == 238).all()  # the empty third cell
    big = np.asarray(patch_strip(np.zeros((1, 64, 64, 3), np.uint8), slots=2, min_px=32))
    assert big.shape == (64, 2 * 68 - 4, 3)  # larger patches keep their size
    assert patch_strip(np.zeros((0, 16, 16, 3), np.uint8), slots=3, min_px=32) is None


def test_every_chart_is_written_and_its_figure_freed(tmp_path):
    import matplotlib.pyplot as plt
    import pandas as pd

    from histosynth.plots import acceptance_plot, coverage_plot, k_sweep_plot, loss_curve

    rng = np.random.default_rng(0)
    acceptance = pd.DataFrame({"round": [0, 0, 1], "label_name": ["a", "b", "b"], "accepted": [3, 1, 2]})
    per_class = pd.DataFrame({"label_name": ["a", "b"], "requested": [4, 4]})
    charts = {
        "loss": lambda p: loss_curve(pd.DataFrame({"step": range(10), "loss": rng.random(10)}), p, "lora"),
        "sweep": lambda p: k_sweep_plot(
            pd.DataFrame({"k": [2, 3], "inertia": [2.0, 1.0], "silhouette": [0.3, 0.4]}), p, 50, 3
        ),
        "acceptance": lambda p: acceptance_plot(acceptance, per_class, p),
        "coverage": lambda p: coverage_plot(
            rng.random((20, 5)),
            {"raw": rng.random((8, 5)), "filtered": np.zeros((0, 5))},
            p,
            "exp",
            note="random network",
        ),
    }
    for name, draw in charts.items():
        draw(tmp_path / f"{name}.png")
        assert Image.open(tmp_path / f"{name}.png").width > 100, name
    assert plt.get_fignums() == []  # save_figure closed every one


def test_slide_thumbnail_draws_the_mask_as_a_contour_over_untinted_tissue(demo_slide, tmp_path):
    import openslide
    from PIL import Image

    from histosynth.plots import PREVIEW_PX, write_thumbnail

    slide = openslide.OpenSlide(str(demo_slide))
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True  # the middle half of the slide
    write_thumbnail(slide, mask, np.zeros((0, 2), int), 64, tmp_path / "t.png", title="demo", mpp=0.5)
    out = np.asarray(Image.open(tmp_path / "t.png").convert("RGB")).astype(int)
    plain = np.asarray(slide.get_thumbnail((PREVIEW_PX, PREVIEW_PX)).convert("RGB")).astype(int)
    h, w = plain.shape[:2]
    assert out.shape[0] > h and out.shape[1] >= w  # a legend band under the picture
    inside = (slice(h // 4 + 8, 3 * h // 4 - 8), slice(w // 4 + 8, 3 * w // 4 - 8))
    assert np.array_equal(out[inside], plain[inside])  # the stain inside the mask is untouched
    edge = out[h // 2, w // 4 - 2 : w // 4 + 3]
    assert any((px == (0, 190, 0)).all() for px in edge)  # the contour on the mask's border
    assert (out[h + 2 :, :] < 128).any()  # legend text and scale bar drawn


def test_coverage_plot_adds_a_umap_row_fitted_on_the_real_features(tmp_path, monkeypatch):
    from PIL import Image
    from sklearn.decomposition import PCA

    import histosynth.plots as ev

    # umap-learn's first fit compiles numba code (~30 s of CPU); a stand-in projection keeps this test fast,
    # and records what it was fitted on
    fitted = []

    def stand_in(real, seed):
        fitted.append(real)
        return PCA(n_components=2, random_state=seed).fit(real[:, ::-1])

    monkeypatch.setattr(ev, "umap_projection", stand_in)
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(30, 6)), rng.normal(size=(20, 6))
    ev.coverage_plot(real, {"raw": fake, "filtered": fake[:5]}, tmp_path / "pca.png", "e")
    assert fitted == []
    ev.coverage_plot(real, {"raw": fake, "filtered": fake[:5]}, tmp_path / "both.png", "e", umap=True, seed=3)
    assert len(fitted) == 1 and fitted[0] is real
    (w1, h1), (w2, h2) = Image.open(tmp_path / "pca.png").size, Image.open(tmp_path / "both.png").size
    assert w1 == w2 and h2 == 2 * h1  # a second row, beside the PCA one
