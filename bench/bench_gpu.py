"""Stable Diffusion-size training and sampling on a GPU: histosynth's trainer against diffusers' own examples.

Models: SD 1.5-sized and randomly initialised where real weights are absent (UNet 860 M parameters,
VAE 84 M, CLIP ViT-L/14 text encoder 123 M, the real CLIP tokenizer), or a real SD folder given by --base.
Patches: crops of scikit-image's real IHC tissue image at each --size, written as a patch file (and as a
PNG image folder with captions for the diffusers scripts). At each size, one process measures:

- histosynth's `fine_tune` (train.method lora, then full) on the latent cache: steady-state steps/s
  (the steps after --warmup), peak GPU memory, GPU utilisation (NVML samples over the same steps), and
  the share of step time the training loop waits for its batch (`batches_ahead`: the HDF5 read of
  cached posteriors and the noise, drawn on the CPU one step ahead, while the GPU waits);
- diffusers' `examples/text_to_image/train_text_to_image_lora.py` and `train_text_to_image.py` from a
  diffusers checkout (--diffusers-examples; skipped with a reason when absent) on the same base, patches,
  resolution, batch, steps, precision and learning rate: they run the VAE and the text encoder on every
  batch (no latent cache), fed by a DataLoader with workers. Their steps/s is read from the arrival time
  of their progress-bar updates, over the same steps;
- sampling images/s per scheduler (histosynth's `load_pipeline` + `generate`: plain diffusers, fp16,
  CFG 7.5), after one warm-up call.

Both trainers use the same settings: batch --batch, --steps steps, bf16, AdamW at 1e-4 with a constant
schedule, LoRA rank 4 on to_q/to_k/to_v/to_out.0 (or the whole UNet), no min-SNR, no prompt dropout,
no gradient checkpointing, random flips.

    python bench/bench_gpu.py --sizes 256 512 --diffusers-examples ../diffusers/examples/text_to_image

With --base tiny --device cpu it runs end to end on a CPU (a check of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from histosynth.config import default_config  # noqa: E402
from histosynth.device import pick_device  # noqa: E402
from histosynth.diffusion import train as train_module  # noqa: E402
from histosynth.diffusion.latents import cache_latents  # noqa: E402
from histosynth.diffusion.sample import generate, load_pipeline  # noqa: E402
from histosynth.models.base_model import (  # noqa: E402
    assemble_pipeline,
    build_tiny_pipeline,
    check_base_model_dir,
    clip_text_encoder,
)
from histosynth.models.clip_tokenizer import build_clip_tokenizer, load_tokenizer  # noqa: E402
from histosynth.patchfile import PatchBatch, PatchFile, PatchFileSpec, PatchWriter  # noqa: E402
from histosynth.text.prompts import build_prompts, token_counter  # noqa: E402

LABELS = ["dab_negative", "dab_positive"]
SCHEDULERS = ("ddim", "dpmsolver++", "euler", "unipc")


# ----- models and data --------------------------------------------------------------------------------


def build_sd15_sized_pipeline(tokenizer_dir, device: str, seed: int = 0):
    """Stable Diffusion 1.5's architecture (its published configs) with random weights; the CLIP tokenizer
    of ``tokenizer_dir`` when it holds one, else built there from open_clip's vocabulary."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    have = (Path(tokenizer_dir) / "vocab.json").is_file()
    tokenizer = load_tokenizer(str(tokenizer_dir)) if have else build_clip_tokenizer(tokenizer_dir)
    with torch.device(device):  # random init on the GPU: minutes faster than on the CPU at this size
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_encoder = clip_text_encoder(
            tokenizer,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            projection_dim=768,
            hidden_act="quick_gelu",
        )
    return assemble_pipeline(unet, vae, text_encoder, tokenizer)


