rule knowledge:
    """Preserved, discarded and new knowledge, learnability and convergence (method.md §4)."""
    input:
        LIB["knowledge"],
        shards=interaction_shards,
    output:
        **{
            table: f"results/{{experiment}}/knowledge/{table}.parquet"
            for table in KNOWLEDGE_TABLES
        },
    log:
        "results/{experiment}/logs/knowledge.log",
    conda:
        ENV
    params:
        settings=lambda wc: as_json(exp(wc)["knowledge"]),
        out=lambda wc, output: " ".join(
            f"--out {table}={getattr(output, table)}" for table in KNOWLEDGE_TABLES
        ),
    shell:
        "python -m pretrain_knowledge knowledge {input.shards:q} "
        "--experiment {wildcards.experiment} --settings {params.settings:q} {params.out} "
        "> {log:q} 2>&1"
