"""Peak memory of ``embed_patches`` against the number of patches (it must stay flat in N).

Each row is a fresh process running the real ``embed_patches`` (``load_embedder`` from a saved
folder, the DataLoader, the HDF5 writer) on N random patches with a ViT-B-sized transformers
``ViTModel`` built offline with random weights (hidden 768, 224 px, patch 16 by default; 8 gives
the 785 tokens of DINO ViT-B/8). Peak memory is the sum of the RSS of the process and its
DataLoader workers, sampled every 50 ms (what a SLURM cgroup counts), reported as a ratio against
the smallest N measured in the same run.

The number of transformer layers does not change what is kept per patch (a 768-wide hidden state
of every token) but dominates the time, so the N sweep runs with ``--layers 0`` (patch embedding
and final norm only) to stay short; ``--layers 12 --sizes 256`` gives the full ViT-B's flat peak,
which is what the rule's ``mem_mb`` is set from.

    .venv/bin/python bench/bench_memory.py [--sizes 2000 20000] [--layers 0] [--workers 2] [--batch-size 64]

``--stage split`` and ``--stage cluster`` give the same growth rows for the split (the real
``split_patches`` over N 64 px patches in ``--files`` tile files, one case each) and the
morphology clustering (the real ``cluster_morphology`` with the config's ``morphology`` defaults
on N random 768-wide embeddings, 70/15/15 over the splits). ``--stage prompts`` runs the real
``build_prompts`` (``label`` strategy, the config's ``prompts`` defaults, the tiny base's CLIP
tokenizer counting every prompt's tokens) on a training split of N patches; ``--stage latents``
runs the real ``cache_image_latents`` (with flips) and one ``cache_prompt_latents`` on N 32 px
patches, through a VAE of the tiny base's class cut to 8 channels per block (what is kept per
patch is the latents, whose size the bench reports; the VAE's width changes only the time).

``--stage sd`` measures the model rules at the presets' model size rather than against N: Stable
Diffusion 1.5's architecture with random weights (``bench_gpu.py``'s ``sd15-random`` base, built once
in ``--workdir``), real IHC tissue crops, and in a fresh process each, the real functions of
``cache_image_latents`` (flips), ``cache_latents`` (one experiment's prompts), ``train_diffusion``
(``fine_tune``: ``--train-steps`` steps, a checkpoint and the validation grid) and ``sample_synthetic``
(``sample``, 2 DDIM steps) on the CPU, at each ``--px`` (``--sd-jobs`` picks the rows; ``--no-validation``
leaves out the grid that training draws after its last step, 20 steps of inference per class, which
dominates a row's time). On the CPU every tensor is host memory, so a
row is what the rule needs on a CPU node; on a GPU node the weights, optimizer state and activations
move to the GPU and the host keeps the loading copies and the checkpoint's serialisation.

    .venv/bin/python bench/bench_memory.py --stage sd --px 256 512 --train-batches 1 2 --full-px 256

``--sd-base tiny`` runs the same rows on the tiny offline base in a minute (a check of the script).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_embedder(folder: Path, layers: int, patch: int) -> None:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from histosynth.models.embedder import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    model = ViTModel(ViTConfig(num_hidden_layers=layers, image_size=224, patch_size=patch))
    model.save_pretrained(folder, safe_serialization=True)
    ViTImageProcessor(
        size={"height": 224, "width": 224}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
    ).save_pretrained(folder)
    (folder / "histosynth_source.json").write_text(json.dumps({"backbone": f"random ViT-B/{patch}, {layers} layers"}))


def make_patches(path: Path, n: int, size: int = 32) -> None:
    """Small stored patches (the processor resizes them to 224): cheap to write, same tensors downstream."""
    from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter

    rng = np.random.default_rng(0)
    with PatchWriter(path, PatchFileSpec(size, ["a"], {}), compression_level=1) as w:
        for start in range(0, n, 4096):
            m = min(4096, n - start)
            w.append(
                PatchBatch(
                    rng.integers(0, 255, (m, size, size, 3), dtype=np.uint8),
                    np.zeros((m, 2)),
                    np.zeros(m),
                    ["s"] * m,
                    ["c"] * m,
                    np.ones(m),
                )
            )


def child(patches: str, embedder: str, out: str, batch_size: int, workers: int) -> None:
    from histosynth.embed import embed_patches

    embed_patches(patches, embedder, out, "cls", batch_size, workers, device="cpu", progress=False)


def make_slide_files(folder: Path, n: int, per_file: int, size: int = 64) -> list[Path]:
    """N patches in tile files of ``per_file`` patches (one slide and case each, two labels)."""
    from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter

    rng = np.random.default_rng(0)
    folder.mkdir()
    paths = []
    for f, start in enumerate(range(0, n, per_file)):
        m = min(per_file, n - start)
        paths.append(folder / f"s{f}.h5")
        with PatchWriter(paths[-1], PatchFileSpec(size, ["a", "b"], {}), compression_level=1) as w:
            w.append(
                PatchBatch(
                    rng.integers(0, 255, (m, size, size, 3), dtype=np.uint8),
                    np.zeros((m, 2)),
                    rng.integers(0, 2, m),
                    [f"s{f}"] * m,
                    [f"c{f}"] * m,
                    np.ones(m),
                )
            )
    return paths


def split_child(folder: str, out: str) -> None:
    from histosynth.split import split_patches

    o = Path(out)
    o.mkdir()
    split_patches(
        sorted(Path(folder).glob("*.h5")),
        {s: o / f"{s}.h5" for s in ("train", "val", "test")},
        o / "manifest.tsv",
        o / "summary.tsv",
        val=0.15,
        test=0.15,
        seed=0,
    )


def cluster_child(patches: str, out: str, n: str) -> None:
    """``n`` embeddings over the three splits; ``patches`` holds the training split's patches (the example grid)."""
    from histosynth.config import default_config
    from histosynth.morphology import cluster_morphology

    n = int(n)
    rng = np.random.default_rng(0)
    cut = np.cumsum([int(0.7 * n), int(0.15 * n)])
    feats = dict(zip(("train", "val", "test"), np.split(rng.standard_normal((n, 768), dtype=np.float32), cut)))
    labels = {k: rng.integers(0, 2, len(v)) for k, v in feats.items()}
    o = Path(out)
    o.mkdir()
    names = {"assignments": "a.tsv", "centroids": "c.tsv", "sizes": "s.tsv", "sweep": "k.png", "examples": "e.png"}
    cluster_morphology(
        feats["train"], feats, labels, default_config()["morphology"], {k: o / v for k, v in names.items()}, patches
    )


