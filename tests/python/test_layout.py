"""The backend's import direction: data -> model -> train -> tasks -> io / pl / report / cli.

Every relative import inside ``python/sigel`` is read from the source (no
import is executed) and checked against the layers each sub-package may use.
"""
import ast
from pathlib import Path

import sigel

ROOT = Path(sigel.__file__).resolve().parent

# small shared modules every layer may use
BASE = {"_settings", "_validate", "_keys", "_stats", "_version", "tissue", "_rbridge", "_defaults"}
ALLOWED = {  # layer -> the layers it may import (besides "base")
    "base": set(),
    "datasets": {"datasets"},
    "data": {"data"},
    "model": {"model"},
    "train": {"data", "model", "train"},
    "sim": {"data", "sim"},
    "_model": {"data", "model", "train", "io", "_model"},
    "tasks": {"data", "model", "train", "sim", "tasks", "datasets"},
    "tl": {"tasks", "tl"},
    "io": {"data", "model", "train", "io"},
    "pl": {"data", "tasks", "tl", "pl"},
}


def _layer(module: str) -> str:
    top = module.split(".")[1] if "." in module else ""
    return "base" if top in BASE else top


def _imports():
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        mod = ".".join(rel.parts)
        pkg = mod[: -len(".__init__")] if mod.endswith(".__init__") else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    yield mod, (target if node.module else f"{target}.{alias.name}")
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sigel."):
                yield mod, node.module


def test_imports_follow_the_layers():
    bad = []
    for src, dst in _imports():
        layer = _layer(src)
        if layer not in ALLOWED or dst == "sigel":
            continue  # the package root, report.py and cli.py may use everything
        if _layer(dst) != "base" and _layer(dst) not in ALLOWED[layer]:
            bad.append(f"{src} -> {dst}")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_the_checker_sees_imports():
    pairs = set(_imports())
    assert ("sigel.train.trainer", "sigel.data.batches") in pairs
    assert ("sigel.tl", "sigel.tl.importlib") not in pairs
