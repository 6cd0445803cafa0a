"""What a change reruns: adding one slide tiles only that slide; memory/speed knobs rerun nothing;
a failing split keeps the previous split."""

import hashlib
import shutil

import pytest
import yaml

pytestmark = pytest.mark.workflow
SLIDES = [("a", "tumor"), ("b", "normal"), ("c", "tumor"), ("d", "normal")]


def _config(wd, slides, batch_size=64):
    sheet = wd / "slides.tsv"
    sheet.write_text(
        "slide_id\tslide_path\tcase_id\tlabel\n" + "".join(f"{s}\t{s}.tiff\tcase_{s}\t{label}\n" for s, label in slides)
    )
    cfg = wd / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "slides": str(sheet),
                "split": {"val": 0.0, "test": 0.25},
                "tiling": {"patch_size": 32, "mpp": 2.0, "batch_size": batch_size, "tissue": {"max_saturation": 12}},
            }
        )
    )
    return cfg


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_adding_a_slide_tiles_only_it_and_a_failed_split_keeps_the_last(tmp_path, demo_slide, run_snakemake):
    for s in "abcde":
        shutil.copy(demo_slide, tmp_path / f"{s}.tiff")
    train = "results/splits/train.h5"
    cfg = _config(tmp_path, SLIDES)
    res = run_snakemake(tmp_path, train, "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    before = _md5(tmp_path / train)
    # a fifth slide with a class the others do not have, and a different batch size
    cfg = _config(tmp_path, [*SLIDES, ("e", "stroma")], batch_size=7)
    res = run_snakemake(tmp_path, "-n", train, "--configfile", str(cfg))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    tiled = [line.split()[1] for line in out.splitlines() if line.strip().startswith("output: results/slide_patches/")]
    assert tiled == ["results/slide_patches/e.h5,"] and out.count("rule tile_slide:") == 1
    # that class comes from one case, so the new split fails; the previous one is still there
    res = run_snakemake(tmp_path, train, "--configfile", str(cfg))
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "class 'stroma' comes from a single case_id (case_e)" in out
    assert _md5(tmp_path / train) == before
