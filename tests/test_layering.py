"""The loading path's layers (docs/loading.md): wrapper -> loader -> checkpoint readers, with the
converter and the model checks beside the loader on top of the same readers. Imports go down only,
at module level, so that no module has to hide an import inside a function to dodge a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kt_kernel

PKG = Path(kt_kernel.__file__).parent
# what sits above the readers; kt_kernel.checkpoint must import none of it
ABOVE_READERS = ("kt_kernel.convert", "kt_kernel.loading", "kt_kernel.packer", "kt_kernel.wrapper",
                 "kt_kernel.models", "kt_kernel.integrations", "kt_kernel.demo")


def _imports(file: Path):
    """(module imported, whether the import is inside a function) for each import of ``file``;
    ``from a import b`` counts as a.b as well as a."""
    tree = ast.parse(file.read_text())
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        local = id(node) in in_function
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, local
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, local
            for a in node.names:
                yield f"{node.module}.{a.name}", local


@pytest.mark.parametrize("file", sorted((PKG / "checkpoint").glob("*.py")), ids=lambda f: f.name)
def test_readers_import_nothing_above_them(file):
    above = sorted({m for m, _ in _imports(file) if m.startswith(ABOVE_READERS)})
    assert not above, f"{file.name} imports {above}"


@pytest.mark.parametrize("file", [PKG / "loading.py", PKG / "packer.py", *sorted((PKG / "convert").glob("*.py"))],
                         ids=lambda f: f.name)
def test_loader_and_converter_never_import_the_wrapper(file):
    wrapper = sorted({m for m, _ in _imports(file) if m in ("kt_kernel.wrapper", "kt_kernel.KTMoEWrapper")})
    assert not wrapper, f"{file.name} imports {wrapper}"


def test_wrapper_imports_its_load_path_at_module_level():
    local = sorted({m for m, inside in _imports(PKG / "wrapper.py") if inside and m.startswith("kt_kernel")})
    assert not local, f"wrapper.py imports {local} inside functions"


def test_layer_check_catches_an_import_inside_a_function(tmp_path):
    """The checks above can fail: a function-level import is seen as one."""
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef g():\n    from kt_kernel.convert import convert_checkpoint\n")
    assert ("kt_kernel.convert.convert_checkpoint", True) in set(_imports(f))
    assert ("os", False) in set(_imports(f))
