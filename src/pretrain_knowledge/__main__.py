"""``python -m pretrain_knowledge <stage> ...``: the command line the workflow's rules call."""

from pretrain_knowledge.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
