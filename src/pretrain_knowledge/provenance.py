"""What a stage's results depend on besides its inputs and settings: the code it runs.

Each rule records a digest of its stage's code as a parameter, so Snakemake reruns a stage when,
and only when, code that stage runs has changed. The code of a stage is the import closure of its
command-line module (``pretrain_knowledge.cli.<stage>``) inside this package, derived from the
``import`` statements, never written by hand; a module that does not exist is an error.

Why a digest of the syntax tree, not of the files: a comment, a docstring or a reformatting cannot
change results, and rerunning hundreds of GPU jobs for one would make every tidy-up expensive. The
digest covers each module's abstract syntax tree with docstrings removed, so any change to what the
code does (a statement, a constant, a default argument) reruns the stage.

The config layer (``typed``, ``spec``, ``catalog``, ``layout``) is left out on purpose: settings
reach a stage only as the JSON a rule hands it, which is itself a parameter of the rule, so a change
there that matters changes that parameter.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "pretrain_knowledge"
ROOT = Path(__file__).resolve().parent
CONFIG_LAYER = frozenset({"typed", "spec", "catalog", "layout", "provenance"})
"""Modules whose effect on results reaches stages only through their settings (module doc)."""


def module_path(name: str) -> Path:
    """The source file of a module of this package, by dotted name relative to the package."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise ValueError(f"{PACKAGE}.{name} does not exist (looked for {base}.py and {base}/__init__.py)")


def _resolve(importer: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Package-relative names of the modules an import statement may load."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        return [n.removeprefix(PACKAGE + ".") for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")]
    if node.level:
        is_package = module_path(importer).name == "__init__.py"
        parts = importer.split(".") if importer else []
        parent = parts if is_package else parts[:-1]
        parent = parent[: len(parent) - (node.level - 1)] if node.level > 1 else parent
        base = ".".join(parent + ([node.module] if node.module else []))
    elif node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
        base = node.module.removeprefix(PACKAGE).lstrip(".")
    else:
        return []
    out = [base] if base else []
    for alias in node.names:
        child = f"{base}.{alias.name}" if base else alias.name
        if _exists(child):
            out.append(child)
    return out


def _exists(name: str) -> bool:
    try:
        module_path(name)
    except ValueError:
        return False
    return True


def _parents(name: str) -> list[str]:
    """Packages Python runs before a module: ``a.b.c`` needs ``a/__init__`` and ``a/b/__init__``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))] + [""]


def _type_checking_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` blocks hold imports for annotations, which never run."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append(child)
        elif _type_checking_only(child):
            found.extend(n for c in child.orelse for n in _import_nodes(ast.Module(body=[c], type_ignores=[])))
        else:
            found.extend(_import_nodes(child))
    return found


@lru_cache(maxsize=None)
def _imports(name: str) -> tuple[str, ...]:
    tree = ast.parse(module_path(name).read_text(), filename=str(module_path(name)))
    found: set[str] = set()
    for node in _import_nodes(tree):
        found.update(_resolve(name, node))
    return tuple(sorted(found))


def import_closure(module: str, stop: frozenset[str] = frozenset()) -> list[str]:
    """Every module of the package that ``module`` may run, itself included (package-relative).

    Modules whose top-level name is in ``stop`` are included but not followed further.
    """
    module_path(module)
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name.split(".")[0] in stop:
            continue
        todo.extend(_imports(name))
        todo.extend(p for p in _parents(name) if p not in seen)
    return sorted(seen)


def _normalised(path: Path) -> str:
    """The module's syntax tree without docstrings, as text: equal for cosmetic edits.

    Every rule's digest shares most modules, and the Snakefile is parsed once per Snakemake process
    (and once per job on a cluster): each version of a file is parsed once per process."""
    stat = path.stat()
    return _normalised_version(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=None)
def _normalised_version(path: Path, mtime_ns: int, size: int) -> str:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def stage_modules(stage: str) -> list[str]:
    """The modules whose code the digest of ``stage`` covers (its closure minus the config layer)."""
    entry = f"cli.{stage}"
    if not _exists(entry):
        stages = sorted(p.stem for p in (ROOT / "cli").glob("*.py") if p.stem != "__init__")
        raise ValueError(f"no stage {stage!r}: {PACKAGE}/cli/{stage}.py does not exist (stages: {stages})")
    closure = import_closure(entry, stop=CONFIG_LAYER)
    return [m for m in closure if m.split(".")[0] not in CONFIG_LAYER]


def code_digest(stage: str) -> str:
    """A short hex digest of the code a stage runs (see the module doc)."""
    digest = hashlib.sha256()
    for name in stage_modules(stage):
        digest.update(name.encode() + b"\0" + _normalised(module_path(name)).encode() + b"\0")
    return digest.hexdigest()[:16]

