"""The package's import structure: no import circles, and nothing in the package imports the CLI."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
# The tokenizer reads its spec and the spec module names the tokenizer's files: the seam that lets a
# checkpoint folder's copies of these files load without the package.
ALLOWED_CIRCLES = [{"genpage_hf.tokenization_genpage", "genpage_hf.tokenizer_spec"}]


def package_modules() -> dict[str, str]:
    """Dotted name -> file of every module of src/genpage_hf (a package is its __init__.py)."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(SRC, "genpage_hf")):
        for file in files:
            if file.endswith(".py"):
                parts = os.path.relpath(os.path.join(folder, file), SRC)[:-3].split(os.sep)
                modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(folder, file)
    return modules


def imported_names(module: str, path: str, modules: dict[str, str]) -> set[str]:
    """Every module `module` imports anywhere in its file (functions included), relative imports resolved;
    `from pkg import name` is the submodule `pkg.name` when that is a module, else `pkg` itself."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    modules = package_modules()
    return {m: imported_names(m, path, modules) & set(modules) for m, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (or a module importing itself)."""
    reach = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for target in graph[todo.pop()]:
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        reach[start] = seen
    found = []
    for module in sorted(graph):
        component = {m for m in reach[module] if module in reach[m]} | {module}
        if (len(component) > 1 or module in graph[module]) and component not in found:
            found.append(component)
    return found


def test_no_import_cycles():
    graph = import_graph()
    assert "genpage_hf.tokenization_genpage" in graph and "genpage_hf.commands.base" in graph
    unexpected = [sorted(c) for c in circles(graph) if c not in ALLOWED_CIRCLES]
    assert not unexpected, f"import circles: {unexpected}"


def test_only_the_commands_import_the_cli():
    modules = package_modules()
    offenders = [
        (module, name)
        for module, path in sorted(modules.items())
        if not (module == "genpage_hf.commands" or module.startswith("genpage_hf.commands."))
        for name in sorted(imported_names(module, path, modules))
        if name == "genpage_cli" or name == "genpage_hf.commands" or name.startswith("genpage_hf.commands.")
    ]
    assert not offenders, f"modules outside genpage_hf.commands import the CLI: {offenders}"
