import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histosynth.errors import InputError
from histosynth.importers import import_patches
from histosynth.patchfile import PatchFile, check_patch_file


def rand_imgs(n, s, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, s, s, 3), dtype=np.uint8)


def test_medmnist_all_parts_resized(tmp_path):
    npz = tmp_path / "mini.npz"
    np.savez(
        npz,
        train_images=rand_imgs(6, 28),
        train_labels=np.arange(6).reshape(6, 1) % 3,
        val_images=rand_imgs(2, 28),
        val_labels=np.array([[0], [1]]),
        test_images=rand_imgs(3, 28),
        test_labels=np.array([[2], [2], [1]]),
    )
    out = tmp_path / "mini.h5"
    n = import_patches(
        {"name": "mini", "format": "medmnist", "path": str(npz), "mpp": 4.0, "resample": False}, out, 56, progress=False
    )
    assert n == 11 == check_patch_file(out)
    with PatchFile(out) as pf:
        assert pf.patch_size == 56 and pf.label_names == ["class_0", "class_1", "class_2"]
        assert sorted(set(pf.slide_ids)) == ["mini:test", "mini:train", "mini:val"]
        assert len(set(pf.case_ids)) == 11  # one case per image
        assert np.allclose(pf.mpp, 2.0)  # 28 px at 4 um/px enlarged to 56 px
        assert (pf.coords == -1).all()


def test_medmnist_parts_and_limit_and_label_names(tmp_path):
    npz = tmp_path / "m.npz"
    np.savez(
        npz,
        train_images=rand_imgs(10, 28),
        train_labels=np.zeros((10, 1)),
        test_images=rand_imgs(4, 28),
        test_labels=np.ones((4, 1)),
    )
    out = tmp_path / "m.h5"
    n = import_patches(
        {
            "name": "m",
            "format": "medmnist",
            "path": str(npz),
            "parts": ["train"],
            "limit": 4,
            "label_names": ["normal", "tumour"],
        },
        out,
        28,
        progress=False,
    )
    assert n == 4
    with PatchFile(out) as pf:
        assert pf.label_names == ["normal", "tumour"]


def test_npz_without_images_names_the_file(tmp_path):
    npz = tmp_path / "labels_only.npz"
    np.savez(npz, train_labels=np.zeros((3, 1)))
    with pytest.raises(InputError, match="labels_only.npz holds no images.*train_labels"):
        import_patches({"name": "x", "format": "medmnist", "path": str(npz)}, tmp_path / "x.h5", 28, progress=False)
    assert not (tmp_path / "x.h5").exists()


def write_pcam(
    root, sizes=(("train", 6), ("valid", 4), ("test", 4)), meta=True, slides_per_part=2, shared_slides=False
):
    """PCam-style files; with ``meta``, each part's patches come from its own ``slides_per_part`` slides
    (or, ``shared_slides``, the same slides in every part, as a leaking split would)."""
    root.mkdir(parents=True, exist_ok=True)
    for part, n in sizes:
        stem = root / f"camelyonpatch_level_2_split_{part}"
        with h5py.File(f"{stem}_x.h5", "w") as h:
            h["x"] = rand_imgs(n, 96)
        with h5py.File(f"{stem}_y.h5", "w") as h:
            h["y"] = (np.arange(n) % 2).reshape(n, 1, 1, 1).astype(np.uint8)
        if meta:
            wsi = [f"{'' if shared_slides else part + '_'}slide_{i % slides_per_part}" for i in range(n)]
            pd.DataFrame({"coord_y": 0, "coord_x": 0, "tumor_patch": False, "wsi": wsi}).to_csv(
                f"{stem}_meta.csv", index=False
            )
    return root


def test_pcam_keeps_its_official_split(tmp_path):
    src = write_pcam(tmp_path / "pcam", sizes=(("train", 5), ("valid", 2), ("test", 2)), meta=False)
    out = tmp_path / "pcam.h5"
    assert (
        import_patches({"name": "pcam", "format": "pcam", "path": str(src), "parts": None}, out, 32, progress=False)
        == 9
    )
    with PatchFile(out) as pf:
        assert pf.label_names == ["no_tumor", "tumor"]
        # parts in PCAM order (train, valid, test); each keeps its published split
        assert pf.labels.tolist() == [0, 1, 0, 1, 0, 0, 1, 0, 1]
        assert pf.column("official_split").tolist() == ["train"] * 5 + ["val"] * 2 + ["test"] * 2


