rule knowledge:
    """Preserved, discarded and new knowledge, learnability and convergence (method.md §4)."""
    input:
        interaction_shards,
    output:
        **{t: L.knowledge_table("{experiment}", t) for t in L.KNOWLEDGE_TABLES},
    log:
        L.log("{experiment}", "knowledge"),
    conda:
        ENV
    params:
        settings=lambda wc: as_json(exp(wc).knowledge_settings()),
        out=lambda wc, output: " ".join(
            f"--out {t}={getattr(output, t)}" for t in L.KNOWLEDGE_TABLES
        ),
        code=code("knowledge"),
    shell:
        "python -m pretrain_knowledge knowledge {input:q} --experiment {wildcards.experiment} "
        "--settings {params.settings:q} {params.out} > {log:q} 2>&1"
