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