def prepare_base(name: str, work: Path, device: str, tokenizer: str | None) -> Path:
    """A diffusers folder for --base: `sd15-random`, `tiny`, or an existing SD folder (used as is)."""
    if name not in ("sd15-random", "tiny"):
        check_base_model_dir(name)
        return Path(name)
    out = work / f"base-{name}"
    if not (out / "model_index.json").is_file():  # kept between runs of the bench in the same --workdir
        t0 = time.perf_counter()
        if name == "tiny":
            pipe = build_tiny_pipeline(work / "tokenizer-tiny")
        else:
            pipe = build_sd15_sized_pipeline(tokenizer or work / "tokenizer-sd15", device)
        pipe.save_pretrained(out, safe_serialization=True)
        print(f"built {name} base in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def tissue_patches(size: int, n: int, seed: int = 0) -> np.ndarray:
    """n real-tissue crops of size px: scikit-image's IHC image scaled so a crop covers ~a quarter of it."""
    from PIL import Image
    from skimage import data

    ihc = Image.fromarray(data.immunohistochemistry())
    scale = max(1.0, 2 * size / min(ihc.size))
    big = np.asarray(ihc.resize((round(ihc.width * scale), round(ihc.height * scale)), Image.BICUBIC))
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, big.shape[0] - size + 1, n)
    xs = rng.integers(0, big.shape[1] - size + 1, n)
    return np.stack([big[y : y + size, x : x + size] for y, x in zip(ys, xs)])


def write_data(folder: Path, size: int, n: int, base: Path, cfg: dict) -> tuple[Path, Path, Path]:
    """The patch file + prompts of histosynth, and the same images and captions as a diffusers image folder."""
    import pandas as pd
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    imgs = tissue_patches(size, n)
    # the class by how brown the patch is (DAB), as the demo's labels do
    labels = (imgs[..., 2].astype(int) - imgs[..., 0].astype(int)).mean(axis=(1, 2)) < np.median(
        (imgs[..., 2].astype(int) - imgs[..., 0].astype(int)).mean(axis=(1, 2))
    )
    spec = PatchFileSpec(
        size,
        LABELS,
        dict(patch_size=size, patch_level=0, downsample=np.array([1.0, 1.0]), mpp=0.5, magnification=20.0),
    )
    patch_h5 = folder / "patches.h5"
    with PatchWriter(patch_h5, spec) as w:
        w.append(
            PatchBatch(imgs, np.zeros((n, 2)), labels.astype(int).tolist(), ["ihc"] * n, ["case"] * n, np.full(n, 0.5))
        )
    tok = load_tokenizer(str(base / "tokenizer"))
    prompts_tsv = folder / "prompts.tsv"
    build_prompts("label", patch_h5, cfg["prompts"], token_counter(tok), 77, out_tsv=prompts_tsv)
    image_dir = folder / "imagefolder"
    image_dir.mkdir(exist_ok=True)
    prompts = pd.read_csv(prompts_tsv, sep="\t", keep_default_na=False)["prompt"].tolist()
    with open(image_dir / "metadata.jsonl", "w") as meta:
        for i, (img, prompt) in enumerate(zip(imgs, prompts)):
            Image.fromarray(img).save(image_dir / f"{i:05d}.png")
            meta.write(json.dumps({"file_name": f"{i:05d}.png", "text": prompt}) + "\n")
    return patch_h5, prompts_tsv, image_dir


# ----- measuring --------------------------------------------------------------------------------------


class GpuSampler:
    """NVML utilisation and memory every 50 ms, with timestamps (no samples on a machine without NVML)."""

    def __init__(self):
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVIDIA driver or no nvidia-ml-py: report no utilisation
            self._nvml = None

    def __enter__(self):
        if self._nvml:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            u = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            mem = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**30
            self.samples.append((time.perf_counter(), u.gpu, mem))
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()

    def window(self, t0: float, t1: float) -> dict:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if not inside:
            return {"gpu_util_pct": None, "nvml_mem_gib": None}
        return {
            "gpu_util_pct": round(float(np.mean([s[1] for s in inside])), 1),
            "nvml_mem_gib": round(max(s[2] for s in inside), 2),
        }


