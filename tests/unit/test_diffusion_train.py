"""``histosynth.diffusion.train``: LoRA and full UNet fine-tuning, EMA, exact resume (also under an
fp16 GradScaler), checkpoints keyed by the latent cache's data fingerprint, method/option errors and the
warm-restarts schedule. Tiny models on CPU; runs are a few steps long."""

import logging

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from _diffusion_setup import checkpoint_steps, run_training, train_cfg
from _paper_setup import pathldm_train_cfg

from histosynth.config import default_config, validate_config
from histosynth.diffusion import train
from histosynth.diffusion.latents import DATA_FINGERPRINT, LatentCache, cache_latents
from histosynth.diffusion.sample import generate, load_pipeline
from histosynth.diffusion.train import (
    check_train_settings,
    fixed_batch_loss,
    list_checkpoints,
    make_lr_scheduler,
    make_optimizer,
)
from histosynth.diffusion.trained import META_FILE, trained_method
from histosynth.errors import InputError
from histosynth.models.clip_tokenizer import load_tokenizer
from histosynth.text.prompts import build_prompts, token_counter
import json
import pandas as pd
from histosynth.classifier import train_classifier
from histosynth.diffusion.filtering import filter_shard, filter_synthetic, gather_filtered
from histosynth.diffusion.latents import cache_image_latents, cache_prompt_latents
from histosynth.diffusion.sample import gather_samples, sample
from histosynth.diffusion.train import fine_tune
from histosynth.diffusion.trained import LORA_FILE, UNET_WEIGHTS
from diffusers import UNet2DConditionModel
from histosynth.patchfile import PatchFile

pytestmark = pytest.mark.slow  # trains tiny diffusion models: minutes on 2 cores


def full_cfg(**kw):
    return train_cfg(
        method="full",
        max_steps=6,
        checkpoint_every=2,
        validation_every=6,
        validation_images_per_class=1,
        learning_rate=1e-3,
        **kw,
    )


def same_weights(a_dir, b_dir, name=UNET_WEIGHTS, atol=1e-6):
    a, b = load_file(a_dir / name), load_file(b_dir / name)
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol) for k in a)


@pytest.fixture(scope="module")
def full_ema(setup):  # noqa: F811
    """An uninterrupted full fine-tuning run with EMA, the reference for the resume tests."""
    return run_training(setup, "full_ema", full_cfg(use_ema=True))


def test_full_fine_tuning_writes_a_unet_folder_that_diffusers_and_sampling_load(setup, full_ema):  # noqa: F811
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    summary, d = full_ema
    assert summary["method"] == "full" and trained_method(d / "model") == "full"
    unet = UNet2DConditionModel.from_pretrained(d / "model")  # a plain diffusers UNet folder
    base_unet = UNet2DConditionModel.from_pretrained(setup["base"], subfolder="unet")
    assert summary["trainable_parameters"] == sum(p.numel() for p in base_unet.parameters())
    pipe = StableDiffusionPipeline.from_pretrained(setup["base"], unet=unet)
    assert pipe.unet.config.cross_attention_dim == base_unet.config.cross_attention_dim
    assert not torch.equal(next(iter(unet.parameters())), next(iter(base_unet.parameters())))
    assert fixed_batch_loss(setup["latents"], setup["base"], d / "model") < fixed_batch_loss(
        setup["latents"], setup["base"]
    )
    img = generate(
        load_pipeline(setup["base"], d / "model", "ddim", "cpu"),
        ["Histology image of DAB-positive tissue"],
        [0],
        default_config(sampling={"steps": 2})["sampling"],
        32,
    )
    assert img.shape == (1, 32, 32, 3)


