# The training modes of method.md §1 and §7, one rule each: pretrain on the upstream task (or
# storing ImageNet weights), then probe and finetune from its last checkpoint, scratch from random
# initialisation, and the controls scratch_b and random_probe. Each saves every epoch, a manifest
# of the checkpoints and every test image's correctness per epoch.

for _mode in L.MODES:

    rule:
        name:
            _mode
        input:
            data=training_data(_mode),
            init=training_init(_mode),
        output:
            checkpoints=directory(L.checkpoint_dir("{experiment}", _mode)),
            manifest=L.checkpoint_manifest("{experiment}", _mode),
            metrics=L.training_metrics("{experiment}", _mode),
            predictions=L.predictions("{experiment}", _mode),
        log:
            L.log("{experiment}", "train", _mode),
        benchmark:
            L.benchmark("{experiment}", "train", _mode)
        conda:
            ENV
        threads: lambda wc: exp(wc).threads.training
        params:
            mode=_mode,
            settings=lambda wc, mode=_mode: as_json(exp(wc).train_settings(mode)),
            init=lambda wc, input: (
                f"--init {final_checkpoint(wc.experiment, 'pretrain')}"
                if input.init
                else ""
            ),
            data=lambda wc, input: f"--data {input.data}" if input.data else "",
            code=code("train"),
        shell:
            "python -m pretrain_knowledge {params.mode} --settings {params.settings:q} {params.data} {params.init} "
            "--out-dir {output.checkpoints:q} --manifest {output.manifest:q} "
            "--metrics {output.metrics:q} --predictions {output.predictions:q} > {log:q} 2>&1"


rule metrics:
    """One table of every model's per-epoch train and test loss and accuracy."""
    input:
        mode_metrics,
    output:
        L.metrics("{experiment}"),
    log:
        L.log("{experiment}", "metrics"),
    conda:
        ENV
    params:
        code=code("metrics"),
    shell:
        "python -m pretrain_knowledge metrics {input:q} --out {output:q} > {log:q} 2>&1"