def settings(path: str | None) -> dict:
    """The config sections the bench uses, with the schema's defaults: made by ``default_config`` (which
    validates with snakemake) and written to ``path``, or read from ``path`` on a machine without snakemake."""
    if path and Path(path).is_file():
        saved = json.loads(Path(path).read_text())
        try:
            import snakemake  # noqa: F401
        except ImportError:  # the trainer's own checks ask for the defaults too: give them the saved ones
            import histosynth.config

            histosynth.config.default_config = lambda **over: {**json.loads(json.dumps(saved)), **over}
        return saved
    cfg = default_config()
    out = {k: cfg[k] for k in ("train", "sampling", "prompts")}
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(out, indent=1))
    return out


def train_settings(defaults: dict, method: str, steps: int, batch: int, device: str, size: int) -> dict:
    return dict(
        defaults,
        **{
            "method": method,
            "resolution": size,
            "max_steps": steps,
            "batch_size": batch,
            "learning_rate": 1e-4,
            "lr_scheduler": "constant",
            "lr_warmup_steps": 0,
            "snr_gamma": None,
            "prompt_dropout": 0.0,
            "mixed_precision": "bf16" if device == "cuda" else "no",
            "checkpoint_every": 10**6,
            "validation_every": 10**6,
            "validation_images_per_class": 1,
            "device": device,
        },
    )


def ours(
    method: str,
    lat_h5: Path,
    base: Path,
    work: Path,
    steps: int,
    warmup: int,
    batch: int,
    device: str,
    size,
    train_cfg,
    profile: bool = False,
):
    """histosynth's fine_tune, with the data path and the end of the last step timed from outside."""
    import torch

    waits: list[tuple[float, float]] = []
    ends: list[float] = []
    ahead, grid = train_module.batches_ahead, train_module.validation_grid

    def timed_ahead(*a, **k):  # how long each step waits for its batch (the GPU idles meanwhile)
        batches = ahead(*a, **k)
        while True:
            t = time.perf_counter()
            try:
                item = next(batches)
            except StopIteration:
                return
            waits.append((t, time.perf_counter()))
            yield item

    def timed_grid(*a, **k):  # runs after the last step only (validation_every is larger than --steps)
        ends.append(time.perf_counter())
        return grid(*a, **k)

    train_module.batches_ahead, train_module.validation_grid = timed_ahead, timed_grid
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    d = work / f"ours-{method}"
    profiler = None
    if profile:  # where the host's time goes, per function (the GPU runs asynchronously beside it)
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        with GpuSampler() as gpu:
            summary = train_module.fine_tune(
                lat_h5,
                base,
                d / "trained",
                d / "loss.tsv",
                d / "loss.png",
                d / "validation",
                d / "checkpoints",
                train_settings(train_cfg, method, steps, batch, device, size),
                progress=False,
            )
    finally:
        train_module.batches_ahead, train_module.validation_grid = ahead, grid
        if profiler is not None:
            import pstats

            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    t0, t1 = waits[warmup][0], ends[0]
    data_s = sum(b - a for a, b in waits[warmup:])
    return {
        "trainer": f"histosynth {method} (latent cache)",
        "steps_per_s": round((steps - warmup) / (t1 - t0), 3),
        "images_per_s": round((steps - warmup) * batch / (t1 - t0), 2),
        "data_path_share": round(data_s / (t1 - t0), 3),
        "peak_torch_gib": round(summary.get("peak_gpu_mem_gb") or 0, 2) or None,
        **gpu.window(t0, t1),
    }


STEP_UPDATE = re.compile(r"Steps:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")


