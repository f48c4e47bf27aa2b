# The two entry points of the README's quick start. Both run the idempotent set-up first.
.PHONY: setup analysis test

setup:
	bash scripts/setup.sh

analysis: setup
	.venv/bin/snakemake --cores 2

test: setup
	.venv/bin/python -m pytest -q --durations=30 -n 2 --dist loadscope
