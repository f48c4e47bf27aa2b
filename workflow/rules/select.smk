rule select:
    """k test images per class that the required final models get right, and their players."""
    input:
        data=L.data_file("{experiment}", "downstream"),
        models=final_manifests,
    output:
        selection=L.selection("{experiment}"),
        table=L.samples("{experiment}"),
    log:
        L.log("{experiment}", "select"),
    conda:
        ENV
    threads: lambda wc: exp(wc).threads.selection
    params:
        settings=lambda wc: as_json(exp(wc).select_settings()),
        models=final_models,
        code=code("select"),
    shell:
        "python -m pretrain_knowledge select --data {input.data:q} {params.models} --settings {params.settings:q} "
        "--out {output.selection:q} --table {output.table:q} > {log:q} 2>&1"
