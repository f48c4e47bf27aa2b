rule prepare_data:
    """Decode, subset and normalise one task (upstream or downstream) into a prepared file."""
    output:
        L.data_file("{experiment}", "{task}"),
    log:
        L.log("{experiment}", "prepare_data", "{task}"),
    conda:
        ENV
    params:
        settings=lambda wc: as_json(exp(wc).prepare_settings(wc.task)),
        code=code("prepare"),
    shell:
        "python -m pretrain_knowledge prepare-data --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"