def test_incomplete_official_split_files(tmp_path):
    src = write_pcam(tmp_path / "pcam", sizes=(("train", 4), ("test", 2)))
    with pytest.raises(InputError, match=r"'pcam'.*incomplete official split.*\['valid'\]"):
        import_patches({"name": "pcam", "format": "pcam", "path": str(src)}, tmp_path / "o.h5", 32, progress=False)
    # naming the parts, or pooling them, is a choice the user makes explicitly
    assert (
        import_patches(
            {"name": "pcam", "format": "pcam", "path": str(src), "parts": ["train", "test"]},
            tmp_path / "o.h5",
            32,
            progress=False,
        )
        == 6
    )
    assert (
        import_patches(
            {"name": "pcam", "format": "pcam", "path": str(src), "split": "resplit"},
            tmp_path / "o.h5",
            32,
            progress=False,
        )
        == 6
    )
    (src / "camelyonpatch_level_2_split_test_meta.csv").unlink()
    with pytest.raises(InputError, match=r"resplit groups PCam patches by slide.*\['test'\]"):
        import_patches(
            {"name": "pcam", "format": "pcam", "path": str(src), "split": "resplit"},
            tmp_path / "o.h5",
            32,
            progress=False,
        )
    npz = tmp_path / "m.npz"
    np.savez(
        npz,
        train_images=rand_imgs(4, 28),
        train_labels=np.zeros((4, 1)),
        test_images=rand_imgs(2, 28),
        test_labels=np.zeros((2, 1)),
    )
    with pytest.raises(InputError, match=r"'m'.*incomplete official split.*\['val'\]"):
        import_patches({"name": "m", "format": "medmnist", "path": str(npz)}, tmp_path / "m.h5", 28, progress=False)


def test_pcam_missing_labels_file(tmp_path):
    with h5py.File(tmp_path / "a_test_x.h5", "w") as h:
        h["x"] = rand_imgs(2, 96)
    with pytest.raises(InputError, match="a_test_y.h5"):
        import_patches({"name": "p", "format": "pcam", "path": str(tmp_path)}, tmp_path / "o.h5", 32, progress=False)
    (tmp_path / "a_test_x.h5").rename(tmp_path / "a_test_y.h5")
    with pytest.raises(InputError, match="a_test_x.h5"):
        import_patches({"name": "p", "format": "pcam", "path": str(tmp_path)}, tmp_path / "o.h5", 32, progress=False)