def test_full_fine_tuning_with_ema_resumes_exactly(setup, full_ema):  # noqa: F811
    """Killed after the step-4 checkpoint and rerun: the same final (EMA) weights as the uninterrupted run."""
    cfg = full_cfg(use_ema=True)
    stopped, d = run_training(setup, "full_ema_resumed", cfg, stop_after_step=4)
    assert stopped == {"stopped_at": 4} and checkpoint_steps(d) == [2, 4]
    ckpt = list_checkpoints(next((d / "ckpt").iterdir()))[-1][1]
    assert (ckpt / "unet" / "config.json").is_file() and (ckpt / "unet_ema" / "config.json").is_file()
    summary, _ = run_training(setup, "full_ema_resumed", cfg)
    assert summary["resumed_from"] == 4
    assert same_weights(full_ema[1] / "model", d / "model")


def test_full_fine_tuning_trains_the_text_encoder_saves_it_and_resumes_exactly(setup):  # noqa: F811
    """train_text_encoder under method full: the whole text encoder trains with the UNet, is written to the
    model folder's text_encoder/ (and to each checkpoint), loaded by the sampler, and a killed run resumes
    to the weights of an uninterrupted one."""
    from transformers import CLIPTextModel

    cfg = full_cfg(train_text_encoder=True)
    summary, d = run_training(setup, "full_te", cfg)
    base_te = CLIPTextModel.from_pretrained(setup["base"], subfolder="text_encoder")
    te = CLIPTextModel.from_pretrained(d / "model", subfolder="text_encoder")
    assert summary["trainable_parameters"] == sum(
        p.numel() for m in (base_te, UNet2DConditionModel.from_pretrained(d / "model")) for p in m.parameters()
    )
    changed = [not torch.equal(a, b) for a, b in zip(te.parameters(), base_te.parameters())]
    assert sum(changed) > len(changed) // 2  # the text encoder learnt, not just a bias or two
    pipe = load_pipeline(setup["base"], d / "model", "ddim", "cpu")
    assert torch.equal(next(pipe.text_encoder.parameters()), next(te.parameters()))
    stopped, r = run_training(setup, "full_te_resumed", cfg, stop_after_step=4)
    ckpt = list_checkpoints(next((r / "ckpt").iterdir()))[-1][1]
    assert stopped == {"stopped_at": 4} and (ckpt / "text_encoder" / "config.json").is_file()
    assert run_training(setup, "full_te_resumed", cfg)[0]["resumed_from"] == 4
    assert same_weights(d / "model", r / "model")
    assert same_weights(d / "model" / "text_encoder", r / "model" / "text_encoder", name="model.safetensors")


