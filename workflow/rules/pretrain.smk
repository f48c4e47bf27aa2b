rule pretrain:
    """Train the backbone on the upstream task, or store ImageNet weights as epoch 0."""
    input:
        LIB["train"],
        data=pretrain_data,
    output:
        checkpoints=directory("results/{experiment}/checkpoints/pretrain"),
        metrics="results/{experiment}/training/pretrain.parquet",
    log:
        "results/{experiment}/logs/train/pretrain.log",
    benchmark:
        "results/{experiment}/benchmarks/train/pretrain.tsv"
    conda:
        ENV
    threads: 2
    params:
        args=lambda wc: train_args(wc.experiment, "pretrain"),
        data=lambda wc, input: f"--data {input.data}" if input.data else "",
    shell:
        "python -m pretrain_knowledge pretrain {params.data} {params.args} "
        "--threads {threads} --out-dir {output.checkpoints:q} --metrics {output.metrics:q} "
        "> {log:q} 2>&1"
