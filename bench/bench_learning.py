"""Does the demo learn? Numbers of one finished, seeded workflow run (issue #10, item 4).

Reads a working directory in which the workflow has run with ``base_model: tiny`` (``make demo``)
and prints, as a Markdown table and as JSON:

- FD between the real test patches and synthetic patches drawn with label prompts from the
  untrained tiny base (``results/models/base_untrained``), the pretrained base
  (``results/models/base``) and each experiment's final model (its ``raw.h5``), all with the
  feature extractor and the reference features the run itself used (``results/eval/reference``);
- raw agreement (macro F1 vs the prompt's class) by the filter classifier and by the independent
  judge (``evaluate_agreement``), the filter's acceptance
  per class (every round), and the synthetic-only and real+synthetic AUC of ``evaluate_downstream``.

    .venv/bin/python bench/bench_learning.py [--workdir .] [--json bench_learning.json]

The base samples use the run's own ``sample`` settings and seeds (``per_class`` images per class),
so a rerun on the same results prints the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from histosynth.config import load_config  # noqa: E402
from histosynth.diffusion.sample import generate, load_pipeline  # noqa: E402
from histosynth.evaluation.features import (  # noqa: E402
    REFERENCE_FILE,
    harmonise,
    make_extractor,
    read_features,
    reference_field,
)
from histosynth.evaluation.metrics import frechet  # noqa: E402
from histosynth.patchfile import PatchFile  # noqa: E402
from histosynth.text.prompts import label_text  # noqa: E402

EXTRACTOR_MODEL = {"classifier": "results/eval/judge/model", "backbone": "results/models/embedder", "inception": None}


def base_samples(
    base: Path, label_names: list[str], cfg: dict, prompts_cfg: dict, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images per class from the label prompt, seeds ``sampling.seed + i`` as the workflow draws them."""
    labels = np.repeat(np.arange(len(label_names)), cfg["per_class"])
    prompts = [prompts_cfg["label_template"].format(label=label_text(label_names[c], prompts_cfg)) for c in labels]
    pipe = load_pipeline(base, None, cfg["scheduler"], "cpu")
    seeds = cfg["seed"] + np.arange(len(labels))
    imgs = np.concatenate(
        [
            generate(pipe, prompts[s : s + 8], seeds[s : s + 8].tolist(), cfg, resolution)
            for s in range(0, len(labels), 8)
        ]
    )
    return imgs, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    wd = Path(args.workdir).resolve()
    cfg = load_config(wd / args.config)
    ev = cfg["evaluation"]
    ref = wd / REFERENCE_FILE.format(kind=ev["feature_extractor"], field=reference_field(cfg["train"]))
    rf, _, rattrs = read_features(ref)
    kind = str(rattrs["kind"])
    model = EXTRACTOR_MODEL[kind]
    extract, info = make_extractor(
        kind, {**ev, "device": "cpu"}, wd / model if model else None, cfg["embedding"]["pooling"]
    )
    px = rattrs["geometry"]["px"]
    with PatchFile(wd / "results/splits/train.h5") as pf:
        names = list(pf.label_names)
    resolution = cfg["train"]["resolution"] or cfg["tiling"]["patch_size"]

    def fd_of(imgs: np.ndarray) -> float:
        return float(frechet(rf, extract(harmonise(imgs, px))))

    rows = []
    for label, base in (
        ("untrained tiny base", "results/models/base_untrained"),
        ("pretrained base", "results/models/base"),
    ):
        imgs, _ = base_samples(wd / base, names, cfg["sampling"], cfg["prompts"], resolution)
        rows.append({"model": label, "fd": fd_of(imgs)})
    for exp in cfg["experiments"]:
        with PatchFile(wd / f"results/synthetic/{exp}/raw.h5") as pf:
            fd = fd_of(pf.read(np.arange(len(pf))))
        agreement = json.loads((wd / f"results/eval/{exp}/agreement.json").read_text())
        raw_f1 = agreement["filter_classifier"]["sets"]["raw"].get("macro_f1")
        judge_f1 = agreement["judge"]["sets"]["raw"].get("macro_f1")  # the independent classifier (seed 1)
        acc = pd.read_csv(wd / f"results/synthetic/{exp}/acceptance.tsv", sep="\t")
        down = json.loads((wd / f"results/eval/{exp}/downstream.json").read_text())["results"]
        rows.append(
            {
                "model": f"experiment {exp}",
                "fd": fd,
                "raw_macro_f1": raw_f1,
                "raw_macro_f1_judge": judge_f1,
                "accepted_per_class": acceptance_per_class(acc, names),
                "auc_synthetic_only": down.get("synthetic_only", {}).get("macro_auc"),
                "auc_real_plus_synthetic": down.get("real_plus_synthetic", {}).get("macro_auc"),
            }
        )
    untrained = rows[0]["fd"]
    for r in rows:
        r["fd_vs_untrained"] = r["fd"] / untrained
    doc = {"workdir": str(wd), "extractor": info, "reference": str(ref), "n_reference": int(len(rf)), "rows": rows}
    print(f"features: {info['name']}; real reference: {len(rf)} patches of {rattrs['split']}\n")
    print(
        "| model | FD to real test | FD / untrained | raw macro F1, filter classifier / judge | accepted per class | AUC synthetic only | AUC real + synthetic |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        f1 = "" if r.get("raw_macro_f1") is None else f"{fmt(r['raw_macro_f1'])} / {fmt(r['raw_macro_f1_judge'])}"
        print(
            f"| {r['model']} | {r['fd']:.1f} | {r['fd_vs_untrained']:.2f} | {f1} | "
            f"{r.get('accepted_per_class', '')} | {fmt(r.get('auc_synthetic_only'))} | {fmt(r.get('auc_real_plus_synthetic'))} |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2, default=float))


def acceptance_per_class(acc: pd.DataFrame, names: list[str]) -> str:
    """'name accepted/requested' per class over all rounds (requested = tried in round 0), from the filter's table."""
    first = acc[acc["round"] == 0].set_index("label_name")["tried"]
    got = acc.groupby("label_name")["accepted"].sum()
    return ", ".join(f"{n} {int(got.get(n, 0))}/{int(first.get(n, 0))}" for n in names if n in first.index)


def fmt(v) -> str:
    return "" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    main()
