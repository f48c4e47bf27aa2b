from snakemake.utils import min_version

min_version("8.0")


# pretrain-knowledge: data → pre-training → probe · fine-tuning · scratch → sample and player
# selection → games → sparse interactions → knowledge → figures and report.
# Configure in config/config.yaml (config/README.md; schema: workflow/schemas/config.schema.yaml,
# generated from pretrain_knowledge.spec). All logic lives in src/pretrain_knowledge.


# Snakemake's message for a broken config file names neither file nor line; this one does.
import sys

sys.path.insert(0, f"{workflow.basedir}/src")
from pretrain_knowledge.spec import read_yaml

read_yaml("config/config.yaml")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/knowledge.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/sensitivity.smk"
include: "workflow/rules/claims.smk"


# Cheap rules run on the submit host under `--profile slurm` (see slurm/config.yaml).
localrules:
    all,
    metrics,
    knowledge,
    figure_knowledge,
    figure_learnability,
    figure_benefit,
    figure_convergence,
    figure_sensitivity,
    sensitivity,
    claims,
    figure_claims,
    figure_similarity,
    figure_training,
    figure_examples,


rule all:
    default_target: True
    input:
        all_targets(),
