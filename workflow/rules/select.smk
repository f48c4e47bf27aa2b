rule select:
    """k test images per class that every final model gets right, and their players."""
    input:
        LIB["select"],
        data="results/{experiment}/data/downstream.pt",
        models=expand(
            "results/{{experiment}}/checkpoints/{mode}",
            mode=["probe", "finetune", "scratch"],
        ),
    output:
        selection="results/{experiment}/selection/selection.pt",
        table="results/{experiment}/selection/samples.parquet",
    log:
        "results/{experiment}/logs/select.log",
    conda:
        ENV
    threads: 2
    params:
        settings=lambda wc: as_json(exp(wc)["selection"]),
        seed=lambda wc: exp(wc)["seed"],
        models=lambda wc: " ".join(
            f"--model {m} {checkpoint_file(wc.experiment, m, epochs(wc.experiment, m))}"
            for m in ("probe", "finetune", "scratch")
        ),
    shell:
        "python -m pretrain_knowledge select --data {input.data:q} {params.models} "
        "--seed {params.seed} --settings {params.settings:q} --threads {threads} "
        "--out {output.selection:q} --table {output.table:q} > {log:q} 2>&1"
