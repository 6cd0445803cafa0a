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
    spec = PatchFileSpec(
        8, names, dict(patch_size=8, patch_level=0, downsample=np.array([1.0, 1.0]), mpp=1.0, magnification=10.0)
    )
    imgs = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(n)])
    with PatchWriter(path, spec) as w:
        w.append(
            PatchBatch(imgs, np.zeros((n, 2)), labels, ["s"] * n, [f"{case_prefix}{i}" for i in range(n)], np.ones(n))
        )


def test_split_files_merge_label_vocabularies(tmp_path):
    _write(tmp_path / "a.h5", ["x", "y"], [0, 1] * 10, "a")
    _write(tmp_path / "b.h5", ["y", "z"], [0, 1] * 10, "b")
    outs = {s: tmp_path / f"{s}.h5" for s in ("train", "val", "test")}
    man = split_patches(
        [tmp_path / "a.h5", tmp_path / "b.h5"],
        outs,
        tmp_path / "m.tsv",
        tmp_path / "s.tsv",
        0.25,
        0.25,
        0,
        batch_size=3,
    )
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


def _outs(tmp_path):
    return {s: tmp_path / f"{s}.h5" for s in ("train", "val", "test")}


def test_every_importer_keeps_slides_and_cases_in_one_split(tmp_path):
    from test_importers import make_tile, rand_imgs, write_pcam

    from histosynth.importers import import_patches

    npz = tmp_path / "m.npz"
    np.savez(
        npz,
        **{f"{p}_images": rand_imgs(n, 8, seed=n) for p, n in (("train", 12), ("val", 4), ("test", 4))},
        **{f"{p}_labels": (np.arange(n) % 2).reshape(n, 1) for p, n in (("train", 12), ("val", 4), ("test", 4))},
    )
    pcam_official = write_pcam(tmp_path / "pcam1")
    pcam_pooled = write_pcam(tmp_path / "pcam2", slides_per_part=4, shared_slides=True)  # slides span the parts
    for cls in ("stroma", "tumor"):
        for case in ("p1", "p2", "p3", "p4"):
            make_tile(tmp_path / "byfolder" / cls / case / "a.png")
    for i, case in enumerate(f"TCGA-AA-000{k}" for k in range(8)):
        make_tile(tmp_path / "flat" / f"{['STR', 'TUM'][i % 2]}-{case}-{i}.png", seed=i)
    (tmp_path / "byfolder" / "list.csv").write_text(
        "path,label,case_id\n"
        + "".join(f"{c}/{p}/a.png,{c},csv_{p}\n" for c in ("stroma", "tumor") for p in ("p1", "p2", "p3"))
    )
    datasets = [
        {"name": "mm_official", "format": "medmnist", "path": str(npz)},
        {"name": "mm_pooled", "format": "medmnist", "path": str(npz), "split": "resplit"},
        {"name": "pcam_official", "format": "pcam", "path": str(pcam_official)},
        {"name": "pcam_pooled", "format": "pcam", "path": str(pcam_pooled), "split": "resplit"},
        {"name": "folder", "format": "folder", "path": str(tmp_path / "byfolder"), "case_from": "subfolder"},
        {
            "name": "flat",
            "format": "folder",
            "path": str(tmp_path / "flat"),
            "label_from": "filename",
            "case_from": "filename",
        },
        {"name": "csv", "format": "folder", "path": str(tmp_path / "byfolder" / "list.csv")},
    ]
    files = []
    for ds in datasets:
        files.append(tmp_path / f"{ds['name']}.h5")
        import_patches(ds, files[-1], 8, progress=False)
    man = split_patches(files, _outs(tmp_path), tmp_path / "m.tsv", None, 0.25, 0.25, 0)
    assert set(man["split"]) == {"train", "val", "test"}
    for col in ("slide_id", "case_id"):
        spread = man.groupby(col)["split"].nunique()
        assert (spread == 1).all(), f"{col} in two splits: {spread[spread > 1].index.tolist()}"
    official = man[man["official_split"] != ""]
    assert set(official["source_file"].map(lambda p: p.split("/")[-1])) == {"mm_official.h5", "pcam_official.h5"}
    assert (official["split"] == official["official_split"]).all()
    # the pooled PCam slides are whole groups: 4 slides, each in one split
    assert man[man["slide_id"].str.startswith("pcam_pooled:")]["slide_id"].nunique() == 4


