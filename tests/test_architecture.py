"""The shape of the product packages, read from their source with ``ast`` (no module is imported, no model needed).

1. No import cycle among project modules, imports inside functions counted (a function-level import back into
   a module that imports you is still a cycle: the two cannot be understood, tested or moved apart).
2. No private name (leading underscore) imported from another project module: what a module shares it names
   without an underscore.
3. No module over 600 lines.
4. The report, the release model and the model cards import nothing from convert/'s converter modules: they read
   the typed variant, the manifest and the format registry.
5. The layers point one way: invoker imports neither convert nor pipelines nor serve_minimal; convert imports
   neither pipelines nor serve_minimal.
6. At run time too, publishing and reporting import no converter module (nor torch): the registry gives them a
   format's entry from its data module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("invoker", "convert", "pipelines", "serve_minimal")
MAX_LINES = 600
# What the report, release and cards may import from convert/: nothing but the light registry and the calibration spec.
CONVERT_ALLOWED_FOR_RELEASE = {"convert", "convert.formats", "convert.calibration"}
RELEASE_SIDE = ("pipelines.report", "pipelines.release", "pipelines.card")
LAYERS = {"invoker": set(PACKAGES) - {"invoker"}, "convert": {"pipelines", "serve_minimal"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, tuple[Path, ast.Module]]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return modules


MODULES = project_modules()


def resolve(name: str) -> str | None:
    """The project module ``name`` stands for (the longest known prefix), None outside the project."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str, tree: ast.Module) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every import of ``module``, at any depth."""
    package = module if MODULES[module][0].name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in MODULES:  # ``from convert import _int4``: the module itself
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((base, alias.name, node.lineno))
    return found


def edges() -> dict[str, dict[str, int]]:
    """module -> {project module it imports: first line}; a package's ``__init__`` is imported with its modules."""
    graph: dict[str, dict[str, int]] = {name: {} for name in MODULES}
    for module, (_, tree) in MODULES.items():
        for target, _name, line in imports(module, tree):
            resolved = resolve(target)
            if resolved is not None and resolved != module:
                graph[module].setdefault(resolved, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_counting_imports_inside_functions():
    graph = edges()
    problems = []
    for component in cycles(graph):
        members = set(component)
        problems.append(" <-> ".join(component) + ": " + ", ".join(
            f"{a} -> {b} (line {line})" for a in component for b, line in graph[a].items() if b in members))
    assert problems == [], "import cycles:\n" + "\n".join(problems)


def test_no_private_name_is_imported_from_another_module():
    found = []
    for module, (path, tree) in MODULES.items():
        for target, name, line in imports(module, tree):
            resolved = resolve(target)
            if resolved is None or resolved == module:
                continue
            private = [part for part in [*target.split(".")[len(resolved.split(".")):], *(name and [name] or [])]
                       if part.startswith("_") and not part.startswith("__")]
            package = resolved.rpartition(".")[0]
            if resolved.rpartition(".")[2].startswith("_") and not module.startswith(package + "."):
                private.append(resolved)  # a private module, used outside its package (subpackages included)
            if private:
                found.append(f"{path.relative_to(ROOT)}:{line}: {', '.join(private)} from {resolved}")
    assert found == [], "private names imported across modules:\n" + "\n".join(found)


def test_no_module_is_over_600_lines():
    long = [f"{path.relative_to(ROOT)}: {n} lines" for path, _ in MODULES.values()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert long == [], f"modules over {MAX_LINES} lines:\n" + "\n".join(long)


def test_report_release_and_cards_import_no_converter_module():
    graph = edges()
    found = [f"{module} -> {target} (line {line})" for module in RELEASE_SIDE for target, line in graph[module].items()
             if target.split(".")[0] == "convert" and target not in CONVERT_ALLOWED_FOR_RELEASE]
    assert found == [], "release-side modules importing converter modules:\n" + "\n".join(found)


def test_layers_point_one_way():
    graph = edges()
    found = [f"{module} -> {target} (line {line})" for module, targets in graph.items() for target, line in targets.items()
             if target.split(".")[0] in LAYERS.get(module.split(".")[0], ())]
    assert found == [], "imports pointing up a layer:\n" + "\n".join(found)


def test_the_checks_find_what_they_look_for():
    """The graph code itself: a cycle, a private import and a function-level import are seen."""
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    runtime, parallel = "invoker.runtimes.llamacpp_runtime", "invoker.runtimes.llamacpp_parallel"
    tree = ast.parse("def f():\n    from invoker.runtimes.llamacpp_parallel import ParallelDecoder\n")
    assert (parallel, "ParallelDecoder", 2) in imports(runtime, tree)
    tree = ast.parse("from . import base\nfrom .base import _x\n")
    assert imports(runtime, tree) == [("invoker.runtimes.base", None, 1), ("invoker.runtimes.base", "_x", 2)]


def test_publishing_and_reporting_import_no_converter_at_run_time(tmp_path):
    """What the static check cannot see: the registry imports a format's module (data) to publish it, never its
    converter, and nothing on the way imports torch."""
    import json
    import subprocess
    import sys

    code = f"""
import json, sys
from pathlib import Path
from hub_stub import make_release
out = make_release(Path({str(tmp_path)!r}) / "out", source_dir=Path({str(ROOT / "models" / "tiny-invoker")!r}))
before = set(sys.modules)
from pipelines.publish import publish
from pipelines.report import write_report
publish(out_dir=out, namespace="t", dry_run=Path({str(tmp_path)!r}) / "release", log=lambda _: None, warn=lambda _: None)
write_report(out_dir=out)
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    converters = [m for m in imported if m.startswith("convert.") and not m.startswith("convert.formats")]
    assert converters == [] and "torch" not in imported, converters