def diffusers_example(
    script: Path, base: Path, image_dir: Path, work: Path, steps: int, warmup: int, batch: int, size: int, device, a
):
    """One of diffusers' example trainers as a user runs it; steps/s from its progress bar's updates."""
    out = work / f"example-{script.stem}"
    args = [
        sys.executable,
        str(script.resolve()),
        f"--pretrained_model_name_or_path={base.resolve()}",
        f"--train_data_dir={image_dir.resolve()}",
        f"--resolution={size}",
        "--random_flip",
        f"--train_batch_size={batch}",
        f"--max_train_steps={steps}",
        "--learning_rate=1e-4",
        "--lr_scheduler=constant",
        "--lr_warmup_steps=0",
        f"--mixed_precision={'bf16' if device == 'cuda' else 'no'}",
        f"--dataloader_num_workers={a.example_workers}",
        "--checkpointing_steps=1000000",
        "--seed=0",
        f"--report_to={a.report_to}",
        f"--output_dir={out.resolve()}",
    ]
    if "lora" in script.stem:
        args.append("--rank=4")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    seen: dict[int, float] = {}
    log_lines = []
    with GpuSampler() as gpu:
        stdout = open(work / f"example-{script.stem}.stdout", "w")
        proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=stdout, env=env, cwd=work)
        buf = b""
        while True:  # tqdm redraws with \r: time every redraw as it arrives
            chunk = proc.stderr.read1(4096) if hasattr(proc.stderr, "read1") else proc.stderr.read(4096)
            if not chunk:
                break
            now = time.perf_counter()
            buf += chunk
            *parts, buf = re.split(rb"[\r\n]", buf)
            for part in parts:
                text = part.decode(errors="replace")
                m = STEP_UPDATE.search(text)
                if m:
                    seen.setdefault(int(m.group(1)), now)
                elif text.strip():
                    log_lines.append(text)
        rc = proc.wait()
        stdout.close()
    (work / f"example-{script.stem}.log").write_text("\n".join(log_lines))
    if rc != 0 or steps not in seen:
        return {"trainer": f"diffusers {script.name}", "error": f"exit {rc}; last lines: {log_lines[-5:]}"}
    first = min(k for k in seen if k >= warmup)
    t0, t1 = seen[first], seen[steps]
    return {
        "trainer": f"diffusers {script.name} (VAE + text encoder every step)",
        "steps_per_s": round((steps - first) / (t1 - t0), 3),
        "images_per_s": round((steps - first) * batch / (t1 - t0), 2),
        "data_path_share": None,
        "peak_torch_gib": None,
        **gpu.window(t0, t1),
    }


