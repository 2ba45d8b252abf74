"""Dependencies point one way: no vcex module imports from a layer above its own.

Data flows data -> models -> explainers (their results included: ``vcex.explainers.result`` is what explainers
build, so it sits in their layer) -> evaluation / attribution -> report -> pipeline -> benchmark / distributed ->
CLI, over a base of plain helpers; the package's ``__init__`` re-exports the public names and sits on top. Every import
counts, also one under ``if TYPE_CHECKING:`` or inside a function: a lazy import still ties the lower layer to
the upper one. Modules of one layer may import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vcex

SOURCE = Path(vcex.__file__).resolve().parent

# lowest first; the key is a module's first name under vcex (a subpackage or a top-level module)
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"_version", "checks", "errors", "progress", "cache", "standardize", "records"}),
    frozenset({"data"}),
    frozenset({"models"}),
    frozenset({"explainers"}),
    frozenset({"evaluation", "attribution"}),
    frozenset({"report"}),
    frozenset({"pipeline"}),
    frozenset({"benchmark", "distributed"}),  # both run the pipeline: suites of rows, chunks on Ray workers
    frozenset({"cli"}),
    frozenset({"__init__"}),  # the package facade: `from vcex import X`
)
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    """src/vcex/models/whitening.py -> 'vcex.models.whitening'; a package's __init__ -> the package."""
    parts = ("vcex", *path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def layer(module: str) -> int:
    """The layer of a vcex module name ('vcex' alone is the package facade)."""
    parts = module.split(".")
    key = "__init__" if len(parts) == 1 else parts[1]
    if key not in LAYER_OF:
        raise AssertionError(f"{module} is in no layer: add {key!r} to LAYERS in tests/test_layers.py")
    return LAYER_OF[key]


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, vcex module) for every import of a vcex module in ``source``, relative imports resolved."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "vcex"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "vcex":
                continue
            if target == "vcex":  # `from vcex import errors` names a module; `from vcex import DISC` the facade
                found += [(node.lineno, _submodule_or_facade(alias.name)) for alias in node.names]
            else:
                found.append((node.lineno, target))
    return found


def _submodule_or_facade(name: str) -> str:
    is_module = (SOURCE / f"{name}.py").exists() or (SOURCE / name / "__init__.py").exists()
    return f"vcex.{name}" if is_module else "vcex"


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """One line per import of ``module`` (its ``source``) that reaches a layer above its own."""
    own = layer(module)
    return [
        f"{module} (line {line}) imports {target}: layer {layer(target)} above its own {own}"
        for line, target in imported_modules(source, module, is_package)
        if layer(target) > own
    ]


def test_no_module_imports_from_a_layer_above_it():
    problems = []
    for path in sorted(SOURCE.rglob("*.py")):
        problems += upward_imports(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "upward"),
    [
        ("vcex.models.whitening", "from vcex.explainers.result import CounterfactualResult", True),
        ("vcex.models.whitening", "if TYPE_CHECKING:\n    from vcex.explainers import result", True),
        ("vcex.models.whitening", "def f():\n    import vcex.report.html", True),
        ("vcex.models.whitening", "from ...explainers.result import CounterfactualResult", False),  # beyond vcex
        ("vcex.models.whitening", "from ..explainers.result import CounterfactualResult", True),
        ("vcex.data.folder", "from vcex import CounterfactualAttack", True),  # the facade is the top
        ("vcex.data.folder", "from vcex import errors", False),
        ("vcex.explainers.disc", "from vcex.models.classifiers import Classifier", False),
        ("vcex.evaluation.metrics", "from vcex.attribution import global_scores", False),  # one layer
    ],
)
def test_an_upward_import_is_found(module: str, source: str, upward: bool):
    assert bool(upward_imports(source, module)) == upward


def test_a_module_outside_every_layer_is_named():
    with pytest.raises(AssertionError, match="'newthing' to LAYERS"):
        upward_imports("import torch", "vcex.newthing.module")
