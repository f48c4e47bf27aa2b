# The figures of method.md §6, as PNG (in the report) and PDF. Each per-experiment figure reads
# the tables named in FIGURE_INPUTS.

FIGURE_INPUTS = {
    "knowledge": {"decomposition": L.knowledge_table("{experiment}", "decomposition")},
    "similarity": {"similarity": L.knowledge_table("{experiment}", "similarity")},
    "training": {"metrics": L.metrics("{experiment}")},
    "examples": {
        "selection": L.selection("{experiment}"),
        "members": L.knowledge_table("{experiment}", "members"),
    },
}
REPORT_CATEGORIES = {
    "knowledge": "1. Knowledge decomposition",
    "learnability": "2. Preserved-learnability ratio",
    "similarity": "3. Convergence of knowledge",
    "training": "4. Training curves",
    "examples": "5. Examples",
}


for _figure in L.EXPERIMENT_FIGURES:

    rule:
        name:
            f"figure_{_figure}"
        input:
            **FIGURE_INPUTS[_figure],
        output:
            png=report(
                L.figure("{experiment}", _figure, "png"),
                caption=f"../report/{_figure}.rst",
                category=REPORT_CATEGORIES[_figure],
                subcategory="{experiment}",
            ),
            pdf=L.figure("{experiment}", _figure, "pdf"),
        log:
            L.log("{experiment}", "figures", _figure),
        conda:
            ENV
        params:
            name=_figure,
            inputs=figure_args,
            settings=as_json(spec.to_plain(CONFIG.figures)),
            code=code("figure"),
        shell:
            "python -m pretrain_knowledge figure {params.name} {params.inputs} --title {wildcards.experiment} "
            "--settings {params.settings:q} --png {output.png:q} --pdf {output.pdf:q} "
            "> {log:q} 2>&1"


rule figure_learnability:
    """Preserved-learnability ratio of every experiment (paper's Figure 3)."""
    input:
        learnability=[L.knowledge_table(e, "learnability") for e in EXPERIMENTS],
    output:
        png=report(
            L.figure(None, "learnability", "png"),
            caption="../report/learnability.rst",
            category=REPORT_CATEGORIES["learnability"],
        ),
        pdf=L.figure(None, "learnability", "pdf"),
    log:
        L.log(None, "figures", "learnability"),
    conda:
        ENV
    params:
        inputs=lambda wc, input: " ".join(f"--input learnability={t}" for t in input),
        settings=as_json(spec.to_plain(CONFIG.figures)),
        code=code("figure"),
    shell:
        "python -m pretrain_knowledge figure learnability {params.inputs} --settings {params.settings:q} "
        "--png {output.png:q} --pdf {output.pdf:q} > {log:q} 2>&1"