def test_folder_of_class_dirs_and_csv(tmp_path):
    root = tmp_path / "tiles"
    for cls, n in (("stroma", 2), ("tumor", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rand_imgs(1, 40 + i, seed=i)[0]).save(root / cls / f"{cls}{i}.png")
    out = tmp_path / "f.h5"
    assert (
        import_patches(
            {"name": "f", "format": "folder", "path": str(root), "case_from": "none"}, out, 32, progress=False
        )
        == 5
    )
    with PatchFile(out) as pf:
        assert pf.label_names == ["stroma", "tumor"] and pf.labels.tolist() == [0, 0, 1, 1, 1]
    csv = root / "list.csv"
    csv.write_text("path,label,case_id\nstroma/stroma0.png,s,p1\ntumor/tumor2.png,t,p1\n")
    out2 = tmp_path / "c.h5"
    assert import_patches({"name": "c", "format": "folder", "path": str(csv)}, out2, 32, progress=False) == 2
    with PatchFile(out2) as pf:
        assert pf.case_ids.tolist() == ["p1", "p1"]
    csv.write_text("path,label\nmissing.png,s\n")
    with pytest.raises(InputError, match="missing.png"):
        import_patches({"name": "c", "format": "folder", "path": str(csv)}, out2, 32, progress=False)


def test_pathmnist_real_subset(shared_data, tmp_path):
    npz = shared_data / "patches" / "pathmnist" / "pathmnist_train_first1000_28.npz"
    out = tmp_path / "pathmnist.h5"
    assert (
        import_patches(
            {"name": "pathmnist", "format": "medmnist", "path": str(npz), "parts": ["train"]}, out, 28, progress=False
        )
        == 1000
    )
    with PatchFile(out) as pf:
        assert len(set(pf.labels.tolist())) == 9 and len(pf.label_names) == 9
        assert pf.label_names[8].startswith("TUM")  # names from labels.json beside the file


def test_medmnist_label_array_must_match_the_images(tmp_path):
    npz = tmp_path / "bad.npz"
    np.savez(npz, train_images=rand_imgs(4, 28), train_labels=np.arange(8).reshape(8, 1) % 2)
    with pytest.raises(
        InputError, match=r"'bad'.*bad.npz 'train_labels' has shape \(8, 1\) but 'train_images' holds 4"
    ):
        import_patches(
            {"name": "bad", "format": "medmnist", "path": str(npz), "parts": ["train"]},
            tmp_path / "o.h5",
            28,
            progress=False,
        )
    np.savez(npz, train_images=rand_imgs(4, 28), train_labels=np.zeros((3, 1)))
    with pytest.raises(InputError, match=r"'train_labels' has shape \(3, 1\) but 'train_images' holds 4"):
        import_patches(
            {"name": "bad", "format": "medmnist", "path": str(npz), "parts": ["train"]},
            tmp_path / "o.h5",
            28,
            progress=False,
        )


def test_medmnist_pixel_types(tmp_path):
    npz = tmp_path / "f.npz"
    np.savez(npz, train_images=np.random.default_rng(0).random((2, 28, 28, 3)), train_labels=np.zeros((2, 1)))
    with pytest.raises(InputError, match=r"'f'.*'train_images' holds float64 pixels"):
        import_patches(
            {"name": "f", "format": "medmnist", "path": str(npz), "parts": ["train"]},
            tmp_path / "o.h5",
            28,
            progress=False,
        )
    # 16-bit pixels are scaled by the dtype's range, not clipped at 255
    np.savez(npz, train_images=np.full((2, 28, 28), 32768, np.uint16), train_labels=np.zeros((2, 1)))
    import_patches(
        {"name": "f", "format": "medmnist", "path": str(npz), "parts": ["train"]}, tmp_path / "o.h5", 28, progress=False
    )
    with PatchFile(tmp_path / "o.h5") as pf:
        assert np.all(pf.read([0, 1]) == 128)


def test_sixteen_bit_files_are_scaled_not_saturated(tmp_path):
    root = tmp_path / "tiles" / "tumor"
    root.mkdir(parents=True)
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(root / "grey16.png")  # PIL writes mode I;16
    import tifffile

    tifffile.imwrite(root / "rgb16.tif", np.stack([ramp] * 3, -1))
    out = tmp_path / "o.h5"
    import_patches(
        {"name": "t", "format": "folder", "path": str(tmp_path / "tiles"), "case_from": "none"}, out, 64, progress=False
    )
    with PatchFile(out) as pf:
        for px in pf.read([0, 1]):
            assert (px == 255).mean() < 0.01  # saturated would be ~99 %
            assert abs(float(px.mean()) - 127.5) < 2


def test_limit_is_a_seeded_class_stratified_sample(tmp_path):
    npz = tmp_path / "m.npz"
    labels = np.repeat(np.arange(5), 20).reshape(100, 1)  # sorted by class: the first 10 would all be class 0
    np.savez(npz, train_images=rand_imgs(100, 8), train_labels=labels)

    def run(seed):
        out = tmp_path / f"m{seed}.h5"
        import_patches(
            {"name": "m", "format": "medmnist", "path": str(npz), "parts": ["train"], "limit": 10, "seed": seed},
            out,
            8,
            progress=False,
        )
        with PatchFile(out) as pf:
            return pf.labels.tolist(), pf.case_ids.tolist()

    labs, cases = run(0)
    assert sorted(labs) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert run(0) == (labs, cases) and run(1)[1] != cases


def make_tile(path, size=40, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rand_imgs(1, size, seed=seed)[0]).save(path)


def test_flat_folder_labels_and_cases_from_file_names(tmp_path, caplog):
    root = tmp_path / "flat"
    for i, (cls, case) in enumerate(
        [("TUM", "TCGA-AA-0001"), ("TUM", "TCGA-AA-0002"), ("STR", "TCGA-AA-0001"), ("STR", "TCGA-AA-0003")]
    ):
        make_tile(root / f"{cls}-{case}-01Z-{i}.tif", seed=i)
    (root / "notes.txt").write_text("not an image")
    out = tmp_path / "o.h5"
    ds = {"name": "flat", "format": "folder", "path": str(root), "label_from": "filename", "case_from": "filename"}
    with caplog.at_level("WARNING"):
        assert import_patches(ds, out, 32, progress=False) == 4
    assert "skipped 1 file(s): not an image (.txt)" in caplog.text
    with PatchFile(out) as pf:
        assert pf.label_names == ["STR", "TUM"]
        assert [pf.label_names[i] for i in pf.labels] == ["STR", "STR", "TUM", "TUM"]
        assert pf.case_ids.tolist() == ["TCGA-AA-0001", "TCGA-AA-0003", "TCGA-AA-0001", "TCGA-AA-0002"]
    # a file the case pattern captures nothing in: an error naming dataset and file, or a counted skip when asked
    make_tile(root / "TUM-nobarcode.tif")
    with pytest.raises(
        InputError, match=r"'flat'.*case_pattern .* captures nothing in 1 file\(s\), e.g. .*TUM-nobarcode.tif"
    ):
        import_patches(ds, out, 32, progress=False)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert import_patches({**ds, "skip_unmatched": True}, out, 32, progress=False) == 4
    assert "skipped 1 file(s): case_pattern" in caplog.text
    # a pattern that matches no file at all is an error even with skip_unmatched
    with pytest.raises(
        InputError, match=r"'flat'.*label_pattern 'XYZ-\(\\d\+\)' captures nothing in any of the 5 files"
    ):
        import_patches({**ds, "skip_unmatched": True, "label_pattern": r"XYZ-(\d+)"}, out, 32, progress=False)


def test_case_from_subfolder_and_csv(tmp_path):
    root = tmp_path / "tiles"
    for cls in ("stroma", "tumor"):
        for case in ("p1", "p2"):
            make_tile(root / cls / case / "a.png")
    make_tile(root / "stray.png")
    out = tmp_path / "o.h5"
    assert (
        import_patches(
            {"name": "t", "format": "folder", "path": str(root), "case_from": "subfolder"}, out, 32, progress=False
        )
        == 4
    )
    with PatchFile(out) as pf:
        assert pf.case_ids.tolist() == ["p1", "p2", "p1", "p2"] and pf.slide_ids.tolist() == pf.case_ids.tolist()
    csv = root / "list.csv"
    csv.write_text("path,diagnosis,case_id\nstroma/p1/a.png,s,P1\ntumor/p2/a.png,t,P2\n")
    ds = {"name": "c", "format": "folder", "path": str(csv)}
    with pytest.raises(InputError, match=r"list.csv lacks column\(s\) \['label'\]"):
        import_patches(ds, out, 32, progress=False)
    assert import_patches({**ds, "label_from": "subfolder"}, out, 32, progress=False) == 2
    with PatchFile(out) as pf:
        assert pf.label_names == ["stroma", "tumor"] and pf.case_ids.tolist() == ["P1", "P2"]


def test_classes_that_look_like_slides_warn(tmp_path, caplog):
    root = tmp_path / "tiles"
    for i in range(3):
        make_tile(root / f"TCGA-AB-000{i}" / "x.png", seed=i)
    with caplog.at_level("WARNING"):
        import_patches(
            {"name": "t", "format": "folder", "path": str(root), "case_from": "none"},
            tmp_path / "o.h5",
            32,
            progress=False,
        )
    assert "look like slide or case ids (TCGA barcodes" in caplog.text


def test_mpp_resamples_to_the_slide_field_of_view(tmp_path):
    img = np.zeros((100, 100, 3), np.uint8)
    img[18:82, 18:82] = 200  # the central 64 px = 32 um at 0.5 um/px = one 32 px patch at 1 um/px
    root = tmp_path / "tiles" / "tumor"
    root.mkdir(parents=True)
    Image.fromarray(img).save(root / "a.png")
    ds = {"name": "t", "format": "folder", "path": str(tmp_path / "tiles"), "case_from": "none", "mpp": 0.5}
    out = tmp_path / "o.h5"
    import_patches(ds, out, 32, target_mpp=1.0, progress=False)
    with PatchFile(out) as pf:
        assert np.allclose(pf.mpp, 1.0) and pf.coords_attrs["mpp"] == pytest.approx(1.0)
        assert pf.read([0]).min() > 150  # only the central field of view, not the black border
    with pytest.raises(InputError, match=r"'t'.*smaller than a slide patch's field of view"):
        import_patches(ds, out, 32, target_mpp=4.0, progress=False)
    with pytest.raises(InputError, match=r"'t'.*resample: true needs the source's mpp"):
        import_patches({**ds, "mpp": None, "resample": True}, out, 32, target_mpp=1.0, progress=False)


def test_folder_with_no_recognisable_labels_names_dataset_and_folder(tmp_path):
    """Images straight under the folder, no class sub-folders and no pattern: a clear stop, not one class."""
    root = tmp_path / "flat"
    for i in range(3):
        make_tile(root / f"tile_{i}.png", seed=i)
    ds = {"name": "mine", "format": "folder", "path": str(root)}
    with pytest.raises(
        InputError,
        match=r"'mine': no images found under .*flat with a recognisable label \(skipped: 3 not inside "
        r"a class sub-folder\); put each class's images in its own sub-folder",
    ):
        import_patches(ds, tmp_path / "o.h5", 32, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"'mine': no images found under .*empty with a recognisable label$"):
        import_patches({**ds, "path": str(tmp_path / "empty")}, tmp_path / "o.h5", 32, progress=False)
