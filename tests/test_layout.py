"""The code's shape: small modules, no import circle, a numerical core that never imports Spark."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "deepseg"
MAX_LINES = 450


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def deepseg_imports(path: pathlib.Path) -> set[str]:
    """Every deepseg module `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("deepseg")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deepseg") and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_no_module_is_longer_than_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_import_circle():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {i for i in deepseg_imports(p) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ re-exporting its own modules is not a circle
    graph = {m: {i for i in deps if not (m != "deepseg" and i.startswith(m + "."))} for m, deps in graph.items()}
    visiting, done, circles = set(), set(), []

    def visit(m, path):
        if m in visiting:
            circles.append(path[path.index(m):] + [m])
            return
        if m in done:
            return
        visiting.add(m)
        for dep in sorted(graph[m]):
            visit(dep, path + [m])
        visiting.discard(m)
        done.add(m)

    for m in sorted(graph):
        visit(m, [])
    assert circles == []


def test_the_core_never_imports_spark():
    code = "import sys, deepseg, deepseg.core.loop, deepseg.classifier; print('pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
    for path in (PACKAGE / "core").rglob("*.py"):
        assert not any(i.startswith("deepseg.spark") or i.startswith("deepseg.pipeline") for i in deepseg_imports(path)), path
