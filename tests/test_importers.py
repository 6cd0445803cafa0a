import h5py
import numpy as np
import pytest
from PIL import Image

from histosynth.errors import InputError
from histosynth.importers import import_patches
from histosynth.patchfile import PatchFile, check_patch_file


def rand_imgs(n, s, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, s, s, 3), dtype=np.uint8)


def test_medmnist_all_parts_resized(tmp_path):
    npz = tmp_path / "mini.npz"
    np.savez(npz, train_images=rand_imgs(6, 28), train_labels=np.arange(6).reshape(6, 1) % 3,
             val_images=rand_imgs(2, 28), val_labels=np.array([[0], [1]]), test_images=rand_imgs(3, 28),
             test_labels=np.array([[2], [2], [1]]))
    out = tmp_path / "mini.h5"
    n = import_patches({"name": "mini", "format": "medmnist", "path": str(npz), "mpp": 4.0}, out, 56, progress=False)
    assert n == 11 == check_patch_file(out)
    with PatchFile(out) as pf:
        assert pf.patch_size == 56 and pf.label_names == ["class_0", "class_1", "class_2"]
        assert sorted(set(pf.slide_ids)) == ["mini:test", "mini:train", "mini:val"]
        assert len(set(pf.case_ids)) == 11  # one case per image
        assert np.allclose(pf.mpp, 2.0)  # 28 px at 4 um/px enlarged to 56 px
        assert (pf.coords == -1).all()


def test_medmnist_parts_and_limit_and_label_names(tmp_path):
    npz = tmp_path / "m.npz"
    np.savez(npz, train_images=rand_imgs(10, 28), train_labels=np.zeros((10, 1)), test_images=rand_imgs(4, 28), test_labels=np.ones((4, 1)))
    out = tmp_path / "m.h5"
    n = import_patches({"name": "m", "format": "medmnist", "path": str(npz), "parts": ["train"], "limit": 4,
                        "label_names": ["normal", "tumour"]}, out, 28, progress=False)
    assert n == 4
    with PatchFile(out) as pf:
        assert pf.label_names == ["normal", "tumour"]


def test_npz_without_images_names_the_file(tmp_path):
    npz = tmp_path / "labels_only.npz"
    np.savez(npz, train_labels=np.zeros((3, 1)))
    with pytest.raises(InputError, match="labels_only.npz holds no images.*train_labels"):
        import_patches({"name": "x", "format": "medmnist", "path": str(npz)}, tmp_path / "x.h5", 28, progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_pcam_pairs(tmp_path):
    for part, n in (("train", 5), ("valid", 2)):
        with h5py.File(tmp_path / f"camelyonpatch_level_2_split_{part}_x.h5", "w") as h:
            h["x"] = rand_imgs(n, 96)
        with h5py.File(tmp_path / f"camelyonpatch_level_2_split_{part}_y.h5", "w") as h:
            h["y"] = (np.arange(n) % 2).reshape(n, 1, 1, 1).astype(np.uint8)
    out = tmp_path / "pcam.h5"
    assert import_patches({"name": "pcam", "format": "pcam", "path": str(tmp_path), "parts": None}, out, 32, progress=False) == 7
    with PatchFile(out) as pf:
        assert pf.label_names == ["no_tumor", "tumor"] and pf.labels.tolist() == [0, 1, 0, 1, 0, 0, 1]


def test_pcam_missing_labels_file(tmp_path):
    with h5py.File(tmp_path / "a_test_x.h5", "w") as h:
        h["x"] = rand_imgs(2, 96)
    with pytest.raises(InputError, match="a_test_y.h5"):
        import_patches({"name": "p", "format": "pcam", "path": str(tmp_path)}, tmp_path / "o.h5", 32, progress=False)


def test_folder_of_class_dirs_and_csv(tmp_path):
    root = tmp_path / "tiles"
    for cls, n in (("stroma", 2), ("tumor", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rand_imgs(1, 40 + i, seed=i)[0]).save(root / cls / f"{cls}{i}.png")
    out = tmp_path / "f.h5"
    assert import_patches({"name": "f", "format": "folder", "path": str(root)}, out, 32, progress=False) == 5
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
    assert import_patches({"name": "pathmnist", "format": "medmnist", "path": str(npz)}, out, 28, progress=False) == 1000
    with PatchFile(out) as pf:
        assert len(set(pf.labels.tolist())) == 9 and len(pf.label_names) == 9
        assert pf.label_names[8].startswith("TUM")  # names from labels.json beside the file
