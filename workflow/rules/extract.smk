rule extract:
    """AND-OR interactions of one checkpoint on one shard of the selected samples."""
    input:
        LIB["extract"],
        selection="results/{experiment}/selection/selection.pt",
        checkpoints=lambda wc: checkpoint_dir(wc.experiment, source_mode(wc.model)),
    output:
        "results/{experiment}/interactions/model={model}/epoch={epoch}/shard-{shard}.parquet",
    log:
        "results/{experiment}/logs/extract/{model}-{epoch}-{shard}.log",
    benchmark:
        "results/{experiment}/benchmarks/extract/{model}-{epoch}-{shard}.tsv"
    conda:
        ENV
    threads: 2
    params:
        settings=lambda wc: as_json(exp(wc)["extraction"]),
        checkpoint=lambda wc: checkpoint_file(
            wc.experiment, source_mode(wc.model), wc.epoch
        ),
        shards=lambda wc: exp(wc)["extraction"]["shards"],
    shell:
        "python -m pretrain_knowledge extract --checkpoint {params.checkpoint:q} "
        "--selection {input.selection:q} --shard {wildcards.shard} --shards {params.shards} "
        "--settings {params.settings:q} --threads {threads} --out {output:q} > {log:q} 2>&1"
