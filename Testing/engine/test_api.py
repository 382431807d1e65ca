"""The engine's public API: every name in ``mecca.__all__`` resolves, and importing the package
loads nothing heavy until a name is used."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_public_name_resolves():
    import mecca

    for name in mecca.__all__:
        assert getattr(mecca, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Session'"):
        mecca.Session  # noqa: B018


def test_importing_the_package_its_light_modules_or_the_command_loads_neither_torch_nor_slicer():
    """mecca --version and --help start at once, and the Slicer module reads the defaults and colours
    before PyTorch is installed."""
    code = ("import sys, mecca, mecca.geometry, mecca.defaults, mecca.colours, mecca.cli; "
            "mecca.cli.build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'SimpleITK', 'slicer', 'vtk', 'qt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "MECCASegment", capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_load_model_without_a_path_is_the_bundled_model():
    from mecca import load_model
    from mecca.resources import DEFAULT_MODEL, resource_path

    try:
        path = resource_path(*DEFAULT_MODEL)
    except FileNotFoundError:
        pytest.skip("the bundled model is not there")
    assert load_model().metadata == load_model(path).metadata


def _module_imports(path: Path) -> tuple[set[str], list[str]]:
    """The modules a source file imports (absolute names) and the private names it takes from them:
    ``from m import _x`` and ``alias._x`` where ``alias`` is an imported module."""
    import ast

    tree = ast.parse(path.read_text())
    package = path.parent.name
    imported, aliases, private = set(), set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
            aliases.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = f"{package}.{node.module or ''}".rstrip(".") if node.level else node.module
            imported.add(module)
            for alias in node.names:
                aliases.add(alias.asname or alias.name)
                if alias.name.startswith("_") and not alias.name.startswith("__") and alias.name != "_":
                    private.append(f"{module}.{alias.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            private.append(f"{node.value.id}.{node.attr}")
    return imported, private


def test_no_module_takes_private_names_and_the_engine_has_no_circles_and_no_slicer():
    """The house's rules (README, "Layout"), read from the source: no module of the engine, the Slicer
    glue or research takes another module's private names; the engine imports neither slicer, qt nor
    vtk, and its modules import each other without a circle (function-level imports included).
    ``_`` is Slicer's translation function, the one underscore name the glue takes by convention."""
    sources = [*(ROOT / "MECCASegment").rglob("*.py"), *(ROOT / "research").rglob("*.py")]
    engine = {}
    for path in sources:
        imported, private = _module_imports(path)
        assert not private, f"{path.relative_to(ROOT)} takes private names: {private}"
        if path.parent.name == "mecca":
            assert not {m.split(".")[0] for m in imported} & {"slicer", "qt", "vtk", "ctk"}, path.name
            engine[f"mecca.{path.stem}"] = {m for m in imported if m.startswith("mecca.")}
    done, on_path = set(), []

    def visit(module):
        assert module not in on_path, f"import circle: {' -> '.join(on_path[on_path.index(module):] + [module])}"
        if module in done:
            return
        on_path.append(module)
        for imported in engine.get(module, ()):
            visit(imported)
        on_path.pop()
        done.add(module)

    for module in engine:
        visit(module)
    assert len(engine) > 20
