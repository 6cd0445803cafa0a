"""What a change reruns: adding one slide tiles only that slide (or only the last batch of slides);
memory/speed knobs rerun nothing; a failing split keeps the previous split."""

import hashlib
import shutil

import h5py
import pytest
import yaml

pytestmark = pytest.mark.workflow
SLIDES = [("a", "tumor"), ("b", "normal"), ("c", "tumor"), ("d", "normal")]


def _config(wd, slides, batch_size=64, slides_per_job=1):
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
                "tiling": {
                    "patch_size": 32,
                    "mpp": 2.0,
                    "batch_size": batch_size,
                    "slides_per_job": slides_per_job,
                    "tissue": {"max_saturation": 12},
                },
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


def _planned_rules(out):
    return sorted(line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("rule "))


def test_slides_per_job_tiles_each_batch_in_one_job_with_the_same_patches(tmp_path, demo_slide, run_snakemake):
    for s in "abcde":
        shutil.copy(demo_slide, tmp_path / f"{s}.tiff")
    tiles = [f"results/slide_patches/{s}.h5" for s, _ in SLIDES]
    res = run_snakemake(tmp_path, *tiles, "--configfile", str(_config(tmp_path, SLIDES)))
    assert res.returncode == 0, res.stderr[-3000:]
    one_per_job = {}
    for t in tiles:
        with h5py.File(tmp_path / t) as f:
            one_per_job[t] = (f["imgs"][:], f["coords"][:], f["labels"][:])
    shutil.rmtree(tmp_path / "results" / "slide_patches")
    # three slides to a job, in slide-sheet order: batches a-c and d
    cfg = _config(tmp_path, SLIDES, slides_per_job=3)
    res = run_snakemake(tmp_path, "-n", *tiles, "--configfile", str(cfg))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert _planned_rules(out) == ["tile_slides_0", "tile_slides_1"]
    res = run_snakemake(tmp_path, *tiles, "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    for t in tiles:
        with h5py.File(tmp_path / t) as f:
            imgs, coords, labels = one_per_job[t]
            assert (
                (f["imgs"][:] == imgs).all() and (f["coords"][:] == coords).all() and (f["labels"][:] == labels).all()
            )
    log = (tmp_path / "results/logs/tile_slide/batch_0000.log").read_text()
    assert "tiled slide 3 of 3: c" in log and "job timing:" in log
    # a slide added at the end of the sheet joins the last batch: only that batch is tiled again
    res = run_snakemake(
        tmp_path,
        "-n",
        *tiles,
        "results/slide_patches/e.h5",
        "--configfile",
        str(_config(tmp_path, [*SLIDES, ("e", "tumor")], slides_per_job=3)),
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert _planned_rules(out) == ["tile_slides_1"] and "results/slide_patches/d.h5" in out
