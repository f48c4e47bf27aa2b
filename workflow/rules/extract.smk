# Extraction in two steps: the games (every masked forward pass, on the GPU when there is one)
# and their sparse AND-OR interactions (no model needed). A change to the sparsification reruns
# only the second step.


rule games:
    """v(x_T) of every coalition of one shard of the selected samples under one checkpoint."""
    input:
        selection=rules.select.output.selection,
        manifest=lambda wc: L.checkpoint_manifest(
            wc.experiment, L.source_mode(wc.model)
        ),
    output:
        L.games_shard("{experiment}", "{model}", "{epoch}", "{shard}"),
    log:
        L.log("{experiment}", "games", "{model}-{epoch}-{shard}"),
    benchmark:
        L.benchmark("{experiment}", "games", "{model}-{epoch}-{shard}")
    conda:
        ENV
    threads: lambda wc: exp(wc).threads.extraction
    params:
        settings=lambda wc: as_json(exp(wc).games_settings()),
        checkpoint=lambda wc: L.checkpoint_file(
            wc.experiment, L.source_mode(wc.model), int(wc.epoch)
        ),
        code=code("games"),
    shell:
        "python -m pretrain_knowledge games --checkpoint {params.checkpoint:q} --selection {input.selection:q} "
        "--model {wildcards.model} --epoch {wildcards.epoch} --shard {wildcards.shard} "
        "--settings {params.settings:q} --out {output:q} > {log:q} 2>&1"


rule sparsify:
    """The sparse AND-OR interactions of one games shard (method.md §3)."""
    input:
        rules.games.output,
    output:
        L.interactions_shard("{experiment}", "{model}", "{epoch}", "{shard}"),
    log:
        L.log("{experiment}", "sparsify", "{model}-{epoch}-{shard}"),
    benchmark:
        L.benchmark("{experiment}", "sparsify", "{model}-{epoch}-{shard}")
    conda:
        ENV
    threads: lambda wc: exp(wc).threads.extraction
    params:
        settings=lambda wc: as_json(exp(wc).sparsify_settings()),
        code=code("sparsify"),
    shell:
        "python -m pretrain_knowledge sparsify {input:q} --settings {params.settings:q} --out {output:q} "
        "> {log:q} 2>&1"