def make_latent_base(folder: Path) -> None:
    """The tiny offline base with its VAE narrowed to 8 channels per block (4 blocks: 8x down, as SD's)."""
    import torch
    from diffusers import AutoencoderKL

    from histosynth.models.base_model import prepare_base_model

    prepare_base_model("tiny", folder)
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=32,
    )
    vae.save_pretrained(folder / "vae", safe_serialization=True)


def prompts_child(patches: str, base: str, out: str) -> None:
    from histosynth.config import default_config
    from histosynth.models.clip_tokenizer import load_tokenizer
    from histosynth.text.prompts import build_prompts, token_counter

    tokenizer = load_tokenizer(str(Path(base) / "tokenizer"))
    o = Path(out)
    o.mkdir()
    build_prompts(
        "label",
        patches,
        default_config()["prompts"],
        token_counter(tokenizer),
        tokenizer.model_max_length,
        out_tsv=o / "prompts.tsv",
        out_freq=o / "frequencies.tsv",
    )


def latents_child(patches: str, base: str, out: str) -> None:
    from histosynth.config import default_config
    from histosynth.diffusion.latents import cache_image_latents, cache_prompt_latents
    from histosynth.models.clip_tokenizer import load_tokenizer
    from histosynth.text.prompts import build_prompts, token_counter

    o = Path(out)
    o.mkdir()
    tokenizer = load_tokenizer(str(Path(base) / "tokenizer"))
    build_prompts("label", patches, default_config()["prompts"], token_counter(tokenizer), 77, out_tsv=o / "p.tsv")
    t0 = time.process_time()
    cache_image_latents(patches, base, o / "images.h5", 32, True, batch_size=256, device="cpu", progress=False)
    t1 = time.process_time()
    cache_prompt_latents(o / "images.h5", o / "p.tsv", base, o / "experiment.h5", device="cpu")
    print(
        f"latents: images {t1 - t0:.1f} s CPU, {(o / 'images.h5').stat().st_size / 2**20:.1f} MiB; "
        f"one experiment's prompts {time.process_time() - t1:.1f} s CPU, "
        f"{(o / 'experiment.h5').stat().st_size / 2**20:.2f} MiB",
        flush=True,
    )


