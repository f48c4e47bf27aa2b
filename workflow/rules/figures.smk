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
    "claims": "0. Claims against controls",
    "knowledge": "1. Knowledge decomposition",
    "learnability": "2. Preserved-learnability ratio",
    "convergence": "3. Convergence of knowledge",
    "similarity": "3. Convergence of knowledge",
    "benefit": "4. Training curves",
    "training": "4. Training curves",
    "examples": "5. Examples",
    "sensitivity": "6. Sensitivity to the analysis choices",
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


GLOBAL_FIGURE_INPUTS = {
    "benefit": {"metrics": [L.metrics(e) for e in EXPERIMENTS]},
    "convergence": {
        "similarity": [L.knowledge_table(e, "similarity") for e in EXPERIMENTS],
        "measures": [L.knowledge_table(e, "measures") for e in EXPERIMENTS],
    },
    "learnability": {
        "learnability": [L.knowledge_table(e, "learnability") for e in EXPERIMENTS]
    },
    "sensitivity": {"sensitivity": [L.sensitivity_table(e) for e in EXPERIMENTS]},
}


for _figure in GLOBAL_FIGURE_INPUTS:

    rule:
        name:
            f"figure_{_figure}"
        input:
            **GLOBAL_FIGURE_INPUTS[_figure],
        output:
            png=report(
                L.figure(None, _figure, "png"),
                caption=f"../report/{_figure}.rst",
                category=REPORT_CATEGORIES[_figure],
            ),
            pdf=L.figure(None, _figure, "pdf"),
        log:
            L.log(None, "figures", _figure),
        conda:
            ENV
        params:
            name=_figure,
            inputs=figure_args,
            settings=as_json(spec.to_plain(CONFIG.figures)),
            code=code("figure"),
        shell:
            "python -m pretrain_knowledge figure {params.name} {params.inputs} "
            "--settings {params.settings:q} --png {output.png:q} --pdf {output.pdf:q} "
            "> {log:q} 2>&1"