def test_an_official_split_that_shares_slides_is_refused(tmp_path):
    from test_importers import write_pcam

    from histosynth.importers import import_patches

    src = write_pcam(tmp_path / "pcam", shared_slides=True)
    import_patches({"name": "pcam", "format": "pcam", "path": str(src)}, tmp_path / "p.h5", 8, progress=False)
    with pytest.raises(
        InputError, match=r"case_id\(s\) appear in two splits, e.g. pcam:slide_0 in \['test', 'train', 'val'\].*resplit"
    ):
        split_patches([tmp_path / "p.h5"], _outs(tmp_path), tmp_path / "m.tsv", None, 0.2, 0.2, 0)


def test_class_without_training_patches_or_with_one_case_fails_and_keeps_old_results(tmp_path):
    from test_importers import rand_imgs

    from histosynth.importers import import_patches

    outs = _outs(tmp_path)
    for p in outs.values():
        p.write_text("previous result")
    npz = tmp_path / "m.npz"
    np.savez(
        npz,
        train_images=rand_imgs(4, 8),
        train_labels=np.array([0, 1, 0, 1]),
        val_images=rand_imgs(2, 8),
        val_labels=np.array([0, 1]),
        test_images=rand_imgs(2, 8),
        test_labels=np.array([2, 2]),
    )
    import_patches(
        {"name": "m", "format": "medmnist", "path": str(npz), "label_names": ["a", "b", "rare"]},
        tmp_path / "m.h5",
        8,
        progress=False,
    )
    with pytest.raises(InputError, match=r"class 'rare' has no training patches"):
        split_patches([tmp_path / "m.h5"], outs, tmp_path / "m.tsv", None, 0.2, 0.2, 0)
    _write(tmp_path / "a.h5", ["x", "y"], [0] * 10 + [1] * 10, "a")
    spec = PatchFileSpec(
        8, ["solo"], dict(patch_size=8, patch_level=0, downsample=np.array([1.0, 1.0]), mpp=1.0, magnification=10.0)
    )
    with PatchWriter(tmp_path / "b.h5", spec) as w:
        w.append(
            PatchBatch(
                np.zeros((3, 8, 8, 3), np.uint8), np.zeros((3, 2)), [0, 0, 0], ["s"] * 3, ["onlycase"] * 3, np.ones(3)
            )
        )
    with pytest.raises(InputError, match=r"class 'solo' comes from a single case_id \(onlycase\)"):
        split_patches([tmp_path / "a.h5", tmp_path / "b.h5"], outs, tmp_path / "m.tsv", None, 0.2, 0.2, 0)
    assert all(p.read_text() == "previous result" for p in outs.values())


def test_split_errors_name_the_users_fractions():
    with pytest.raises(InputError, match=r"split.val \(0.5\) \+ split.test \(0.5\) must be below 1"):
        assign_splits([0, 1] * 10, [f"g{i}" for i in range(20)], 0.5, 0.5, seed=0)
    with pytest.raises(
        InputError, match=r"only 1 group\(s\) left for val and train with split.val=0.4, split.test=0.4"
    ):
        assign_splits([0, 1, 0], ["a", "b", "c"], 0.4, 0.4, seed=0)


def test_a_split_mixing_pixel_sizes_warns_with_counts(tmp_path, caplog):
    _write(tmp_path / "a.h5", ["x", "y"], [0, 1] * 10, "a")
    spec = PatchFileSpec(
        8, ["x", "y"], dict(patch_size=8, patch_level=0, downsample=np.array([1.0, 1.0]), mpp=0.5, magnification=20.0)
    )
    with PatchWriter(tmp_path / "b.h5", spec) as w:
        w.append(
            PatchBatch(
                np.zeros((20, 8, 8, 3), np.uint8),
                np.zeros((20, 2)),
                [0, 1] * 10,
                ["s"] * 20,
                [f"b{i}" for i in range(20)],
                np.full(20, 0.5),
            )
        )
        w.append(
            PatchBatch(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 2)), [0], ["s"], ["b0"], [np.nan])
        )  # unknown um/px
    with caplog.at_level("WARNING"):
        man = split_patches(
            [tmp_path / "a.h5", tmp_path / "b.h5"], _outs(tmp_path), tmp_path / "m.tsv", None, 0.25, 0.25, 0
        )
    train = man[man.split == "train"]
    n_a = train["source_file"].str.endswith("a.h5").sum()
    n_b = train["source_file"].str.endswith("b.h5").sum() - int((train["case_id"] == "b0").sum() == 2)
    line = next(x for x in caplog.text.splitlines() if "split train mixes pixel sizes" in x)
    assert f"1.0: {n_a}" in line and f"0.5: {n_b}" in line
    b0_split = man.loc[man["case_id"] == "b0", "split"].iloc[0]
    assert "unknown: 1" in next(x for x in caplog.text.splitlines() if f"split {b0_split} mixes" in x)