# the rule each --stage sd job stands for
SD_RULES = {
    "images": "cache_image_latents",
    "prompts": "cache_latents",
    "train": "train_diffusion",
    "sample": "sample_synthetic",
}


def booked_mem_mb(rule: str) -> int:
    """The ``mem_mb`` that ``rule`` books now in rules/diffusion.smk (per process for train_diffusion)."""
    block = (REPO / "rules" / "diffusion.smk").read_text().split(f"rule {rule}:", 1)[1]
    return int(re.search(r"mem_mb=(?:lambda wc: )?(\d+)", block).group(1))


def sd_child(job: str, work: str, base_name: str, *args: str) -> None:
    """One model rule's real function on the SD 1.5-sized base in ``work`` (see ``--stage sd``)."""
    from bench_gpu import prepare_base, train_settings

    from histosynth.config import default_config

    work = Path(work)
    base = work / f"base-{base_name}"
    if job == "build":
        prepare_base(base_name, work, "cpu", None)
        return
    d = work / f"{args[0]}px"
    px = int(args[0])
    cfg = default_config()
    if job == "images":
        from histosynth.diffusion.latents import cache_image_latents

        # the rule's call: the default batch (encode_batch_size), flips as train.random_flip's default
        cache_image_latents(d / "data" / "patches.h5", base, d / "images.h5", px, True, device="cpu", progress=False)
    elif job == "prompts":
        from histosynth.diffusion.latents import cache_prompt_latents

        cache_prompt_latents(d / "images.h5", d / "data" / "prompts.tsv", base, d / "experiment.h5", device="cpu")
    elif job == "train":
        from histosynth.diffusion import train as train_module

        method, batch, steps, validation = args[1], int(args[2]), int(args[3]), args[4] == "validation"
        t = dict(train_settings(cfg["train"], method, steps, batch, "cpu", px), checkpoint_every=steps)
        if not validation:  # the grid after the last step: inference, under a training step's peak
            train_module.validation_grid = lambda *a, **k: None
        out = d / f"train-{method}-b{batch}"
        train_module.fine_tune(
            d / "experiment.h5",
            base,
            out / "trained",
            out / "loss.tsv",
            out / "loss.png",
            out / "validation",
            out / "checkpoints",
            t,
            progress=False,
        )
    elif job == "sample":
        from histosynth.diffusion.sample import sample

        batch = int(args[1])
        s = dict(cfg["sampling"], steps=2, per_class=batch // 2, batch_size=batch, device="cpu")
        model = d / "train-lora-b1" / "trained"
        sample(
            base,
            model,
            d / "data" / "prompts.tsv",
            d / "data" / "patches.h5",
            d / f"raw-b{batch}.h5",
            None,
            s,
            px,
            "bench",
            progress=False,
        )
    else:
        raise SystemExit(f"unknown sd job {job}")


def sd_rows(a) -> list[dict]:
    """The ``--stage sd`` rows: build the base, then each rule's function in its own process."""
    from bench_gpu import write_data

    from histosynth.config import default_config
    from histosynth.diffusion.latents import encode_batch_size

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)

    def run(job: str, *args) -> tuple[float, float, float]:
        cmd = [sys.executable, __file__, "--child", "sd", job, str(work), a.sd_base, *map(str, args)]
        return peak_rss_of(cmd)

    base = work / f"base-{a.sd_base}"
    if not (base / "model_index.json").is_file():
        mib, sec, cpu = run("build")
        print(f"built the {a.sd_base} base: peak {mib:.0f} MiB, {sec:.0f} s", flush=True)
    rows = []

    def row(rule: str, job: str, px: int, batch, *args) -> None:
        mib, sec, cpu = run(job, px, *args)
        r = {"rule": rule, "px": px, "batch": batch, "peak_rss_mib": mib, "seconds": sec, "cpu_seconds": cpu}
        if job == "train":
            r["validation_grid"] = not a.no_validation
        r["rule_mem_mb"] = booked_mem_mb(SD_RULES[job])
        rows.append(r)
        print(json.dumps(r), flush=True)
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"stage": "sd", "cpus": os.cpu_count(), "rows": rows}, indent=2))

    for px in a.px:
        d = work / f"{px}px"
        if not (d / "data" / "prompts.tsv").is_file():
            write_data(d / "data", px, a.sd_patches, base, default_config())
        grid = "no-validation" if a.no_validation else "validation"
        if "images" in a.sd_jobs:
            row("cache_image_latents", "images", px, encode_batch_size(px))
        if "prompts" in a.sd_jobs:
            row("cache_latents", "prompts", px, None)
        for b in a.train_batches if "lora" in a.sd_jobs else ():
            row("train_diffusion lora", "train", px, b, "lora", b, a.train_steps, grid)
        if px in a.full_px and "full" in a.sd_jobs:
            row("train_diffusion full", "train", px, 1, "full", 1, a.train_steps, grid)
        if "sample" in a.sd_jobs:
            row("sample_synthetic", "sample", px, a.sample_batch, a.sample_batch)
    return rows


