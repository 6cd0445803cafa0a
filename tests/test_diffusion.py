"""LoRA fine-tuning, sampling, the classifier and the filter loop on tiny models (CPU); see test_train.py for
full fine-tuning, checkpoint keys and schedules."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from histosynth.classifier import train_classifier
from histosynth.config import default_config
from histosynth.diffusion.filtering import filter_shard, filter_synthetic, gather_filtered
from histosynth.diffusion.latents import LatentCache, cache_image_latents, cache_latents, cache_prompt_latents
from histosynth.diffusion.sample import gather_samples, generate, load_pipeline, sample
from histosynth.diffusion.train import fine_tune, fixed_batch_loss, list_checkpoints
from histosynth.diffusion.trained import LORA_FILE, META_FILE
from histosynth.errors import InputError
from histosynth.models.base_model import prepare_base_model
from histosynth.models.clip_tokenizer import load_tokenizer
from histosynth.patchfile import PatchFile, check_patch_file
from histosynth.split import split_patches
from histosynth.text.prompts import build_prompts, token_counter
from histosynth.tiling import TilingParams, tile_slide

pytestmark = pytest.mark.slow  # trains tiny diffusion models: minutes on 2 cores


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_slide):
    """Demo slide -> DAB-labelled 32 px patches -> split -> label prompts -> latent cache."""
    d = tmp_path_factory.mktemp("diff")
    cfg = default_config(tiling={"patch_size": 32, "mpp": 1.0, "labels": {"method": "dab"}, "tissue": {"max_saturation": 12}})
    tile_slide(demo_slide, "d", "c", d / "tiles.h5", d / "t.png", TilingParams.from_config(cfg["tiling"]), progress=False)
    split = {s: d / f"{s}.h5" for s in ("train", "val", "test")}
    with PatchFile(d / "tiles.h5") as pf:
        assert len(pf) >= 20
    split_patches([d / "tiles.h5"], split, d / "m.tsv", None, 0, 0, 0)
    base = prepare_base_model("tiny", d / "base")
    tok = load_tokenizer(str(base / "tokenizer"))
    build_prompts("label", split["train"], cfg["prompts"], token_counter(tok), 77, out_tsv=d / "prompts.tsv")
    cache_latents(split["train"], d / "prompts.tsv", base, d / "latents.h5", 32, True, progress=False)
    return {"dir": d, "base": base, "split": split, "prompts": d / "prompts.tsv", "latents": d / "latents.h5", "cfg": cfg}


def test_experiments_share_one_image_latent_file(setup, tmp_path):
    """The workflow's pair (shared image latents + per-experiment prompts) reads like the self-contained cache,
    with the same fingerprint; another prompt file shares the image latents and changes the fingerprint."""
    d = tmp_path / "latents"
    img = d / "images" / "train.h5"
    cache_image_latents(setup["split"]["train"], setup["base"], img, 32, True, progress=False)
    cache_prompt_latents(img, setup["prompts"], setup["base"], d / "a.h5")
    other = tmp_path / "other.tsv"
    prompts = pd.read_csv(setup["prompts"], sep="\t", keep_default_na=False)
    prompts.assign(prompt="an H&E patch").to_csv(other, sep="\t", index=False)
    cache_prompt_latents(img, other, setup["base"], d / "b.h5")
    with LatentCache(setup["latents"]) as whole, LatentCache(d / "a.h5") as a, LatentCache(d / "b.h5") as b:
        assert a.fingerprint == whole.fingerprint != b.fingerprint
        rows, flipped = np.array([3, 0, 3]), np.array([False, True, True])
        # the same VAE on the same pixels, possibly another thread count: close, not bit-equal
        for x, y in zip(a.read(rows, flipped), whole.read(rows, flipped)):
            np.testing.assert_allclose(x, y, atol=1e-2)
        assert np.array_equal(a.read(rows, flipped)[0], b.read(rows, flipped)[0])
        assert a.prompts != b.prompts and a.labels.tolist() == whole.labels.tolist()
    with h5py.File(d / "a.h5", "r") as h:
        assert h["latent_mean"].is_virtual and not h["prompt_embeds"].is_virtual
    # each experiment's file holds prompts only: far smaller than the image latents
    assert (d / "a.h5").stat().st_size < img.stat().st_size / 2
    # moved without its image file, the cache is refused instead of read as zeros
    (d / "a.h5").rename(tmp_path / "a.h5")
    with pytest.raises(InputError, match="images/train.h5.*missing"):
        LatentCache(tmp_path / "a.h5")


def train_cfg(**kw):
    return default_config(train={"max_steps": 30, "batch_size": 8, "learning_rate": 2e-3, "checkpoint_every": 10,
                                 "validation_every": 30, "validation_images_per_class": 2, **kw})["train"]


def run_training(setup, name, cfg, latents=None, **kw):
    d = setup["dir"] / name
    return fine_tune(latents or setup["latents"], setup["base"], d / "model", d / "loss.tsv", d / "loss.png", d / "val", d / "ckpt",
                     cfg, progress=False, **kw), d


def checkpoint_steps(d):
    """Steps of the checkpoints under a run's checkpoint root (one keyed folder)."""
    folders = [f for f in (d / "ckpt").iterdir() if f.is_dir()]
    assert len(folders) == 1, folders
    return [s for s, _ in list_checkpoints(folders[0])]


