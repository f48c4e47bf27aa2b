# The three downstream models of method.md §1. probe and finetune start from the pretrained
# model's last checkpoint; scratch from random initialisation. Each saves every epoch.


rule probe:
    """Linear probe: the frozen pretrained backbone with a new linear head (v_pretrain)."""
    input:
        LIB["train"],
        data="results/{experiment}/data/downstream.pt",
        pretrain="results/{experiment}/checkpoints/pretrain",
    output:
        checkpoints=directory("results/{experiment}/checkpoints/probe"),
        metrics="results/{experiment}/training/probe.parquet",
    log:
        "results/{experiment}/logs/train/probe.log",
    benchmark:
        "results/{experiment}/benchmarks/train/probe.tsv"
    conda:
        ENV
    threads: 2
    params:
        args=lambda wc: train_args(wc.experiment, "probe"),
        init=pretrain_final,
    shell:
        "python -m pretrain_knowledge probe --data {input.data:q} --init {params.init:q} "
        "{params.args} --threads {threads} --out-dir {output.checkpoints:q} "
        "--metrics {output.metrics:q} > {log:q} 2>&1"


rule finetune:
    """Fine-tuning: the pretrained backbone with a new head, every layer trained."""
    input:
        LIB["train"],
        data="results/{experiment}/data/downstream.pt",
        pretrain="results/{experiment}/checkpoints/pretrain",
    output:
        checkpoints=directory("results/{experiment}/checkpoints/finetune"),
        metrics="results/{experiment}/training/finetune.parquet",
    log:
        "results/{experiment}/logs/train/finetune.log",
    benchmark:
        "results/{experiment}/benchmarks/train/finetune.tsv"
    conda:
        ENV
    threads: 2
    params:
        args=lambda wc: train_args(wc.experiment, "finetune"),
        init=pretrain_final,
    shell:
        "python -m pretrain_knowledge finetune --data {input.data:q} --init {params.init:q} "
        "{params.args} --threads {threads} --out-dir {output.checkpoints:q} "
        "--metrics {output.metrics:q} > {log:q} 2>&1"


rule scratch:
    """The same architecture trained from random initialisation on the downstream task."""
    input:
        LIB["train"],
        data="results/{experiment}/data/downstream.pt",
    output:
        checkpoints=directory("results/{experiment}/checkpoints/scratch"),
        metrics="results/{experiment}/training/scratch.parquet",
    log:
        "results/{experiment}/logs/train/scratch.log",
    benchmark:
        "results/{experiment}/benchmarks/train/scratch.tsv"
    conda:
        ENV
    threads: 2
    params:
        args=lambda wc: train_args(wc.experiment, "scratch"),
    shell:
        "python -m pretrain_knowledge scratch --data {input.data:q} {params.args} "
        "--threads {threads} --out-dir {output.checkpoints:q} "
        "--metrics {output.metrics:q} > {log:q} 2>&1"


rule metrics:
    """One table of every model's per-epoch train and test loss and accuracy."""
    input:
        LIB["metrics"],
        tables=expand(
            "results/{{experiment}}/training/{mode}.parquet",
            mode=["pretrain", "probe", "finetune", "scratch"],
        ),
    output:
        "results/{experiment}/metrics.parquet",
    log:
        "results/{experiment}/logs/metrics.log",
    conda:
        ENV
    shell:
        "python -m pretrain_knowledge metrics {input.tables:q} --out {output:q} > {log:q} 2>&1"
