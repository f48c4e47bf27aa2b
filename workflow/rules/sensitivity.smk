# How much the knowledge depends on each analysis choice (method.md §8): every variant of
# `sensitivity:` is re-solved from the stored games (no forward pass) and its claim measures
# recomputed. Adding or changing one variant reruns only that variant's jobs.


rule sensitivity_sparsify:
    """Every games shard of one experiment re-solved under one sensitivity variant (one job)."""
    input:
        lambda wc: shards_of(exp(wc), L.games_shard),
    output:
        directory(L.variant_interactions("{experiment}", "{variant}")),
    log:
        L.log("{experiment}", "sensitivity", "{variant}", "sparsify"),
    conda:
        ENV
    threads: lambda wc: exp(wc).threads.extraction
    params:
        settings=lambda wc: as_json(exp(wc).variant_sparsify_settings(wc.variant)),
        code=code("sparsify"),
    shell:
        "python -m pretrain_knowledge sparsify {input:q} --settings {params.settings:q} "
        "--out-dir {output:q} > {log:q} 2>&1"


rule sensitivity_measures:
    """The claim measures of one variant (its own interactions, or the default ones for τ)."""
    input:
        variant_shards,
    output:
        L.variant_measures("{experiment}", "{variant}"),
    log:
        L.log("{experiment}", "sensitivity", "{variant}", "measures"),
    conda:
        ENV
    params:
        settings=lambda wc: as_json(exp(wc).knowledge_settings(wc.variant)),
        code=code("knowledge"),
    shell:
        "python -m pretrain_knowledge knowledge {input:q} --experiment {wildcards.experiment} "
        "--settings {params.settings:q} --out measures={output:q} > {log:q} 2>&1"


rule sensitivity:
    """The headline measures of every variant of one experiment, with intervals."""
    input:
        unpack(sensitivity_inputs),
    output:
        L.sensitivity_table("{experiment}"),
    log:
        L.log("{experiment}", "sensitivity", "table"),
    conda:
        ENV
    params:
        inputs=lambda wc, input: as_json(dict(input.items())),
        code=code("sensitivity"),
    shell:
        "python -m pretrain_knowledge sensitivity --inputs {params.inputs:q} "
        "--experiment {wildcards.experiment} --out {output:q} > {log:q} 2>&1"