@pytest.fixture(scope="module")
def trained(setup):
    summary, d = run_training(setup, "lora", train_cfg())
    return summary, d


def test_latent_cache_holds_both_orientations_and_prompts(setup):
    with h5py.File(setup["latents"], "r") as h:
        assert h["latent_mean"].shape[1:] == (4, 8, 8) and "latent_mean_flip" in h
        assert not np.allclose(h["latent_mean"][0], h["latent_mean_flip"][0])
        assert h["prompt_embeds"].shape[0] == len(set(pd.read_csv(setup["prompts"], sep="\t")["prompt"])) + 1
        assert h["prompts"].asstr()[-1] == ""  # the unconditional prompt for CFG dropout


def test_lora_training_lowers_the_loss(setup, trained):
    summary, d = trained
    before = fixed_batch_loss(setup["latents"], setup["base"])
    after = fixed_batch_loss(setup["latents"], setup["base"], d / "model")
    assert after < before
    assert (d / "model" / LORA_FILE).is_file() and (d / "loss.png").stat().st_size > 0
    assert len(pd.read_csv(d / "loss.tsv", sep="\t")) == 30
    assert list((d / "val").glob("step-*.png"))


def test_lora_loads_into_plain_diffusers_and_changes_output(setup, trained):
    from diffusers import StableDiffusionPipeline

    _, d = trained
    prompt = pd.read_csv(setup["prompts"], sep="\t")["prompt"][0]

    def image(pipe):
        pipe.set_progress_bar_config(disable=True)
        return pipe(prompt, num_inference_steps=5, generator=torch.Generator().manual_seed(0), height=32, width=32, output_type="np").images[0]

    plain = StableDiffusionPipeline.from_pretrained(setup["base"])
    adapted = StableDiffusionPipeline.from_pretrained(setup["base"])
    adapted.load_lora_weights(d / "model")
    assert np.abs(image(plain) - image(adapted)).mean() > 1e-4


def test_killed_training_resumes_from_its_checkpoint_exactly(setup, trained):
    cfg = train_cfg()
    stopped, d = run_training(setup, "resumed", cfg, stop_after_step=20)
    assert stopped == {"stopped_at": 20} and checkpoint_steps(d) == [10, 20]
    assert not (d / "model").exists()
    summary, _ = run_training(setup, "resumed", cfg)
    assert summary["resumed_from"] == 20
    from safetensors.torch import load_file

    a = load_file(trained[1] / "model" / LORA_FILE)
    b = load_file(d / "model" / LORA_FILE)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert pd.read_csv(d / "loss.tsv", sep="\t")["step"].tolist() == list(range(1, 31))


def test_nan_loss_stops_without_saving(setup, tmp_path):
    bad = tmp_path / "nan.h5"
    bad.write_bytes(setup["latents"].read_bytes())
    with h5py.File(bad, "r+") as h:
        h["latent_mean"][...] = np.nan
        h["latent_mean_flip"][...] = np.nan
    d = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="loss became nan at step 1"):
        fine_tune(bad, setup["base"], d / "model", d / "l.tsv", d / "l.png", d / "v", d / "c", train_cfg(), progress=False)
    assert not (d / "model").exists()


