"""The papers' details as options: Osorio et al.'s outlier removal and UMAP, PathLDM's flips, crops,
TIL-aware prompt dropout and 154-token text encoding."""

import numpy as np
import pandas as pd
import pytest

from histosynth.config import default_config
from histosynth.errors import InputError
from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter


def tissue_like(rng, n, size=32):
    """Pink, textured patches with many small bright regions: no outlier criterion fires."""
    base = np.array([200, 120, 170], np.float64)
    noise = rng.normal(0, 40, (n, size, size, 1))
    return np.clip(base + noise * np.array([1.0, 1.2, 0.8]), 0, 255).astype(np.uint8)


def write_patches(path, imgs, labels):
    n = len(imgs)
    with PatchWriter(path, PatchFileSpec(imgs.shape[1], ["a", "b"], {})) as w:
        w.append(PatchBatch(imgs, np.zeros((n, 2)), np.asarray(labels), ["s"] * n, ["c"] * n, np.ones(n)))
    return path


def test_outlier_criteria_flag_dark_blank_and_blurred_patches():
    from histosynth.morphology import outlier_features, outlier_mask

    rng = np.random.default_rng(0)
    good = tissue_like(rng, 3)
    dark = (good // 4).astype(np.uint8)  # mean V far below 70
    blank = np.full((1, 32, 32, 3), 235, np.uint8)  # white background: no saturation, no texture
    feats = outlier_features(np.concatenate([good, dark[:1], blank]))
    cfg = default_config()["morphology"]["outliers"]
    mask, counts = outlier_mask(feats, cfg)
    assert mask.tolist() == [False, False, False, True, True]
    assert counts["min_mean_v"] == 1 and counts["min_mean_s"] == 1 and counts["min_laplacian_var"] >= 1
    # a flat patch has a single contour (or none), a textured one many
    assert feats["n_contour"].iloc[4] == 1 and (feats["n_contour"].iloc[:3] >= cfg["min_contours"]).all()


def test_outliers_are_left_out_of_the_clustering_fit_and_marked(tmp_path):
    from histosynth.morphology import cluster_morphology

    rng = np.random.default_rng(1)
    imgs = np.concatenate([tissue_like(rng, 8), np.full((2, 32, 32, 3), 235, np.uint8)])
    labels = np.array([0, 1] * 5)
    train = write_patches(tmp_path / "train.h5", imgs, labels)
    # the two blank patches sit far away in embedding space: fitted on, they would take a cluster of their own
    emb = np.concatenate([rng.normal(0, 1, (8, 4)), np.full((2, 4), 50.0)])
    cfg = {**default_config()["morphology"], "k": 2, "sweep": [2], "examples_per_cluster": 2}
    out = {
        k: tmp_path / f"{k}.{'png' if k in ('sweep', 'examples') else 'tsv'}"
        for k in ("assignments", "centroids", "sizes", "sweep", "examples")
    }
    plain = cluster_morphology(emb, {"train": emb}, {"train": labels}, cfg, out, train)
    assert set(plain.loc[[8, 9], "cluster"]) != set(plain.loc[:7, "cluster"]) and not plain["outlier"].any()
    cfg["outliers"] = {**cfg["outliers"], "activate": True}
    df = cluster_morphology(emb, {"train": emb}, {"train": labels}, cfg, out, train)
    assert df["outlier"].tolist() == [False] * 8 + [True] * 2
    assert df.loc[:7, "cluster"].nunique() == 2  # both clusters split the real tissue
    assert len(df) == 10  # every patch keeps a cluster (and so a prompt)
    cfg["outliers"] = {**cfg["outliers"], "min_mean_v": 256}
    with pytest.raises(InputError, match="morphology.outliers"):
        cluster_morphology(emb, {"train": emb}, {"train": labels}, cfg, out, train)


# ----- PathLDM: flips, crops, TIL-aware prompt dropout, 154-token prompts, on the tiny model --------------------


@pytest.fixture(scope="module")
def pathldm(tmp_path_factory):
    """48 px patches with report-style prompts and TIL levels, a tiny base model, and a latent cache with
    vertical flips, 32 px crops and two-chunk prompts."""
    from histosynth.diffusion.latents import cache_latents
    from histosynth.models.base_model import prepare_base_model
    from histosynth.text.prompts import build_prompts

    d = tmp_path_factory.mktemp("pathldm")
    rng = np.random.default_rng(0)
    n = 8
    path = d / "train.h5"
    spec = PatchFileSpec(48, ["a", "b"], coords_attrs={"mpp": 1.0})
    with PatchWriter(path, spec) as w:
        w.append(
            PatchBatch(
                tissue_like(rng, n, 48),
                np.stack([np.arange(n) * 48, np.zeros(n)], 1),
                np.array([0, 1] * 4),
                ["s"] * n,
                ["c1", "c2"] * 4,
                np.ones(n),
            )
        )
    summaries, scores = d / "summaries.tsv", d / "scores.tsv"
    pd.DataFrame(
        {"case_id": ["c1", "c2"], "summary": ["invasive ductal carcinoma; grade 3", "lobular carcinoma"]}
    ).to_csv(summaries, sep="\t", index=False)
    til = [0.1, 0.9, 0.3, 0.6, 0.0, 0.2, 0.8, 0.4]  # levels 0 1 0 1 0 0 1 0
    # joined to the patches on slide and level-0 corner (histosynth.scores)
    pd.DataFrame({"slide_id": ["s"] * n, "x": np.arange(n) * 48, "y": [0] * n, "tumor": [0.7] * n, "til": til}).to_csv(
        scores, sep="\t", index=False
    )
    cfg = {**default_config()["prompts"], "patch_scores": str(scores)}
    build_prompts(
        "report",
        path,
        cfg,
        lambda s: len(s.split()) + 2,
        154,
        inputs={"summaries": summaries},
        out_tsv=d / "prompts.tsv",
    )
    base = prepare_base_model("tiny", d / "base")
    cache_latents(
        path,
        d / "prompts.tsv",
        base,
        d / "latents.h5",
        32,
        True,
        progress=False,
        vertical_flip=True,
        crop=32,
        text_chunks=2,
    )
    return {
        "dir": d,
        "train": path,
        "base": base,
        "prompts": d / "prompts.tsv",
        "latents": d / "latents.h5",
        "til_level": np.array([0, 1, 0, 1, 0, 0, 1, 0]),
    }


def pathldm_train_cfg(**kw):
    return default_config(
        train={
            "max_steps": 2,
            "batch_size": 4,
            "checkpoint_every": 100,
            "validation_every": 100,
            "validation_images_per_class": 1,
            "vertical_flip": True,
            "crop": 32,
            "text_chunks": 2,
            "prompt_dropout": 1.0,
            "prompt_dropout_low_til_only": True,
            **kw,
        }
    )["train"]


@pytest.mark.slow  # the tiny PathLDM set-up trains and samples
def test_prompts_carry_til_levels(pathldm):
    df = pd.read_csv(pathldm["prompts"], sep="\t")
    assert df["til_level"].tolist() == pathldm["til_level"].tolist()


@pytest.mark.slow  # the tiny PathLDM set-up trains and samples
def test_cache_holds_every_flip_and_whole_patches_for_cropping(pathldm):
    import h5py

    from histosynth.diffusion.latents import LatentCache

    with h5py.File(pathldm["latents"], "r") as h:
        views = [h[f"latent_mean{s}"][0] for s in ("", "_flip", "_vflip", "_hvflip")]
        assert views[0].shape == (4, 12, 12)  # the whole 48 px patch, cropped to 32 px (8 latent px) per step
        assert all(not np.allclose(views[0], v) for v in views[1:])
        assert h["prompt_embeds"].shape[1] == 154 and h.attrs["resolution"] == 32 and h.attrs["latent_crop"] == 8
    with LatentCache(pathldm["latents"]) as cache:
        assert (
            cache.views == ["", "_flip", "_vflip", "_hvflip"]
            and cache.til_level.tolist() == pathldm["til_level"].tolist()
        )


@pytest.mark.slow  # the tiny PathLDM set-up trains and samples
def test_flip_and_crop_settings_key_the_cache(pathldm, tmp_path):
    from histosynth.diffusion.latents import LatentCache, cache_latents

    p = pathldm
    cache_latents(
        p["train"], p["prompts"], p["base"], tmp_path / "h.h5", 32, True, progress=False, crop=32, text_chunks=2
    )
    with LatentCache(p["latents"]) as a, LatentCache(tmp_path / "h.h5") as b:
        assert a.fingerprint != b.fingerprint and b.views == ["", "_flip"]
    with pytest.raises(InputError, match="train.crop 40 and train.resolution 32"):
        cache_latents(p["train"], p["prompts"], p["base"], tmp_path / "x.h5", 32, True, progress=False, crop=40)


@pytest.mark.slow  # the tiny PathLDM set-up trains and samples
def test_batches_use_every_flip_random_crops_and_drop_only_low_til_prompts(pathldm):
    from histosynth.diffusion.latents import LatentCache
    from histosynth.diffusion.train import draw_batch

    cfg = pathldm_train_cfg()
    with LatentCache(pathldm["latents"]) as cache:
        seen_views, reads = set(), []
        original = cache.read

        def spy(idx, view):
            seen_views.update(np.asarray(view).tolist())
            mean, std = original(idx, view)
            reads.append((idx, mean))
            return mean, std

        cache.read = spy
        for step in range(12):
            latents, noise, t, rows = draw_batch(cache, cfg, step, 1000)
            assert latents.shape == (4, 4, 8, 8)
            idx = reads[-1][0]
            low = pathldm["til_level"][idx] == 0
            # prompt_dropout 1.0: every low-TIL patch gets the empty prompt, no high-TIL patch does
            assert (rows.numpy()[low] == cache.uncond).all() and (
                rows.numpy()[~low] == cache.prompt_index[idx][~low]
            ).all()
        assert seen_views == {0, 1, 2, 3}
        # the crop moves: the same patch's latent differs between steps (beyond the posterior noise, std ~ 0)
        cfg0 = {**cfg, "prompt_dropout": 0.0}
        a = [draw_batch(cache, {**cfg0, "seed": s}, 0, 1000)[0] for s in range(6)]
        assert len({tuple(np.round(x[0, 0, 0, :3].numpy(), 3)) for x in a}) > 1
        plain = {**cfg, "prompt_dropout_low_til_only": False}
        assert (draw_batch(cache, plain, 0, 1000)[3].numpy() == cache.uncond).all()  # dropout 1.0 drops every prompt


@pytest.mark.slow  # the tiny PathLDM set-up trains and samples
def test_two_chunk_encoding_reads_154_tokens_and_matches_one_chunk_on_short_prompts(pathldm):
    import torch
    from transformers import AutoTokenizer, CLIPTextModel

    from histosynth.diffusion.text_encoding import encode, tokenize

    tok = AutoTokenizer.from_pretrained(pathldm["base"], subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(pathldm["base"], subfolder="text_encoder").eval()
    short = ["high tumor; low til; invasive ductal carcinoma"]
    with torch.inference_mode():
        one = encode(te, tokenize(tok, short, 1), tok.eos_token_id)
        two = encode(te, tokenize(tok, short, 2), tok.eos_token_id)
        n_real = int(tokenize(tok, short, 1).ne(tok.eos_token_id).sum()) + 1  # BOS .. first EOS
        assert two.shape[1] == 154 and one.shape[1] == 77
        # causal: up to the EOS the two-chunk states are CLIP's own
        assert torch.allclose(one[:, :n_real], two[:, :n_real], atol=1e-5)
        long = " ".join(["carcinoma"] * 90)
        a, b = (encode(te, tokenize(tok, [long + tail], 2), tok.eos_token_id) for tail in (" lobular", " ductal"))
        a1, b1 = (encode(te, tokenize(tok, [long + tail], 1), tok.eos_token_id) for tail in (" lobular", " ductal"))
        assert not torch.allclose(a, b) and torch.allclose(a1, b1)  # words past token 77 count only with two chunks


@pytest.mark.slow  # the tiny PathLDM set-up trains and samples
def test_training_and_sampling_encode_prompts_alike(pathldm, tmp_path):
    from histosynth.diffusion.sample import generate, load_pipeline, synthetic_spec
    from histosynth.diffusion.train import fine_tune

    d = tmp_path
    cfg = pathldm_train_cfg(validation_every=2)
    fine_tune(
        pathldm["latents"],
        pathldm["base"],
        d / "model",
        d / "loss.tsv",
        d / "loss.png",
        d / "val",
        d / "ckpt",
        cfg,
        progress=False,
    )
    pipe = load_pipeline(pathldm["base"], d / "model", "ddim", "cpu")
    assert pipe.text_chunks == 2
    scfg = {**default_config()["sampling"], "steps": 2}
    img = generate(pipe, ["high tumor; high til; lobular carcinoma"], [0], scfg, 32)
    assert img.shape == (1, 32, 32, 3)
    # a crop keeps the patches' scale: the synthetic images carry the real µm/px
    assert synthetic_spec(pathldm["train"], "x", 32, scfg, d / "model").coords_attrs["mpp"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="rerun cache_latents"):
        fine_tune(
            pathldm["latents"],
            pathldm["base"],
            d / "m2",
            d / "l2.tsv",
            d / "l2.png",
            d / "v2",
            d / "c2",
            pathldm_train_cfg(text_chunks=1),
            progress=False,
        )


@pytest.mark.slow  # the tiny PathLDM set-up trains and samples
def test_til_aware_dropout_needs_til_levels(pathldm, tmp_path):
    from histosynth.diffusion.latents import cache_latents
    from histosynth.diffusion.train import fine_tune

    p = pd.read_csv(pathldm["prompts"], sep="\t").drop(columns="til_level")
    p.to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    cache_latents(
        pathldm["train"],
        tmp_path / "p.tsv",
        pathldm["base"],
        tmp_path / "l.h5",
        32,
        True,
        progress=False,
        vertical_flip=True,
        crop=32,
        text_chunks=2,
    )
    with pytest.raises(InputError, match="prompt_dropout_low_til_only needs per-patch TIL levels"):
        fine_tune(
            tmp_path / "l.h5",
            pathldm["base"],
            tmp_path / "m",
            tmp_path / "l.tsv",
            tmp_path / "l.png",
            tmp_path / "v",
            tmp_path / "c",
            pathldm_train_cfg(),
            progress=False,
        )


def test_coverage_plot_adds_a_umap_row_fitted_on_the_real_features(tmp_path, monkeypatch):
    from PIL import Image
    from sklearn.decomposition import PCA

    import histosynth.plots as ev

    # umap-learn's first fit compiles numba code (~30 s of CPU); a stand-in projection keeps this test fast,
    # and records what it was fitted on
    fitted = []

    def stand_in(real, seed):
        fitted.append(real)
        return PCA(n_components=2, random_state=seed).fit(real[:, ::-1])

    monkeypatch.setattr(ev, "umap_projection", stand_in)
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(30, 6)), rng.normal(size=(20, 6))
    ev.coverage_plot(real, {"raw": fake, "filtered": fake[:5]}, tmp_path / "pca.png", "e")
    assert fitted == []
    ev.coverage_plot(real, {"raw": fake, "filtered": fake[:5]}, tmp_path / "both.png", "e", umap=True, seed=3)
    assert len(fitted) == 1 and fitted[0] is real
    (w1, h1), (w2, h2) = Image.open(tmp_path / "pca.png").size, Image.open(tmp_path / "both.png").size
    assert w1 == w2 and h2 == 2 * h1  # a second row, beside the PCA one


def test_til_aware_dropout_is_refused_for_prompts_without_til_levels():
    from histosynth.diffusion.train import check_train_settings

    cfg = pathldm_train_cfg()
    check_train_settings(cfg, "report", "report")
    with pytest.raises(InputError, match="prompt_dropout_low_til_only.*'label'.*'label_only'"):
        check_train_settings(cfg, "label_only", "label")
