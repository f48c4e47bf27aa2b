"""The conda environment for `--sdm conda` lists exactly the runtime packages of pyproject.toml
(its dependencies and the runtime extras)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV_FILE = REPO / "envs" / "pretrain-knowledge.yaml"
# Conda-only tooling that pyproject.toml has no reason to list.
CONDA_ONLY = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    """(normalised name, version specifier) of a PEP 508 or conda requirement."""
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name, match.group(2).replace(" ", "")


RUNTIME_EXTRAS = ("text",)
"""Optional extras whose packages the jobs need (text experiments run transformers)."""


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for name in RUNTIME_EXTRAS for r in project["optional-dependencies"][name]]
    return dict(_split(r) for r in [*project["dependencies"], *extras])


def _conda_env() -> dict[str, str]:
    spec = yaml.safe_load(ENV_FILE.read_text())
    out: dict[str, str] = {}
    for dep in spec["dependencies"]:
        for requirement in dep["pip"] if isinstance(dep, dict) else [dep]:
            name, version = _split(requirement)
            assert name not in out, f"{name} is listed twice in {ENV_FILE}"
            out[name] = version
    return out


def test_env_lists_the_same_packages_as_pyproject() -> None:
    pyproject = _pyproject()
    env = {k: v for k, v in _conda_env().items() if k not in CONDA_ONLY}
    assert sorted(env) == sorted(pyproject), (
        f"{ENV_FILE.name} and pyproject.toml differ: only in the env "
        f"{sorted(set(env) - set(pyproject))}, only in pyproject {sorted(set(pyproject) - set(env))}"
    )


def test_env_keeps_the_exact_pins() -> None:
    pyproject = _pyproject()
    env = _conda_env()
    for name, version in pyproject.items():
        if version.startswith("=="):
            assert env[name] == version, f"{name}: pyproject pins {version}, env has {env[name]!r}"


def test_env_pins_the_python_of_pyproject() -> None:
    env = yaml.safe_load(ENV_FILE.read_text())["dependencies"]
    python = next(d for d in env if isinstance(d, str) and d.startswith("python"))
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(x) for x in required.lstrip(">=").split("."))
    pinned = tuple(int(x) for x in python.split("=")[-1].split("."))
    assert pinned >= minimum, f"env pins {python}, pyproject requires {required}"
