# The paper's claims against their controls, across all experiments (method.md §7).


rule claims:
    """Every claim with intervals, paired tests and a verdict, per experiment and pooled."""
    input:
        measures=[L.knowledge_table(e, "measures") for e in EXPERIMENTS],
        metrics=[L.metrics(e) for e in EXPERIMENTS],
        predictions=[
            L.predictions(e, m) for e in EXPERIMENTS for m in ("finetune", "scratch")
        ],
        variants=[
            L.variant_measures(name, v)
            for name, e in EXPERIMENTS.items()
            for v in e.variants()
        ],
    output:
        table=L.claims_table(),
        report=L.claims_report(),
    log:
        L.log(None, "claims"),
    conda:
        ENV
    params:
        inputs=lambda wc: as_json(claims_inputs()),
        code=code("claims"),
    shell:
        "python -m pretrain_knowledge claims --inputs {params.inputs:q} "
        "--table {output.table:q} --report {output.report:q} > {log:q} 2>&1"


rule figure_claims:
    """The claims as a forest plot: the first figure of the report."""
    input:
        claims=rules.claims.output.table,
    output:
        png=report(
            L.figure(None, "claims", "png"),
            caption="../report/claims.rst",
            category=REPORT_CATEGORIES["claims"],
        ),
        pdf=L.figure(None, "claims", "pdf"),
    log:
        L.log(None, "figures", "claims"),
    conda:
        ENV
    params:
        inputs=figure_args,
        settings=as_json(spec.to_plain(CONFIG.figures)),
        code=code("figure"),
    shell:
        "python -m pretrain_knowledge figure claims {params.inputs} --settings {params.settings:q} "
        "--png {output.png:q} --pdf {output.pdf:q} > {log:q} 2>&1"
