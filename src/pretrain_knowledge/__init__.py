"""pretrain-knowledge: why pre-training helps downstream classifiers, told with AND-OR interactions.

Reproduces Jiang, Cheng & Li, "Why pre-training is beneficial for downstream classification
tasks?" (arXiv 2410.08455). The science is fixed in ``docs/method.md`` (shared with the team);
every module documents the coalition convention it relies on:

    A coalition T ⊆ N = {0, …, n-1} is the integer with bit i set iff player i ∈ T
    (player 0 is the least significant bit). Its order |T| is the popcount.
"""

__version__ = "0.1.0"
