"""The engine's layers, read from the code's own imports: arrows point down only.

    edges        engine.api, engine.cli
    worker       engine.worker        RQ: jobs, scheduler, worker class, runtime
    run          engine.run           runner, reviews, authority, timers, stats, Engine
    steps        engine.steps         built-in step types
    state        engine.state         records, audit, keys, Lua, store, inbox
    definition   engine.definition    workflow model, loading and checks (pure)
    foundation   engine.errors, engine.notify, engine.settings

A layer may import the layers below it and the foundation, never one above it, and
``engine`` never imports ``bot`` or Slack's libraries.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"

# What each layer may import from the engine (besides itself).
ALLOWED: dict[str, set[str]] = {
    "definition": {"errors"},
    "state": {"errors", "notify"},
    "steps": {"errors", "definition"},
    "run": {"errors", "notify", "definition", "steps", "state"},
    "worker": {"errors", "notify", "settings", "definition", "steps", "state", "run"},
}
# Third-party libraries a layer must not import (I/O belongs to the layers that own it).
FORBIDDEN_LIBRARIES: dict[str, set[str]] = {
    "definition": {"redis", "rq", "httpx", "starlette", "uvicorn"},
    "state": {"httpx", "starlette", "uvicorn", "yaml"},
    "run": {"redis", "rq", "httpx", "starlette", "uvicorn"},
    "steps": {"redis", "rq", "starlette", "uvicorn"},
}
NEVER_IN_ENGINE = {"bot", "slack_bolt", "slack_sdk"}


def _modules(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports, as dotted names (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "engine" or len(parts) < 2:
        return None
    return parts[1]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    wrong = []
    for path in _modules(ENGINE / layer):
        for module in _imports(path):
            target = _layer_of(module)
            if target is None or target == layer or target.startswith("_"):
                continue
            is_engine_part = (ENGINE / target).is_dir() or (ENGINE / f"{target}.py").exists()
            if is_engine_part and target not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_LIBRARIES))
def test_io_libraries_stay_out_of_the_layers_that_do_not_own_them(layer: str) -> None:
    wrong = [f"{path.relative_to(ROOT)} imports {module}"
             for path in _modules(ENGINE / layer) for module in _imports(path)
             if module.split(".")[0] in FORBIDDEN_LIBRARIES[layer]]
    assert not wrong, "\n".join(wrong)


def test_the_engine_never_imports_the_bot_or_slack() -> None:
    wrong = [f"{path.relative_to(ROOT)} imports {module}"
             for path in _modules(ENGINE) for module in _imports(path)
             if module.split(".")[0] in NEVER_IN_ENGINE]
    assert not wrong, "\n".join(wrong)


def test_the_tree_shows_the_layers() -> None:
    top_modules = sorted(p.name for p in ENGINE.glob("*.py"))
    packages = sorted(p for p in ENGINE.iterdir() if (p / "__init__.py").exists())
    assert len(top_modules) <= 12, top_modules
    assert {p.name for p in packages} >= set(ALLOWED)
    for package in packages:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc, f"{package.relative_to(ROOT)}/__init__.py says nothing of what it owns"


def test_the_import_reader_sees_a_forbidden_import(tmp_path: Path) -> None:
    # The checks above are only as good as _imports: it must see every spelling.
    sample = tmp_path / "engine" / "definition" / "probe.py"
    sample.parent.mkdir(parents=True)
    sample.write_text("import redis\nfrom ..state import store\nfrom engine.run.engine import Engine\n")
    seen = _imports(sample, root=tmp_path)
    assert {"redis", "engine.state", "engine.state.store", "engine.run.engine"} <= seen


def test_the_public_surface_resolves_and_loads_layers_lazily() -> None:
    import engine

    assert all(getattr(engine, name) is not None for name in engine.__all__)
    assert issubclass(engine.Contention, engine.SignoffError)
    import engine.errors

    tree = {name for name, value in vars(engine.errors).items()
            if isinstance(value, type) and issubclass(value, engine.SignoffError)}
    assert tree <= set(engine.__all__), "errors missing from the public surface"
    # Importing the pure layer through the package must not drag in Redis or RQ.
    probe = ("import sys, engine, engine.definition.loader; "
             "print(sorted(m for m in ('redis', 'rq', 'httpx', 'starlette') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]"
    with pytest.raises(AttributeError):
        engine.NoSuchThing  # noqa: B018