def test_empty_training_set_is_refused(setup, tmp_path):
    from histosynth.patchfile import PatchFileSpec, PatchWriter

    with PatchWriter(tmp_path / "empty.h5", PatchFileSpec(32, ["a"], {})):
        pass
    (tmp_path / "p.tsv").write_text("index\tlabel\tlabel_name\tprompt\n")
    with pytest.raises(InputError, match="empty"):
        cache_latents(tmp_path / "empty.h5", tmp_path / "p.tsv", setup["base"], tmp_path / "l.h5", 32, True, progress=False)


def test_sampling_is_reproducible_per_seed(setup, trained):
    """Each image has its own generator, so its starting noise depends on its seed only. The network then runs
    on a batch of 3 (x2 for CFG) or of 1, whose kernels may sum in another order: the same seed gives the same
    image up to float rounding (seen on 1 CPU thread: one pixel off by 1 of 255), a different seed another image
    (mean difference ~46 of 255)."""
    pipe = load_pipeline(setup["base"], trained[1] / "model", "dpmsolver++", "cpu")
    cfg = default_config(sampling={"steps": 4})["sampling"]
    prompt = "Histology image of DAB-positive tissue"
    batch = generate(pipe, [prompt, prompt, prompt], [5, 6, 7], cfg, 32).astype(int)
    alone = generate(pipe, [prompt], [6], cfg, 32).astype(int)
    same = np.abs(batch[1] - alone[0])
    assert same.max() <= 2 and same.mean() <= 0.05  # rounding: at most 2 levels, on a few pixels
    assert np.abs(batch[0] - batch[1]).mean() > 10


def test_lora_for_another_base_model_is_refused(setup, trained, tmp_path):
    meta = json.loads((trained[1] / "model" / META_FILE).read_text())
    other = tmp_path / "lora"
    other.mkdir()
    (other / LORA_FILE).write_bytes((trained[1] / "model" / LORA_FILE).read_bytes())
    meta["base_model"]["cross_attention_dim"] = 768
    (other / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="was trained on base model"):
        load_pipeline(setup["base"], other, "ddim", "cpu")


def test_sample_and_filter_loop(setup, trained):
    d = setup["dir"] / "synthetic"
    cfg = default_config(sampling={"steps": 3, "per_class": 4, "batch_size": 4}, filter={"max_rounds": 2, "min_confidence": 0.0},
                         classifier={"epochs": 1})
    s = sample(setup["base"], trained[1] / "model", setup["prompts"], setup["split"]["train"], d / "raw.h5", d / "raw.png",
               cfg["sampling"], 32, "exp")
    with PatchFile(d / "raw.h5") as pf:
        n_classes = len(np.unique(pf.labels))
        assert len(pf) == 4 * n_classes == s["n"] and list(pf.column("seeds")) == list(range(len(pf)))
    train_classifier(setup["split"]["train"], setup["split"]["val"], setup["split"]["test"], d / "clf", d / "clf.json",
                     cfg["classifier"], 32, progress=False)
    res = filter_synthetic(raw_h5=d / "raw.h5", classifier_dir=d / "clf", base_dir=setup["base"], model_dir=trained[1] / "model",
                           train_h5=setup["split"]["train"], out_h5=d / "f.h5", acceptance_tsv=d / "acc.tsv",
                           plot_png=d / "acc.png", grid_png=d / "fgrid.png", filter_cfg=cfg["filter"],
                           classifier_cfg=cfg["classifier"], sample_cfg=cfg["sampling"], resolution=32, experiment="exp")
    acc = pd.read_csv(d / "acc.tsv", sep="\t")
    assert acc["round"].max() <= 2 and res["rounds_run"] <= 3
    assert check_patch_file(d / "f.h5") == res["accepted"] == sum(r["accepted"] for r in res["per_class"])
    assert {r["label_name"] for r in res["per_class"]} == set(acc["label_name"])
    for r in res["per_class"]:
        assert 0 <= r["acceptance"] <= 1
    with PatchFile(d / "f.h5") as pf:  # accepted images keep prompt class and carry their round
        assert set(pf.column("round")) <= {0, 1, 2}


