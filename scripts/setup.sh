#!/usr/bin/env bash
# Idempotent set-up: a virtual environment at .venv with the project and its test tools,
# and the Debian package that carries the default dataset. Safe to run again and again:
# it only reinstalls when pyproject.toml is newer than the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if [ ! -f .venv/.setup-stamp ] || [ pyproject.toml -nt .venv/.setup-stamp ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml; the `text` extra
    # (transformers, pinned) serves the text domain and its tests.
    .venv/bin/python -m pip install -q -e '.[test,text]'
    touch .venv/.setup-stamp
fi

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -d "$FMNIST" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "note: $FMNIST is missing; install the Debian package 'dataset-fashion-mnist'" \
             "(sudo apt-get install dataset-fashion-mnist) or set data.root in config/config.yaml" >&2
    fi
fi
