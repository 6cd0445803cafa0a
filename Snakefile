# histosynth: whole-slide images and patch datasets -> prompts -> LoRA Stable Diffusion ->
# filtered synthetic patches -> evaluation report. See README.md and docs/DESIGN.md.
import os
import sys

from snakemake.utils import min_version

min_version("9.0")


# Config layering: schema defaults + exactly the files named with --configfile (then --config
# k=v); the demo config/config.yaml applies only when no config file is named, so a preset or a
# user's config never inherits the demo's experiments, reports or tissue thresholds.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


# a failed job's own one-line error (workflow_scripts/_common.py) is repeated after snakemake's
# error block, so the last lines on the console say what is wrong and which log to open
FAILURES = ".snakemake/histosynth-failures.txt"


onstart:
    if os.path.exists(FAILURES):
        os.remove(FAILURES)


onerror:
    if os.path.exists(FAILURES):
        with open(FAILURES) as f:
            failed = f.read()
        print(f"\nhistosynth: what failed (fix it, then rerun the same command):\n{failed}", file=sys.stderr)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/morphology.smk"
include: "rules/text.smk"
include: "rules/classifier.smk"
include: "rules/diffusion.smk"
include: "rules/evaluation.smk"
include: "rules/model_card.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
