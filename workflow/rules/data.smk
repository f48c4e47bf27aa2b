rule prepare_data:
    """Decode, subset and normalise one task (upstream or downstream) into a prepared file."""
    input:
        LIB["data"],
    output:
        "results/{experiment}/data/{task}.pt",
    log:
        "results/{experiment}/logs/prepare_data/{task}.log",
    conda:
        ENV
    params:
        args=lambda wc: data_args(wc.experiment, wc.task),
    shell:
        "python -m pretrain_knowledge prepare-data {params.args} "
        "--downstream-out {output:q} > {log:q} 2>&1"
