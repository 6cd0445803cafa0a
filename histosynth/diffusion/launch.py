"""``train.num_processes``: training in several processes of one node, started with ``accelerate
launch`` (one GPU each, or CPU processes talking over gloo); one process runs ``fine_tune`` in this
process as before.

``launch_fine_tune`` writes the call's arguments to a JSON file and runs ``accelerate launch -m
histosynth.diffusion.launch <job.json>``; every process it starts runs ``fine_tune`` (which splits
the batches and leaves all writing to the main process, see ``train.py``), and the main process
writes the summary back into the job folder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from ..device import pick_device
from ..errors import InputError

ARGS = ("latents_h5", "base_dir", "out_dir", "loss_tsv", "curve_png", "validation_dir", "checkpoint_root")


def launch_command(num_processes: int, job_json, threads: int = 1) -> list[str]:
    """``accelerate launch`` of this module's ``main`` in ``num_processes`` processes."""
    with socket.socket() as s:  # a free port, so trainings side by side on one node do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # --multi_gpu is accelerate's torchrun launcher; on the CPU (``--cpu`` would start one process) each
    # process's Accelerator(cpu=True) joins over gloo. Precision is train.mixed_precision, set in code.
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        str(max(1, threads // num_processes)),
        "-m",
        "histosynth.diffusion.launch",
        str(job_json),
    ]


def launch_fine_tune(
    latents_h5,
    base_dir,
    out_dir,
    loss_tsv,
    curve_png,
    validation_dir,
    checkpoint_root,
    cfg: dict,
    progress: bool = True,
    threads: int = 1,
) -> dict:
    """``fine_tune`` in ``cfg["num_processes"]`` processes; returns the main process's summary."""
    from .train import fine_tune

    paths = (latents_h5, base_dir, out_dir, loss_tsv, curve_png, validation_dir, checkpoint_root)
    n = cfg["num_processes"]
    if n == 1:
        return fine_tune(*paths, cfg, progress=progress)
    device = pick_device(cfg["device"])
    if device == "mps":
        raise InputError(
            f"train.num_processes = {n} needs CUDA GPUs or the CPU; this machine trains on mps: set it to 1"
        )
    if device == "cuda":
        import torch

        if torch.cuda.device_count() < n:
            raise InputError(
                f"train.num_processes = {n} but only {torch.cuda.device_count()} GPU(s) are visible; "
                f"lower it or request {n} GPUs"
            )
    with tempfile.TemporaryDirectory(prefix="histosynth-launch-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(
            json.dumps(
                {
                    "args": {k: str(Path(v).resolve()) for k, v in zip(ARGS, paths)},
                    "cfg": cfg,
                    "progress": progress,
                    "summary": str(Path(tmp) / "summary.json"),
                }
            )
        )
        # its own session, so that a stop of this job stops every process the launcher started
        proc = subprocess.Popen(launch_command(n, job, threads), start_new_session=True)
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        if code != 0:
            raise RuntimeError(
                f"accelerate launch of {n} training processes exited with status {code} (see the log above)"
            )
        return json.loads((Path(tmp) / "summary.json").read_text())


def main(job_json) -> None:
    """One process of a launch: ``fine_tune``, and the summary from the main process."""
    import logging

    from ..atomic import install_signal_cleanup, watch_parents
    from .train import fine_tune

    install_signal_cleanup()
    watch_parents()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = json.loads(Path(job_json).read_text())
    summary = fine_tune(*(job["args"][k] for k in ARGS), job["cfg"], progress=job["progress"])
    if "process" not in summary:  # the main process's summary
        Path(job["summary"]).write_text(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1])
