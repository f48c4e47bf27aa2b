# pretrain-knowledge: data → pre-training → probe · fine-tuning · scratch → sample and player
# selection → interaction extraction → knowledge decomposition → figures and report.
# Configure in config/config.yaml (schema: workflow/schemas/config.schema.yaml); all logic lives
# in src/pretrain_knowledge. See README.md, section "Workflow".


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/knowledge.smk"
include: "workflow/rules/figures.smk"


# Cheap rules run on the submit host under `--profile slurm` (see slurm/config.yaml).
localrules:
    all,
    metrics,
    knowledge,
    figure_knowledge,
    figure_learnability,
    figure_similarity,
    figure_training,
    figure_examples,


rule all:
    default_target: True
    input:
        all_targets(),
