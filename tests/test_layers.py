"""The repository's layers point one way: nothing imports a module of a layer above its own.

Layers, bottom to top (docs/api.md#layers): lib.utils; lib.config, lib.core, lib.eval; model_2d,
model_3d; lib.datasets; lib.engine; lib.apps; run and benchmarks. Every import counts, also those
inside functions, since a lazy import is still a dependency.
"""
import ast
from pathlib import Path

from conftest import ROOT

LAYERS = (("lib.utils",), ("lib.config", "lib.core", "lib.eval"), ("model_2d", "model_3d"), ("lib.datasets",),
          ("lib.engine",), ("lib.apps",), ("run", "benchmarks"))
PACKAGES = ("lib", "model_2d", "model_3d", "run", "benchmarks")


def layer_of(module: str):
    """Index in LAYERS of the package holding ``module``; None for modules outside the repository."""
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool):
    """Every repository module ``source`` imports (absolute and relative, at any depth of the code)."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            prefix = base[:len(base) - (node.level - 1)] if node.level else []
            name = ".".join(prefix + ([node.module] if node.module else []))
            if node.module:
                yield name
            else:                                  # `from . import x`: the modules x
                yield from (f"{name}.{a.name}" for a in node.names)


def upward_imports(files):
    bad = []
    for path in files:
        module = module_name(path)
        own = layer_of(module)
        for dep in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            other = layer_of(dep)
            if own is not None and other is not None and other > own:
                bad.append(f"{path.relative_to(ROOT)} imports {dep} (layer {LAYERS[other]} above {LAYERS[own]})")
    return bad


def test_no_module_imports_a_layer_above_its_own():
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 50
    assert upward_imports(files) == []


def test_the_check_sees_upward_imports(tmp_path, monkeypatch):
    """The checker itself finds what it must: a lazy import inside a function, a relative import."""
    import conftest
    fake_root = tmp_path
    (fake_root / "lib" / "core").mkdir(parents=True)
    (fake_root / "lib" / "engine").mkdir(parents=True)
    low = fake_root / "lib" / "core" / "x.py"
    low.write_text("def f():\n    from lib.engine.trainer import train\n    return train\n")
    rel = fake_root / "lib" / "engine" / "y.py"
    rel.write_text("from ..apps import pipeline\nfrom . import builders\n")
    monkeypatch.setattr(conftest, "ROOT", fake_root)
    monkeypatch.setitem(globals(), "ROOT", fake_root)
    bad = upward_imports([low, rel])
    assert len(bad) == 2 and "lib.engine.trainer" in bad[0] and "lib.apps" in bad[1]


def test_commands_are_thin():
    """``run/*.py`` parse arguments and call the library: no command holds 150 lines."""
    long = {p.name: n for p in (ROOT / "run").glob("*.py") if (n := len(p.read_text().splitlines())) > 150}
    assert long == {}
