"""histosynth.plots: grids people read — whole titles, readable text."""

import numpy as np
from PIL import Image

from histosynth.plots import CELL, image_grid


def test_long_titles_are_wrapped_whole_not_cut(tmp_path):
    imgs = np.zeros((2, 16, 16, 3), np.uint8)
    short, long = tmp_path / "short.png", tmp_path / "long.png"
    image_grid([("tumor", imgs)], short, columns=2)
    prompt = "Histology image of DAB-positive tissue, morphology type thirty-two, " * 3
    image_grid([(prompt, imgs), ("a", imgs)], long, columns=2)
    s, lg = Image.open(short), Image.open(long)
    assert s.height == CELL and lg.height > 2 * CELL  # the long prompt's row grew to hold every line
    assert lg.width - 2 * CELL < 400  # wrapped, not one endless line


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
