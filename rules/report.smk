# The report: one self-contained HTML page comparing every experiment, plus its tables for
# Snakemake's own --report. It reads only the files report_inputs (rules/common.smk) declares.


rule html_report:
    input:
        unpack(report_inputs),
    output:
        html=report(
            "results/html_report/index.html",
            caption="../report/html_report.rst",
            category="0. Answer",
            labels={"page": "histosynth report (open in a browser)"},
        ),
        metrics=report(
            "results/html_report/metrics.tsv",
            caption="../report/metrics_table.rst",
            category="0. Answer",
            labels={"page": "metric table"},
        ),
        verdicts=report(
            "results/html_report/verdicts.tsv",
            caption="../report/verdicts.rst",
            category="0. Answer",
            labels={"page": "verdicts"},
        ),
    log:
        "results/logs/html_report/report.log",
    benchmark:
        "results/benchmarks/html_report/report.tsv"
    conda:
        "../envs/data.yaml"
    params:
        # the page prints the full configuration, so every key is a parameter
        config=config,
    script:
        "../workflow_scripts/html_report.py"