def peak_rss_of(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; return (peak RSS of it and its children in MiB, wall seconds, CPU seconds)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    ps, peak, done = psutil.Process(proc.pid), 0, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            try:
                procs = [ps, *ps.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    rc = proc.wait()
    done.set()
    t.join()
    if rc:
        raise SystemExit(f"benchmark child failed ({rc}): {' '.join(cmd)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return peak / 2**20, time.perf_counter() - t0, cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--patch", type=int, default=16, help="ViT patch size (16: 197 tokens, 8: 785 tokens at 224 px)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", default="results/bench/memory.json")
    ap.add_argument("--stage", default="embed", choices=["embed", "split", "cluster", "prompts", "latents", "sd"])
    ap.add_argument(
        "--files", type=int, default=20, help="tile files (slides, one case each) the N patches come in (--stage split)"
    )
    ap.add_argument("--px", type=int, nargs="+", default=[256, 512], help="--stage sd: resolutions")
    ap.add_argument("--train-batches", type=int, nargs="+", default=[1, 2], help="--stage sd: LoRA batch sizes")
    ap.add_argument("--full-px", type=int, nargs="*", default=[256], help="--stage sd: resolutions of a full fine-tune")
    ap.add_argument("--train-steps", type=int, default=2, help="--stage sd: steps per training row")
    ap.add_argument("--sample-batch", type=int, default=8, help="--stage sd: sampling.batch_size")
    ap.add_argument(
        "--sd-jobs",
        nargs="+",
        default=["images", "prompts", "lora", "full", "sample"],
        choices=["images", "prompts", "lora", "full", "sample"],
        help="--stage sd: the rows to run (sample and the training rows need the images and prompts rows' files)",
    )
    ap.add_argument(
        "--no-validation", action="store_true", help="--stage sd: train without the final validation grid (faster)"
    )
    ap.add_argument("--sd-patches", type=int, default=32, help="--stage sd: training patches")
    ap.add_argument("--workdir", default="/tmp/histosynth-memory-sd", help="--stage sd: the base and data, kept")
    ap.add_argument(
        "--sd-base", default="sd15-random", choices=["sd15-random", "tiny"], help="--stage sd: tiny checks the script"
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        kind, *args = a.child
        return {
            "embed": lambda: child(*args, a.batch_size, a.workers),
            "split": lambda: split_child(*args),
            "cluster": lambda: cluster_child(*args),
            "prompts": lambda: prompts_child(*args),
            "latents": lambda: latents_child(*args),
            "sd": lambda: sd_child(*args),
        }[kind]()
    if a.stage == "sd":
        rows = sd_rows(a)
        print(f"\n{'rule':24s} {'px':>4s} {'batch':>5s} {'peak RSS MiB':>13s} {'CPU s':>7s} {'mem_mb':>7s}")
        for r in rows:
            print(
                f"{r['rule']:24s} {r['px']:4d} {r['batch'] or '':>5} {r['peak_rss_mib']:13.0f} "
                f"{r['cpu_seconds']:7.0f} {r['rule_mem_mb']:7d}"
            )
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if a.stage == "embed":
            make_embedder(d / "emb", a.layers, a.patch)
        elif a.stage in ("prompts", "latents"):
            make_latent_base(d / "base")
        for n in a.sizes:
            if a.stage == "split":
                make_slide_files(d / f"tiles{n}", n, -(-n // a.files))
                args = ["split", str(d / f"tiles{n}"), str(d / f"out{n}")]
            elif a.stage == "cluster":
                make_patches(d / f"p{n}.h5", int(0.7 * n))
                args = ["cluster", str(d / f"p{n}.h5"), str(d / f"out{n}"), str(n)]
            elif a.stage in ("prompts", "latents"):
                make_patches(d / f"p{n}.h5", n)
                args = [a.stage, str(d / f"p{n}.h5"), str(d / "base"), str(d / f"out{n}")]
            else:
                make_patches(d / f"p{n}.h5", n)
                args = ["embed", str(d / f"p{n}.h5"), str(d / "emb"), str(d / f"e{n}.h5")]
            cmd = [
                sys.executable,
                __file__,
                "--batch-size",
                str(a.batch_size),
                "--workers",
                str(a.workers),
                "--child",
                *args,
            ]
            mib, sec, cpu = peak_rss_of(cmd)
            rows.append({"patches": n, "peak_rss_mib": mib, "seconds": sec, "cpu_seconds": cpu})
            print(f"N={n}: peak {mib:.0f} MiB in {sec:.0f} s ({cpu:.0f} s CPU)", flush=True)
    base = rows[0]
    if a.stage != "embed":
        print(f"\nstage {a.stage}, {os.cpu_count()} CPUs")
        for r in rows:
            r["ratio"] = r["peak_rss_mib"] / base["peak_rss_mib"]
            print(
                f"{r['patches']:8d} patches: peak {r['peak_rss_mib']:.0f} MiB ({r['ratio']:.2f}x), {r['seconds']:.0f} s "
                f"({r['seconds'] / base['seconds']:.2f}x), {r['cpu_seconds']:.0f} s CPU"
            )
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"stage": a.stage, "cpus": os.cpu_count(), "rows": rows}, indent=2))
        return
    tokens = (224 // a.patch) ** 2 + 1
    print(
        f"\nViT-B/{a.patch} random weights, {a.layers} layers, 224 px ({tokens} tokens x 768), batch {a.batch_size}, "
        f"{a.workers} DataLoader workers, {os.cpu_count()} CPUs"
    )
    print(f"{'patches':>8s} {'peak RSS MiB':>13s} {'vs first':>9s} {'KiB/patch growth':>17s} {'s':>6s}")
    for r in rows:
        growth = (r["peak_rss_mib"] - base["peak_rss_mib"]) * 1024 / max(r["patches"] - base["patches"], 1)
        r["ratio"] = r["peak_rss_mib"] / base["peak_rss_mib"]
        r["kib_per_patch_growth"] = growth if r is not base else 0.0
        print(
            f"{r['patches']:8d} {r['peak_rss_mib']:13.0f} {r['ratio']:8.2f}x {r['kib_per_patch_growth']:17.1f} {r['seconds']:6.0f}"
        )
    print(f"(the hidden state alone is {tokens * 768 * 4 / 1024:.0f} KiB per patch: what the old code kept)")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(
        json.dumps(
            {
                "layers": a.layers,
                "patch": a.patch,
                "workers": a.workers,
                "batch_size": a.batch_size,
                "cpus": os.cpu_count(),
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
