import h5py
import numpy as np
import pytest

from histosynth.errors import InputError
from histosynth.patchfile import PatchBatch, PatchFile, PatchFileSpec, PatchWriter, check_patch_file


def batch(n, s=8, start=0, label=0):
    imgs = np.stack([np.full((s, s, 3), (start + i) % 256, np.uint8) for i in range(n)])
    return PatchBatch(
        imgs,
        np.stack([np.arange(start, start + n)] * 2, 1),
        np.full(n, label),
        [f"s{start}"] * n,
        ["c"] * n,
        np.full(n, 0.5, np.float32),
    )


SPEC = PatchFileSpec(
    8, ["a", "b"], dict(patch_size=8, patch_level=0, downsample=np.array([1.0, 1.0]), mpp=0.5, magnification=20.0)
)


def test_roundtrip_and_ordered_reads(tmp_path):
    path = tmp_path / "p.h5"
    with PatchWriter(path, SPEC) as w:
        w.append(batch(5))
        w.append(batch(3, start=5, label=1))
    assert check_patch_file(path) == 8
    with PatchFile(path) as pf:
        assert pf.label_names == ["a", "b"] and pf.labels.tolist() == [0] * 5 + [1] * 3
        assert [int(x[0, 0, 0]) for x in pf.read([6, 1, 6])] == [6, 1, 6]
        got = [rows.tolist() for rows, _ in pf.iter_batches(3)]
        assert got == [[0, 1, 2], [3, 4, 5], [6, 7]]
        assert pf.imgs.chunks == (1, 8, 8, 3) and pf.imgs.compression == "gzip"
        assert pf.slide_ids[5] == "s5" and pf.coords[7].tolist() == [7, 7]


def test_error_inside_writer_leaves_nothing(tmp_path):
    path = tmp_path / "p.h5"
    with pytest.raises(RuntimeError):
        with PatchWriter(path, SPEC) as w:
            w.append(batch(2))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_wrong_patch_shape_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        with PatchWriter(tmp_path / "p.h5", SPEC) as w:
            w.append(batch(2, s=16))


def test_contract_violations_are_named(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as h:
        h["imgs"] = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="missing datasets"):
        check_patch_file(path)
    with PatchWriter(path, PatchFileSpec(8, ["a"], {})) as w:
        w.append(batch(2, label=3))
    with pytest.raises(InputError, match="coords lacks attr 'mpp'.*labels outside"):
        check_patch_file(path)


@pytest.mark.parametrize("codec", ["installed", "zlib"])
def test_pixels_are_plain_gzip_chunks(tmp_path, monkeypatch, codec):
    """Chunks compressed outside HDF5 (ISA-L or the zlib fallback) decode through HDF5's own gzip
    filter and as plain zlib streams, so readers that know nothing of the writer read them."""
    import zlib

    from histosynth import patchfile

    if codec == "zlib":
        monkeypatch.setattr(patchfile, "_deflate_lib", zlib)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 40, (4, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "p.h5"
    with PatchWriter(path, SPEC, compression_level=9) as w:
        w.append(PatchBatch(imgs, np.zeros((4, 2)), np.zeros(4), ["s"] * 4, ["c"] * 4, np.ones(4)))
    with h5py.File(path, "r") as h:
        assert np.array_equal(h["imgs"][:], imgs) and h["imgs"].compression == "gzip"
        for i in range(4):
            mask, raw = h["imgs"].id.read_direct_chunk((i, 0, 0, 0))
            assert mask == 0 and zlib.decompress(raw) == imgs[i].tobytes()


def test_copied_rows_stand_alone_and_a_view_with_a_lost_source_is_refused(tmp_path):
    """``append_copy`` copies the stored chunks (a stored file and a virtual one alike), so the copy
    reads the same pixels after its source is gone; a virtual ``imgs`` whose source is gone is
    refused with the file to make again, not read as HDF5's zeros."""
    src, view, copy, copy_of_view = (tmp_path / n for n in ("src.h5", "view.h5", "copy.h5", "copy_of_view.h5"))
    with PatchWriter(src, SPEC) as w:
        w.append(batch(6, start=10))
    with PatchFile(src) as pf:
        rows = np.array([4, 1, 2])
        picked = PatchBatch(None, pf.coords[rows], pf.labels[rows], pf.slide_ids[rows], pf.case_ids[rows], pf.mpp[rows])
    with PatchWriter(view, SPEC) as w:  # rows 1-3 of src, referenced
        w.append_view(src, 1, PatchBatch(None, np.zeros((3, 2)), [0] * 3, ["s"] * 3, ["c"] * 3, np.ones(3)))
    with PatchWriter(copy, SPEC) as w:
        w.append_copy(src, rows, picked)
    with PatchWriter(copy_of_view, SPEC) as w:  # a virtual source is decoded, not chunk-copied
        w.append_copy(
            view, np.array([2, 0]), PatchBatch(None, np.zeros((2, 2)), [0, 0], ["s"] * 2, ["c"] * 2, np.ones(2))
        )
    src.unlink()
    with PatchFile(copy) as pf:
        assert [int(x[0, 0, 0]) for x in pf.read([0, 1, 2])] == [14, 11, 12] and not pf.imgs.is_virtual
    with PatchFile(copy_of_view) as pf:
        assert [int(x[0, 0, 0]) for x in pf.read([0, 1])] == [13, 11]
    with pytest.raises(InputError, match=r"view.h5: its pixels are kept in .*src.h5, which is missing"):
        PatchFile(view)