@pytest.fixture()
def fp16_scaler_on_cpu(monkeypatch):
    """accelerate gives a CPU run no GradScaler (fp16 needs a GPU there). This swaps in the same machinery a
    GPU run gets: fp16 autocast in the prepared UNet, a torch GradScaler that scales the loss, unscales before
    clipping, skips steps whose gradients overflow and adapts its scale, saved by save_state as scaler.pt.
    What differs from CUDA: the CPU autocast op list and kernels (so other values overflow), and a tiny
    init/growth interval chosen so that steps are skipped and the scale moves within six steps."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    made = []

    def make(cfg, device):
        AcceleratorState._reset_state(True)  # the shared state remembers the precision of the last Accelerator
        GradientState._reset_state()
        acc = Accelerator(
            mixed_precision="fp16", cpu=True, gradient_accumulation_steps=cfg["gradient_accumulation_steps"]
        )
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, growth_interval=2)
        acc.native_amp = True
        made.append(acc)
        return acc

    monkeypatch.setattr(train, "make_accelerator", make)
    yield made
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def test_fp16_grad_scaler_state_is_checkpointed_and_resumed_exactly(setup, fp16_scaler_on_cpu):  # noqa: F811
    cfg = full_cfg()
    whole, d_whole = run_training(setup, "fp16_whole", cfg)
    assert whole["mixed_precision"] == "fp16"
    final_scale = fp16_scaler_on_cpu[-1].scaler.get_scale()
    run_training(setup, "fp16_resumed", cfg, stop_after_step=4)
    ckpt = list_checkpoints(next((setup["dir"] / "fp16_resumed" / "ckpt").iterdir()))[-1][1]
    saved = torch.load(ckpt / "scaler.pt", weights_only=False)
    assert saved["scale"] < 2.0**40  # overflowing steps were skipped and the scale backed off: state worth restoring
    resumed, d_resumed = run_training(setup, "fp16_resumed", cfg)
    assert resumed["resumed_from"] == 4
    assert fp16_scaler_on_cpu[-1].scaler.get_scale() == final_scale  # the restored scale evolved as in the whole run
    assert same_weights(d_whole / "model", d_resumed / "model")


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    """train.checkpoints_keep prunes older save_state folders (diffusers' checkpoints_total_limit); an unfinished
    (hidden .partial) folder is neither counted nor resumed."""
    from accelerate import Accelerator

    from histosynth.diffusion.train import save_checkpoint

    acc = Accelerator(cpu=True)
    (tmp_path / ".checkpoint-9.host.1.partial").mkdir()
    for step in (2, 4, 6, 8):
        save_checkpoint(acc, tmp_path, step, [{"step": step, "loss": 1.0}], {"method": "lora"}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [6, 8]
    assert sorted(d.name for d in tmp_path.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]


def test_changed_prompts_start_training_afresh_and_the_same_data_resumes(setup, tmp_path, caplog):  # noqa: F811
    cfg = train_cfg(max_steps=4, checkpoint_every=2, validation_every=4, validation_images_per_class=1)
    run_training(setup, "stale", cfg, stop_after_step=2)
    # the same settings and the same cache resume, and the log says why
    with caplog.at_level(logging.INFO, logger="histosynth.diffusion.train"):
        again, d = run_training(setup, "stale", cfg)
    assert again["resumed_from"] == 2
    with LatentCache(setup["latents"]) as cache:
        fingerprint = cache.fingerprint
    assert f"latent-cache data fingerprint {fingerprint[:12]}" in caplog.text
    # a new prompt template gives a cache with another fingerprint: a fresh run beside the old checkpoints
    tok = load_tokenizer(str(setup["base"] / "tokenizer"))
    prompts_cfg = {**setup["cfg"]["prompts"], "label_template": "An H&E patch of {label} tissue"}
    build_prompts("label", setup["split"]["train"], prompts_cfg, token_counter(tok), 77, out_tsv=tmp_path / "p.tsv")
    cache_latents(
        setup["split"]["train"], tmp_path / "p.tsv", setup["base"], tmp_path / "lat.h5", 32, True, progress=False
    )
    with LatentCache(tmp_path / "lat.h5") as cache:
        assert cache.fingerprint != fingerprint
    fresh, _ = run_training(setup, "stale", cfg, latents=tmp_path / "lat.h5")
    assert fresh["resumed_from"] == 0
    assert len([f for f in (d / "ckpt").iterdir() if f.is_dir()]) == 2


def test_checkpoint_of_the_other_method_is_refused(setup, tmp_path):  # noqa: F811
    _, d = run_training(
        setup,
        "other_method",
        train_cfg(max_steps=2, checkpoint_every=1, validation_every=2, validation_images_per_class=1),
        stop_after_step=1,
    )
    folder = next((d / "ckpt").iterdir())
    with pytest.raises(InputError, match=f"checkpoint {folder}/checkpoint-1 was written by train.method 'lora'"):
        train.resume(None, folder, {"method": "full"}, 2)


def test_latent_cache_without_a_fingerprint_is_refused(setup, tmp_path):  # noqa: F811
    old = tmp_path / "old.h5"
    old.write_bytes(setup["latents"].read_bytes())
    with h5py.File(old, "r+") as h:
        del h.attrs[DATA_FINGERPRINT]
    with pytest.raises(InputError, match=f"{old} has no {DATA_FINGERPRINT}.*rerun cache_latents"):
        LatentCache(old)


@pytest.mark.parametrize(
    "method, key, value",
    [
        ("full", "rank", 8),
        ("full", "text_encoder_target_modules", ["q_proj"]),
        ("full", "target_modules", ["to_q"]),
        ("lora", "use_ema", True),
        ("lora", "use_8bit_adam", True),
    ],
)
def test_options_of_the_other_method_are_refused(method, key, value):
    cfg = default_config(train={"method": method, key: value})["train"]
    with pytest.raises(
        InputError,
        match=rf"train\.{key} = .* applies to train\.method '(lora|full)' only, but train\.method "
        rf"is '{method}' \(experiment 'x'\)",
    ):
        check_train_settings(cfg, "x")


def test_bad_training_settings_name_the_key():
    with pytest.raises(Exception, match="dreambooth"):
        validate_config({"train": {"method": "dreambooth"}})
    warm = default_config(train={"lr_scheduler": "cosine_annealing_warm_restarts", "lr_warmup_steps": 10})["train"]
    with pytest.raises(InputError, match="train.lr_warmup_steps"):
        check_train_settings(warm)
    eight_bit = default_config(train={"method": "full", "use_8bit_adam": True})["train"]
    check_train_settings(eight_bit)  # a valid combination
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(InputError, match="train.use_8bit_adam needs a CUDA GPU"):
        make_optimizer(params, eight_bit, "cpu")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="train.use_8bit_adam needs bitsandbytes"):
            make_optimizer(params, eight_bit, "cuda")


def test_cosine_annealing_warm_restarts_is_the_lora_papers_schedule():
    """T_0 = 500, T_mult = 2 over 2,000 steps: cycles of 500 and 1,000 steps, restarts at 500 and 1,500."""
    cfg = default_config(
        train={"lr_scheduler": "cosine_annealing_warm_restarts", "lr_t0": 500, "lr_t_mult": 2, "learning_rate": 5e-5}
    )["train"]
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg["learning_rate"])
    sched = make_lr_scheduler(opt, cfg)
    lrs = []
    for _ in range(2000):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    lrs = np.array(lrs)
    restarts = np.flatnonzero(np.diff(lrs) > 0) + 1
    assert restarts.tolist() == [500, 1500]
    assert lrs[[0, 500, 1500]] == pytest.approx([5e-5] * 3)  # each restart back at the peak
    assert lrs[250] == pytest.approx(2.5e-5) and lrs[1000] == pytest.approx(2.5e-5)  # mid-cycle: half the peak


def test_trained_folder_records_its_method(setup, full_ema):  # noqa: F811
    import json

    meta = json.loads((full_ema[1] / "model" / META_FILE).read_text())
    assert meta["method"] == "full" and meta["settings"]["use_ema"] is True


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
        return pipe(
            prompt,
            num_inference_steps=5,
            generator=torch.Generator().manual_seed(0),
            height=32,
            width=32,
            output_type="np",
        ).images[0]

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
        fine_tune(
            bad, setup["base"], d / "model", d / "l.tsv", d / "l.png", d / "v", d / "c", train_cfg(), progress=False
        )
    assert not (d / "model").exists()


def test_empty_training_set_is_refused(setup, tmp_path):
    from histosynth.patchfile import PatchFileSpec, PatchWriter

    with PatchWriter(tmp_path / "empty.h5", PatchFileSpec(32, ["a"], {})):
        pass
    (tmp_path / "p.tsv").write_text("index\tlabel\tlabel_name\tprompt\n")
    with pytest.raises(InputError, match="empty"):
        cache_latents(
            tmp_path / "empty.h5", tmp_path / "p.tsv", setup["base"], tmp_path / "l.h5", 32, True, progress=False
        )


def test_lora_for_another_base_model_is_refused(setup, trained, tmp_path):
    meta = json.loads((trained[1] / "model" / META_FILE).read_text())
    other = tmp_path / "lora"
    other.mkdir()
    (other / LORA_FILE).write_bytes((trained[1] / "model" / LORA_FILE).read_bytes())
    meta["base_model"]["cross_attention_dim"] = 768
    (other / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="was trained on base model"):
        load_pipeline(setup["base"], other, "ddim", "cpu")


def test_sharded_sampling_and_filtering_match_the_unsharded_run(setup, trained, tmp_path):
    """3 shards (one empty-ish, uneven batch shapes) gathered give the unsharded raw and filtered sets: the same
    seeds, prompts, labels and rounds in the same order, pixels equal up to batch-shape rounding (<= 2 of 255)."""
    cfg = default_config(
        sampling={"steps": 3, "per_class": 4, "batch_size": 3},
        filter={"max_rounds": 1, "min_confidence": 0.0},
        classifier={"epochs": 1},
    )
    model, base, train_h5 = trained[1] / "model", setup["base"], setup["split"]["train"]
    whole = sample(
        base,
        model,
        setup["prompts"],
        train_h5,
        tmp_path / "raw.h5",
        tmp_path / "raw.png",
        cfg["sampling"],
        32,
        "e",
        progress=False,
    )
    shards = [tmp_path / "shards" / f"raw.{k}.h5" for k in range(3)]
    for k, out in enumerate(shards):
        sample(
            base,
            model,
            setup["prompts"],
            train_h5,
            out,
            None,
            cfg["sampling"],
            32,
            "e",
            progress=False,
            shard=k,
            shards=3,
        )
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
    train_classifier(
        train_h5,
        setup["split"]["val"],
        setup["split"]["test"],
        tmp_path / "clf",
        tmp_path / "clf.json",
        cfg["classifier"],
        32,
        progress=False,
    )
    # both filter the same raw pixels (the gathered shards), so round 0 decides identically
    common = dict(
        classifier_dir=tmp_path / "clf",
        base_dir=base,
        model_dir=model,
        train_h5=train_h5,
        filter_cfg=cfg["filter"],
        classifier_cfg=cfg["classifier"],
        sample_cfg=cfg["sampling"],
        resolution=32,
        experiment="e",
    )
    res = filter_synthetic(
        raw_h5=tmp_path / "shards" / "raw.h5",
        out_h5=tmp_path / "f.h5",
        acceptance_tsv=tmp_path / "acc.tsv",
        plot_png=tmp_path / "acc.png",
        grid_png=tmp_path / "fgrid.png",
        **common,
    )
    tables = [
        filter_shard(raw_h5=raw, out_h5=raw.with_name(f"filtered.{k}.h5"), **common) for k, raw in enumerate(shards)
    ]
    res_sharded = gather_filtered(
        [raw.with_name(f"filtered.{k}.h5") for k, raw in enumerate(shards)],
        tables,
        tmp_path / "shards" / "f.h5",
        tmp_path / "sacc.tsv",
        tmp_path / "sacc.png",
        tmp_path / "sg.png",
        cfg["filter"],
    )
    same_sets(tmp_path / "f.h5", tmp_path / "shards" / "f.h5")
    assert {k: v for k, v in res_sharded.items() if k != "shards"} == {k: v for k, v in res.items() if k != "shards"}
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "acc.tsv", sep="\t"), pd.read_csv(tmp_path / "sacc.tsv", sep="\t")
    )


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


def test_til_aware_dropout_is_refused_for_prompts_without_til_levels():
    from histosynth.diffusion.train import check_train_settings

    cfg = pathldm_train_cfg()
    check_train_settings(cfg, "report", "report")
    with pytest.raises(InputError, match="prompt_dropout_low_til_only.*'label'.*'label_only'"):
        check_train_settings(cfg, "label_only", "label")


def test_batches_drawn_ahead_in_a_thread_are_the_batches_drawn_inline(pathldm):
    import torch

    from histosynth.diffusion.latents import LatentCache
    from histosynth.diffusion.train import batches_ahead, draw_batch

    cfg = pathldm_train_cfg()
    numbers = [torch.tensor([k]) for k in (3, 0, 7, 1)]  # as the prepared DataLoader yields them
    with LatentCache(pathldm["latents"]) as cache:
        ahead = list(batches_ahead(cache, cfg, numbers, 1000))
        assert [k for k, _ in ahead] == [3, 0, 7, 1]
        for k, batch in ahead:
            for got, want in zip(batch, draw_batch(cache, cfg, k, 1000)):
                assert torch.equal(got, want)  # the same arithmetic on the same numbers: bit for bit
        # a loop that stops early (a killed run's checkpoint step) closes the generator without hanging
        it = batches_ahead(cache, cfg, numbers, 1000)
        next(it)
        it.close()