def sampling(base: Path, model_dir: Path, size: int, n_images: int, steps: int, device: str, defaults) -> list[dict]:
    import torch

    rows = []
    cfg = dict(defaults, steps=steps)
    for name in SCHEDULERS:
        pipe = load_pipeline(base, model_dir, name, device)
        generate(pipe, ["warm-up"], [0], dict(cfg, steps=2), size)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        finite = True
        try:
            generate(pipe, ["Histology image of DAB-positive tissue"] * n_images, list(range(n_images)), cfg, size)
        except FloatingPointError:  # random weights in fp16 can overflow; the time is what is measured here
            finite = False
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "scheduler": name,
                "steps": steps,
                "batch": n_images,
                "images_per_s": round(n_images / seconds, 3),
                "peak_torch_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
                "finite_pixels": finite,
            }
        )
        print(json.dumps({"size": size, **rows[-1]}), flush=True)
        del pipe
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--base", default="sd15-random", help="sd15-random, tiny, or a diffusers SD folder")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10, help="first steps left out of steps/s")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patches", type=int, default=128)
    ap.add_argument("--n-images", type=int, default=16, help="images per sampling call")
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--methods", nargs="+", default=["lora", "full"])
    ap.add_argument("--no-sampling", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile histosynth's training runs (host time)")
    ap.add_argument("--diffusers-examples", default=None, help="diffusers' examples/text_to_image folder")
    ap.add_argument("--example-workers", type=int, default=4, help="the examples' --dataloader_num_workers")
    ap.add_argument("--report-to", default="tensorboard", help="the examples' --report_to (their default)")
    ap.add_argument("--workdir", default="/tmp/histosynth-gpu-bench")
    ap.add_argument("--tokenizer", default=None, help="a CLIP tokenizer folder for sd15-random (else open_clip's)")
    ap.add_argument("--settings", default=None, help="JSON of the config sections (written if absent)")
    ap.add_argument("--json", default="results/bench/gpu.json")
    a = ap.parse_args(argv)
    device = pick_device(a.device)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    base = prepare_base(a.base, work, device, a.tokenizer)
    cfg = settings(a.settings)
    result = {"device": device, "base": a.base, "steps": a.steps, "warmup": a.warmup, "batch": a.batch, "sizes": {}}
    if device == "cuda":
        import torch

        result["gpu"] = torch.cuda.get_device_name(0)
        result["torch"] = torch.__version__
    examples = Path(a.diffusers_examples) if a.diffusers_examples else None
    if examples is None or not (examples / "train_text_to_image_lora.py").is_file():
        print(f"diffusers' example scripts: skipped (no --diffusers-examples folder with them: {examples})")
    for size in a.sizes:
        wd = work / f"{size}px"
        patch_h5, prompts_tsv, image_dir = write_data(wd / "data", size, a.patches, base, cfg)
        t0 = time.perf_counter()
        lat = wd / "latents.h5"
        cache_latents(patch_h5, prompts_tsv, base, lat, size, True, device=device, progress=False)
        row = {"latent_cache_s": round(time.perf_counter() - t0, 1), "training": [], "sampling": []}
        with PatchFile(patch_h5) as pf:
            row["patches"] = len(pf)
        for method in a.methods:
            r = ours(method, lat, base, wd, a.steps, a.warmup, a.batch, device, size, cfg["train"], a.profile)
            print(json.dumps({"size": size, **r}), flush=True)
            row["training"].append(r)
            if examples is not None and (examples / "train_text_to_image_lora.py").is_file():
                script = examples / ("train_text_to_image_lora.py" if method == "lora" else "train_text_to_image.py")
                r = diffusers_example(script, base, image_dir, wd, a.steps, a.warmup, a.batch, size, device, a)
                print(json.dumps({"size": size, **r}), flush=True)
                row["training"].append(r)
        if not a.no_sampling:
            model_dir = wd / f"ours-{a.methods[0]}" / "trained"
            row["sampling"] = sampling(base, model_dir, size, a.n_images, a.sample_steps, device, cfg["sampling"])
        result["sizes"][str(size)] = row
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2))  # after every size: a killed run keeps what it had
    print_table(result)


def print_table(result: dict) -> None:
    print(
        f"\n{result.get('gpu', result['device'])}; base {result['base']}; batch {result['batch']}; "
        f"steps/s over steps {result['warmup'] + 1}-{result['steps']}"
    )
    print(f"{'px':>4s}  {'trainer':58s} {'steps/s':>8s} {'img/s':>7s} {'GPU %':>6s} {'data %':>7s} {'GiB':>6s}")
    for size, row in result["sizes"].items():
        for r in row["training"]:
            if "error" in r:
                print(f"{size:>4s}  {r['trainer']:58s} {r['error'][:80]}")
                continue
            util = "-" if r["gpu_util_pct"] is None else f"{r['gpu_util_pct']:.0f}"
            share = "-" if r["data_path_share"] is None else f"{100 * r['data_path_share']:.1f}"
            mem = r["peak_torch_gib"] or r["nvml_mem_gib"]
            print(
                f"{size:>4s}  {r['trainer']:58s} {r['steps_per_s']:8.2f} {r['images_per_s']:7.1f} {util:>6s} "
                f"{share:>7s} {'-' if mem is None else f'{mem:.1f}':>6s}"
            )
        for r in row["sampling"]:
            mem = "" if r["peak_torch_gib"] is None else f"  {r['peak_torch_gib']:.1f} GiB"
            print(
                f"{size:>4s}  sampling {r['scheduler']:12s} {r['steps']} steps, batch {r['batch']:<3d}"
                f"{'':22s} {r['images_per_s']:8.2f} img/s{mem}"
            )


if __name__ == "__main__":
    main()
