"""What a change reruns: adding one slide tiles only that slide; memory/speed knobs rerun nothing."""

import shutil

import pytest
import yaml

pytestmark = pytest.mark.workflow


def _config(wd, slides, batch_size=64):
    sheet = wd / "samples.tsv"
    sheet.write_text("slide_id\tslide_path\tcase_id\tlabel\n" + "".join(f"{s}\t{s}.tiff\tcase_{s}\t{label}\n" for s, label in slides))
    cfg = wd / "config.yaml"
    cfg.write_text(yaml.safe_dump({"samples": str(sheet), "tiling": {"patch_size": 32, "mpp": 2.0, "batch_size": batch_size,
                                                                     "tissue": {"max_saturation": 12}}}))
    return cfg


def test_adding_a_slide_tiles_only_it_and_batch_size_reruns_nothing(tmp_path, demo_slide, run_snakemake):
    for s in ("a", "b", "c"):
        shutil.copy(demo_slide, tmp_path / f"{s}.tiff")
    cfg = _config(tmp_path, [("a", "tumor"), ("b", "normal")])
    res = run_snakemake(tmp_path, "results/tiles/a.h5", "results/tiles/b.h5", "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    # a third slide with a class the others do not have, and a different batch size
    cfg = _config(tmp_path, [("a", "tumor"), ("b", "normal"), ("c", "stroma")], batch_size=7)
    res = run_snakemake(tmp_path, "-n", "results/tiles/a.h5", "results/tiles/b.h5", "results/tiles/c.h5", "--configfile", str(cfg))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert out.count("rule tile_slide:") == 1 and "results/tiles/c.h5" in out
    assert "results/tiles/a.h5," not in out and "results/tiles/b.h5," not in out