def test_sharded_sampling_and_filtering_match_the_unsharded_run(setup, trained, tmp_path):
    """3 shards (one empty-ish, uneven batch shapes) gathered give the unsharded raw and filtered sets: the same
    seeds, prompts, labels and rounds in the same order, pixels equal up to batch-shape rounding (<= 2 of 255)."""
    cfg = default_config(sampling={"steps": 3, "per_class": 4, "batch_size": 3}, filter={"max_rounds": 1, "min_confidence": 0.0},
                         classifier={"epochs": 1})
    model, base, train_h5 = trained[1] / "model", setup["base"], setup["split"]["train"]
    whole = sample(base, model, setup["prompts"], train_h5, tmp_path / "raw.h5", tmp_path / "raw.png", cfg["sampling"], 32, "e",
                   progress=False)
    shards = [tmp_path / "shards" / f"raw.{k}.h5" for k in range(3)]
    for k, out in enumerate(shards):
        sample(base, model, setup["prompts"], train_h5, out, None, cfg["sampling"], 32, "e", progress=False, shard=k, shards=3)
    gathered = gather_samples(shards, tmp_path / "shards" / "raw.h5", tmp_path / "g.png")
    assert gathered["n"] == whole["n"] and gathered["shards"] == 3

    def same_sets(a, b):
        with PatchFile(a) as x, PatchFile(b) as y:
            assert len(x) == len(y) > 0
            for col in ("seeds", "prompts", "round"):
                assert list(x.column(col)) == list(y.column(col)), col
            assert np.array_equal(x.labels, y.labels)
            diff = np.abs(x.read(np.arange(len(x))).astype(int) - y.read(np.arange(len(y))).astype(int))
            assert diff.max() <= 2 and diff.mean() <= 0.05

    same_sets(tmp_path / "raw.h5", tmp_path / "shards" / "raw.h5")
    train_classifier(train_h5, setup["split"]["val"], setup["split"]["test"], tmp_path / "clf", tmp_path / "clf.json",
                     cfg["classifier"], 32, progress=False)
    # both filter the same raw pixels (the gathered shards), so round 0 decides identically
    common = dict(classifier_dir=tmp_path / "clf", base_dir=base, model_dir=model, train_h5=train_h5, filter_cfg=cfg["filter"],
                  classifier_cfg=cfg["classifier"], sample_cfg=cfg["sampling"], resolution=32, experiment="e")
    res = filter_synthetic(raw_h5=tmp_path / "shards" / "raw.h5", out_h5=tmp_path / "f.h5", acceptance_tsv=tmp_path / "acc.tsv",
                           plot_png=tmp_path / "acc.png", grid_png=tmp_path / "fgrid.png", **common)
    tables = [filter_shard(raw_h5=raw, out_h5=raw.with_name(f"filtered.{k}.h5"), **common) for k, raw in enumerate(shards)]
    res_sharded = gather_filtered([raw.with_name(f"filtered.{k}.h5") for k, raw in enumerate(shards)], tables,
                                  tmp_path / "shards" / "f.h5", tmp_path / "sacc.tsv", tmp_path / "sacc.png", tmp_path / "sg.png",
                                  cfg["filter"])
    same_sets(tmp_path / "f.h5", tmp_path / "shards" / "f.h5")
    assert {k: v for k, v in res_sharded.items() if k != "shards"} == {k: v for k, v in res.items() if k != "shards"}
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "acc.tsv", sep="\t"), pd.read_csv(tmp_path / "sacc.tsv", sep="\t"))


def test_classifier_beats_chance_on_pathmnist(shared_data, tmp_path):
    from histosynth.importers import import_patches

    import_patches({"name": "pm", "format": "medmnist", "path": str(shared_data / "patches/pathmnist/pathmnist_train_first1000_28.npz"),
                    "split": "resplit"},
                   tmp_path / "pm.h5", 28, progress=False)
    split = {s: tmp_path / f"{s}.h5" for s in ("train", "val", "test")}
    split_patches([tmp_path / "pm.h5"], split, tmp_path / "m.tsv", None, 0.15, 0.2, 0)
    cfg = default_config(classifier={"epochs": 5, "learning_rate": 1e-3})["classifier"]
    m = train_classifier(split["train"], split["val"], split["test"], tmp_path / "clf", tmp_path / "m.json", cfg, 28, progress=False)
    assert m["test"]["n"] == 200
    print("PathMNIST classifier:", m["test"]["accuracy"], m["test"]["macro_auc"])
    assert m["test"]["accuracy"] > 0.4 and m["test"]["macro_auc"] > 0.85  # chance: 0.11 and 0.5
