"""Tiling the real Aperio slide in ../shared/data (skipped where the data is absent)."""

import pytest

from histosynth.config import default_config
from histosynth.errors import InputError
from histosynth.patchfile import PatchFile, check_patch_file
from histosynth.tiling import TilingParams, tile_slide
from histosynth.wsi import open_slide

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def svs(shared_data):
    return shared_data / "wsi" / "cmu-1-small-region.svs"


@pytest.fixture(scope="module")
def tiled(svs, tmp_path_factory):
    out = {}
    for mpp in (0.5, 1.0):
        d = tmp_path_factory.mktemp(f"mpp{mpp}")
        params = TilingParams.from_config(default_config(tiling={"patch_size": 128, "mpp": mpp})["tiling"])
        res = tile_slide(svs, "CMU-1-small", "CMU-1", d / "p.h5", d / "t.png", params, threads=2, progress=False)
        out[mpp] = (res, d / "p.h5")
    return out


@pytest.mark.parametrize("mpp", [0.5, 1.0])
def test_real_svs_patch_count_matches_tissue_area(tiled, mpp):
    res, path = tiled[mpp]
    assert res.base_mpp == pytest.approx(0.499) and res.mpp_source == "metadata"
    assert check_patch_file(path) == res.n_patches > 0
    patch_mm2 = res.n_patches * (128 * mpp) ** 2 / 1e6
    # with min_tissue_fraction 0.5, kept patches cover roughly the tissue area
    assert 0.6 * res.tissue_area_mm2 < patch_mm2 < 1.6 * res.tissue_area_mm2


def test_real_svs_resolutions_are_consistent(tiled):
    (r05, _), (r10, _) = tiled[0.5], tiled[1.0]
    assert r05.tissue_area_mm2 == pytest.approx(r10.tissue_area_mm2)
    # four times as many patches at twice the resolution, up to edge effects
    assert 2.5 < r05.n_patches / r10.n_patches < 5.5
    # 1.0 um/px on a 0.499 um/px single-level scan: read ~256 px and shrink
    assert r10.plan.level == 0 and r10.plan.read_size == 257


@pytest.mark.parametrize("mpp", [0.5, 1.0])
def test_real_svs_patches_are_not_blank(tiled, mpp):
    _, path = tiled[mpp]
    with PatchFile(path) as pf:
        for _, imgs in pf.iter_batches(64):
            flat = imgs.reshape(len(imgs), -1, 3).astype(float)
            assert (flat.mean(axis=(1, 2)) < 225).all()  # not glass
            assert (flat.std(axis=1).mean(axis=1) > 10).all()  # texture, not a flat colour


def test_truncated_real_svs_fails_naming_the_slide(svs, tmp_path):
    from histosynth.errors import InputError

    bad = tmp_path / "truncated.svs"
    bad.write_bytes(svs.read_bytes()[: svs.stat().st_size // 3])
    params = TilingParams.from_config(default_config(tiling={"patch_size": 128, "mpp": 1.0})["tiling"])
    with pytest.raises(InputError, match="slide 'CMU-1-truncated'"):
        tile_slide(bad, "CMU-1-truncated", "c", tmp_path / "p.h5", tmp_path / "t.png", params, progress=False)
    assert not (tmp_path / "p.h5").exists()


@pytest.mark.parametrize("fraction", [0.66, 0.8, 0.9, 0.99])
def test_truncated_real_svs_is_called_truncated_not_missing_mpp(shared_data, tmp_path, fraction, cfg):
    svs = shared_data / "wsi" / "cmu-1-small-region.svs"
    if not svs.exists():
        pytest.skip(f"{svs} not found")
    data = svs.read_bytes()
    bad = tmp_path / "CMU-1-cut.svs"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InputError, match=rf"slide 'cmu' looks truncated or corrupt: {bad}") as info:
        tile_slide(
            bad,
            "cmu",
            "c",
            tmp_path / "p.h5",
            tmp_path / "p.png",
            TilingParams.from_config(cfg["tiling"]),
            progress=False,
        )
    assert "MPP" not in str(info.value)
    assert open_slide(svs, "whole").level_count >= 1  # the intact file still opens
