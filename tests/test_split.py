import numpy as np
import pandas as pd
import pytest

from histosynth.errors import InputError
from histosynth.patchfile import PatchBatch, PatchFile, PatchFileSpec, PatchWriter, check_patch_file
from histosynth.split import assign_splits, split_patches


def test_groups_never_straddle_splits_and_seed_is_deterministic():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"case{i}" for i in range(40)], rng.integers(1, 20, 40))
    labels = np.array([int(g[4:]) % 3 for g in groups])
    a = assign_splits(labels, groups, 0.2, 0.2, seed=1)
    df = pd.DataFrame({"g": groups, "s": a})
    assert (df.groupby("g")["s"].nunique() == 1).all()
    assert np.array_equal(a, assign_splits(labels, groups, 0.2, 0.2, seed=1))
    assert not np.array_equal(a, assign_splits(labels, groups, 0.2, 0.2, seed=2))
    per_split = df.drop_duplicates("g")["s"].value_counts()
    assert per_split["test"] == 8 and per_split["val"] == 8 and per_split["train"] == 24


def test_stratified_by_label():
    groups = np.array([f"p{i}" for i in range(100)])
    labels = np.array([0] * 80 + [1] * 20)
    s = assign_splits(labels, groups, 0.2, 0.2, seed=0)
    for split in ("train", "val", "test"):
        assert labels[s == split].mean() == pytest.approx(0.2, abs=0.02)


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(InputError, match="split.test"):
        assign_splits([0, 1], ["a", "a"], 0.2, 0.2, seed=0)
    assert set(assign_splits([0, 1], ["a", "a"], 0.0, 0.0, seed=0)) == {"train"}


def _write(path, names, labels, case_prefix):
    n = len(labels)
    spec = PatchFileSpec(8, names, dict(patch_size=8, patch_level=0, downsample=np.array([1.0, 1.0]), mpp=1.0, magnification=10.0))
    imgs = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(n)])
    with PatchWriter(path, spec) as w:
        w.append(PatchBatch(imgs, np.zeros((n, 2)), labels, ["s"] * n, [f"{case_prefix}{i}" for i in range(n)], np.ones(n)))


def test_split_files_merge_label_vocabularies(tmp_path):
    _write(tmp_path / "a.h5", ["x", "y"], [0, 1] * 10, "a")
    _write(tmp_path / "b.h5", ["y", "z"], [0, 1] * 10, "b")
    outs = {s: tmp_path / f"{s}.h5" for s in ("train", "val", "test")}
    man = split_patches([tmp_path / "a.h5", tmp_path / "b.h5"], outs, tmp_path / "m.tsv", tmp_path / "s.tsv", 0.25, 0.25, 0, batch_size=3)
    assert sum(check_patch_file(p) for p in outs.values()) == 40
    with PatchFile(outs["train"]) as pf:
        assert pf.label_names == ["x", "y", "z"]
        # every patch keeps its class name through the remapping, and its pixels
        for split_idx, row in man[man.split == "train"].set_index("split_index").iterrows():
            assert pf.label_names[pf.labels[split_idx]] == row["label_name"]
            assert pf.read([split_idx])[0, 0, 0, 0] == row["source_index"]
    assert pd.read_csv(tmp_path / "s.tsv", sep="\t", index_col=0).to_numpy().sum() == 40


def test_mixed_patch_sizes_are_refused(tmp_path):
    _write(tmp_path / "a.h5", ["x"], [0, 0], "a")
    spec = PatchFileSpec(16, ["x"], {})
    with PatchWriter(tmp_path / "b.h5", spec):
        pass
    outs = {s: tmp_path / f"{s}.h5" for s in ("train", "val", "test")}
    with pytest.raises(InputError, match="different patch sizes"):
        split_patches([tmp_path / "a.h5", tmp_path / "b.h5"], outs, tmp_path / "m.tsv", None, 0, 0, 0)