def _slide_file(path, case, label, n, first, official=None):
    """n patches whose pixels all equal first + row (mod 256), one case, one label."""
    spec = PatchFileSpec(
        8,
        ["x", "y"],
        dict(patch_size=8, patch_level=0, downsample=np.array([1.0, 1.0]), mpp=1.0, magnification=10.0),
        extra={"official_split": "str"} if official else {},
    )
    imgs = np.stack([np.full((8, 8, 3), (first + i) % 256, np.uint8) for i in range(n)])
    with PatchWriter(path, spec) as w:
        w.append(
            PatchBatch(
                imgs,
                np.zeros((n, 2)),
                [label] * n,
                [case] * n,
                [case] * n,
                np.ones(n),
                extra={"official_split": official} if official else {},
            )
        )


def test_split_references_whole_slide_files_and_copies_only_short_runs(tmp_path):
    import h5py

    tiles, out = tmp_path / "results" / "tiles", tmp_path / "results" / "patches"
    tiles.mkdir(parents=True)
    out.mkdir()
    files = [tiles / f"s{i}.h5" for i in range(8)]
    for i, f in enumerate(files):
        _slide_file(f, f"case{i}", i % 2, 70, first=i * 70)
    # an imported set whose official split alternates per patch: runs of one row, so copied
    official = ["train", "val", "test"] * 10
    _slide_file(tiles / "imported.h5", "imported", 0, 30, first=7, official=official)
    files.append(tiles / "imported.h5")
    outs = {s: out / f"{s}.h5" for s in ("train", "val", "test")}
    # the imported set shares its case across splits by design; give each row its own case for the check
    with h5py.File(tiles / "imported.h5", "r+") as h:
        h["case_ids"][...] = np.array([f"imp{i}" for i in range(30)], dtype=object)
    man = split_patches(files, outs, out / "manifest.tsv", None, 0.25, 0.25, 0, batch_size=32)
    assert sum(check_patch_file(p) for p in outs.values()) == 8 * 70 + 30

    def expected(split):
        rows = man[man.split == split].sort_values("split_index")
        first = {str(f): (i * 70 if i < 8 else 7) for i, f in enumerate(files)}
        return np.array([(first[r.source_file] + r.source_index) % 256 for r in rows.itertuples()])

    with h5py.File(outs["train"], "r") as h:
        assert h["imgs"].is_virtual
        names = {m.file_name for m in h["imgs"].virtual_sources()}
        assert {n for n in names if n != "."} <= {f"../tiles/{f.name}" for f in files}
        assert "." in names  # the interleaved imported rows were copied into the split file itself
        assert h["copied_imgs"].shape[0] == 10
    # pixels identical to the tile rows, also after moving results/ as a whole
    moved = tmp_path / "elsewhere"
    (tmp_path / "results").rename(moved)
    for split in ("train", "val", "test"):
        with PatchFile(moved / "patches" / f"{split}.h5") as pf:
            got = pf.read(np.arange(len(pf)))[:, 0, 0, 0]
            assert np.array_equal(got, expected(split)), split
            assert np.array_equal(np.asarray(pf.read([5, 1]))[:, 0, 0, 0], expected(split)[[5, 1]])
    # the split files hold no referenced pixels: far smaller than the tiles they index
    assert (moved / "patches" / "train.h5").stat().st_size < sum(
        f.stat().st_size for f in (moved / "tiles").glob("s*.h5")
    ) / 4
