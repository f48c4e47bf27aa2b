# The five figures of method.md §6, as PNG (in the report) and PDF.


rule figure_knowledge:
    """Figure 1: preserved, discarded and new knowledge per order (paper's Figure 2)."""
    input:
        LIB["figures"],
        table="results/{experiment}/knowledge/decomposition.parquet",
    output:
        png=report(
            "results/{experiment}/figures/knowledge.png",
            caption="../report/knowledge.rst",
            category="1. Knowledge decomposition",
            subcategory="{experiment}",
        ),
        pdf="results/{experiment}/figures/knowledge.pdf",
    log:
        "results/{experiment}/logs/figures/knowledge.log",
    conda:
        ENV
    params:
        dpi=config["figures"]["dpi"],
    shell:
        "python -m pretrain_knowledge figure knowledge --input decomposition={input.table:q} "
        "--title {wildcards.experiment} --dpi {params.dpi} --png {output.png:q} "
        "--pdf {output.pdf:q} > {log:q} 2>&1"


rule figure_learnability:
    """Figure 2: preserved-learnability ratio of every experiment (paper's Figure 3)."""
    input:
        LIB["figures"],
        tables=expand(
            "results/{experiment}/knowledge/learnability.parquet",
            experiment=EXPERIMENTS,
        ),
    output:
        png=report(
            "results/figures/learnability.png",
            caption="../report/learnability.rst",
            category="2. Preserved-learnability ratio",
        ),
        pdf="results/figures/learnability.pdf",
    log:
        "results/logs/figures/learnability.log",
    conda:
        ENV
    params:
        inputs=lambda wc, input: " ".join(
            f"--input learnability={t}" for t in input.tables
        ),
        dpi=config["figures"]["dpi"],
    shell:
        "python -m pretrain_knowledge figure learnability {params.inputs} "
        "--dpi {params.dpi} --png {output.png:q} --pdf {output.pdf:q} > {log:q} 2>&1"


rule figure_similarity:
    """Figure 3: similarity to the final knowledge versus epoch (paper's Figure 4)."""
    input:
        LIB["figures"],
        table="results/{experiment}/knowledge/similarity.parquet",
    output:
        png=report(
            "results/{experiment}/figures/similarity.png",
            caption="../report/similarity.rst",
            category="3. Convergence of knowledge",
            subcategory="{experiment}",
        ),
        pdf="results/{experiment}/figures/similarity.pdf",
    log:
        "results/{experiment}/logs/figures/similarity.log",
    conda:
        ENV
    params:
        dpi=config["figures"]["dpi"],
    shell:
        "python -m pretrain_knowledge figure similarity --input similarity={input.table:q} "
        "--title {wildcards.experiment} --dpi {params.dpi} --png {output.png:q} "
        "--pdf {output.pdf:q} > {log:q} 2>&1"


rule figure_training:
    """Figure 4: accuracy and loss per epoch of the probe, fine-tuning and scratch."""
    input:
        LIB["figures"],
        table="results/{experiment}/metrics.parquet",
    output:
        png=report(
            "results/{experiment}/figures/training.png",
            caption="../report/training.rst",
            category="4. Training curves",
            subcategory="{experiment}",
        ),
        pdf="results/{experiment}/figures/training.pdf",
    log:
        "results/{experiment}/logs/figures/training.log",
    conda:
        ENV
    params:
        dpi=config["figures"]["dpi"],
    shell:
        "python -m pretrain_knowledge figure training --input metrics={input.table:q} "
        "--title {wildcards.experiment} --dpi {params.dpi} --png {output.png:q} "
        "--pdf {output.pdf:q} > {log:q} 2>&1"


rule figure_examples:
    """Figure 5: example images with their strongest preserved, discarded and new interaction."""
    input:
        LIB["figures"],
        selection="results/{experiment}/selection/selection.pt",
        members="results/{experiment}/knowledge/members.parquet",
    output:
        png=report(
            "results/{experiment}/figures/examples.png",
            caption="../report/examples.rst",
            category="5. Examples",
            subcategory="{experiment}",
        ),
        pdf="results/{experiment}/figures/examples.pdf",
    log:
        "results/{experiment}/logs/figures/examples.log",
    conda:
        ENV
    params:
        examples=config["figures"]["examples"],
        dpi=config["figures"]["dpi"],
    shell:
        "python -m pretrain_knowledge figure examples --input selection={input.selection:q} "
        "--input members={input.members:q} --examples {params.examples} "
        "--title {wildcards.experiment} --dpi {params.dpi} --png {output.png:q} "
        "--pdf {output.pdf:q} > {log:q} 2>&1"
