"""README.md stays short, and every command in it runs as written.

* At most 250 lines; its first code block, right under the title, is exactly ``make demo`` and
  ``make test``; no dated measurements (those live in docs/tuning-log.md and the benchmark reports).
* Every ```` ```python ```` block runs. Convention: a block that does not mention Spark runs here,
  exactly as shown, in seconds; a block that mentions Spark is compiled here, its imports resolved
  and its estimators' keyword arguments checked against their parameters, and it runs in full
  too (a Spark fit: a few minutes on 2 cores).
* Every command of a ```` ```bash ```` block names something real: ``make`` targets of the
  Makefile; ``deepseg`` subcommands and options that ``deepseg.cli.build_parser()`` accepts;
  ``spark-submit`` lines that use only options tests/jobs/test_spark_submit.py exercises, on a
  ``jobs/*.py`` whose CLI stage accepts the arguments; ``python`` scripts that exist, with the
  flags a notebook parses, or ``-m`` modules that import.
* Repository paths in inline code (``deepseg/...``, ``tests/...``, ``conf/...``) exist, and the
  relative links of README.md and docs/*.md point at files (and headings) that exist.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_LINES = 250
FIRST_COMMANDS = ["make demo", "make test"]
SPARK_SUBMIT_TEST = REPO / "tests" / "jobs" / "test_spark_submit.py"
SHELL = {"bash", "sh", "shell", "console"}
PATH_ROOTS = ("deepseg", "tests", "jobs", "conf", "notebooks", "benchmarks", "docs", "scripts")


# ------------------------------------------------------------------ parsing
def code_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line number of the opening fence, language, code)`` of every fenced block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^\s*```(\S*)\s*$", lines[i])
        if m:
            start, lang, body = i + 1, m.group(1).lower(), []
            i += 1
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"README.md:{start}: unclosed code block"
            blocks.append((start, lang, "\n".join(body) + "\n"))
        i += 1
    return blocks


def blocks_of(*langs: str) -> list[tuple[int, str]]:
    return [(n, code) for n, lang, code in code_blocks(README.read_text()) if lang in langs]


def shell_commands() -> list[tuple[str, list[str]]]:
    """``(README.md:<line>, tokens)`` of every command of the shell blocks, comments stripped."""
    out = []
    for start, code in blocks_of(*SHELL):
        for offset, line in enumerate(code.splitlines(), 1):
            tokens = shlex.split(line, comments=True)
            if tokens:
                out.append((f"README.md:{start + offset}", tokens))
    return out


def is_spark(code: str) -> bool:
    return "spark" in code.lower()


def python_blocks(spark: bool) -> list[tuple[int, str]]:
    return [(n, code) for n, code in blocks_of("python") if is_spark(code) == spark]


def _ids(blocks) -> list[str]:
    return [f"README.md:{n}" for n, _ in blocks]


# ------------------------------------------------------------------ shape
def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; at most {MAX_LINES} (move detail to docs/)"
    start, lang, code = code_blocks(text)[0]
    assert lines[0].startswith("# ") and all(not line.strip() for line in lines[1:start - 1]), \
        "the first code block must come right under the title"
    assert lang in SHELL
    commands = [" ".join(shlex.split(line, comments=True)) for line in code.splitlines()]
    assert [c for c in commands if c] == FIRST_COMMANDS
    assert all("#" in line for line in code.splitlines() if line.strip()), "each command keeps its one-line explanation"


def test_readme_has_no_dated_measurements():
    dated = [f"README.md:{i}: {line.strip()}" for i, line in enumerate(README.read_text().splitlines(), 1)
             if re.search(r"\b20\d\d-\d\d-\d\d\b", line)]
    assert not dated, "dated measurements belong in docs/ (tuning-log.md, benchmarks*.md):\n" + "\n".join(dated)


# ------------------------------------------------------------------ python blocks
@pytest.mark.parametrize("start,code", python_blocks(spark=False), ids=_ids(python_blocks(spark=False)))
def test_python_block_runs(start, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever the example writes stays out of the checkout
    exec(compile(code, f"README.md:{start}", "exec"), {"__name__": "__readme__"})


def _imported_names(tree: ast.Module) -> dict[str, object]:
    """Every name a block imports, resolved (an import that fails fails the test)."""
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = importlib.import_module(alias.name)
    return names


def _check_keywords(tree: ast.Module, names: dict[str, object], where: str) -> int:
    """Keyword arguments of calls to deepseg estimators must be their parameters; returns the
    number of calls checked."""
    from pyspark.ml.param import Params
    from sklearn.base import BaseEstimator

    checked = 0
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        target = names.get(node.func.id)
        if not (isinstance(target, type) and target.__module__.startswith("deepseg")):
            continue
        given = [k.arg for k in node.keywords if k.arg is not None]
        if issubclass(target, Params):
            instance = target()
            unknown = [k for k in given if not instance.hasParam(k)]
        elif issubclass(target, BaseEstimator):
            unknown = [k for k in given if k not in target().get_params()]
        else:
            continue
        assert not unknown, f"{where}: {target.__name__} has no parameter(s) {unknown}"
        checked += 1
    return checked


@pytest.mark.parametrize("start,code", python_blocks(spark=True), ids=_ids(python_blocks(spark=True)))
def test_spark_block_imports_and_parameters(start, code):
    pytest.importorskip("pyspark")
    tree = ast.parse(code, f"README.md:{start}")
    compile(tree, f"README.md:{start}", "exec")
    names = _imported_names(tree)
    assert _check_keywords(tree, names, f"README.md:{start}") > 0, "no deepseg estimator call to check"


@pytest.mark.spark
@pytest.mark.parametrize("start,code", python_blocks(spark=True), ids=_ids(python_blocks(spark=True)))
def test_spark_block_runs(start, code, tmp_path, monkeypatch):
    pytest.importorskip("pyspark")
    pytest.importorskip("delta")
    from pyspark.sql import SparkSession

    before = SparkSession.getActiveSession()
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(code, f"README.md:{start}", "exec"), {"__name__": "__readme__"})
    finally:
        session = SparkSession.getActiveSession()
        if before is None and session is not None:  # leave a session other tests opened alone
            session.stop()


# ------------------------------------------------------------------ shell commands
def make_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", line)
        if m and not m.group(1).startswith("."):
            targets.add(m.group(1))
    return targets


def parses(argv: list[str]) -> bool:
    """Whether ``deepseg <argv>`` is a valid command line (nothing runs)."""
    from deepseg.cli import build_parser

    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull), contextlib.redirect_stdout(devnull):
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            return False
    return True


def job_stage(script: Path) -> str:
    """The ``deepseg`` subcommand a ``jobs/*.py`` entry point runs: ``main(["<stage>", *argv])``."""
    m = re.search(r"""main\(\[\s*["'](\w+)["']\s*,\s*\*sys\.argv\[1:\]\s*\]\)""", script.read_text())
    assert m, f"{script.relative_to(REPO)} does not call deepseg.cli.main([<stage>, *sys.argv[1:]])"
    return m.group(1)


def notebook_flags(script: Path) -> set[str]:
    """The ``--name`` flags a notebook reads locally: the parameters every notebook has
    (:func:`deepseg.notebook.notebook_params`) plus the defaults it passes to it."""
    from deepseg.notebook import notebook_params

    names = set(notebook_params({}, argv=[], environ={}))
    for node in ast.walk(ast.parse(script.read_text())):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "notebook_params"
                and node.args and isinstance(node.args[0], ast.Dict)):
            names |= {k.value for k in node.args[0].keys if isinstance(k, ast.Constant)}
    return {f"--{name}" for name in names}


def options(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("-")]


def check_command(tokens: list[str]) -> str | None:
    """None if `tokens` names only real things, else what is wrong."""
    tokens = [t for t in tokens if not re.match(r"^[A-Z_][A-Z0-9_]*=", t)]  # leading VAR=value
    program = Path(tokens[0]).name
    if program != tokens[0] and tokens[0] != f".venv/bin/{program}":
        return f"{tokens[0]}: name a program on the PATH or the venv's own (.venv/bin/{program})"
    args = tokens[1:]
    if program == "make":
        missing = sorted(set(a for a in args if "=" not in a) - make_targets())
        return f"no Makefile target(s) {missing}" if missing else None
    if program == "deepseg":
        return None if parses(args) else f"deepseg.cli.build_parser() rejects {args}"
    if program == "spark-submit":
        scripts = [i for i, t in enumerate(args) if t.endswith(".py")]
        if not scripts:
            return "no application script"
        i = scripts[0]
        script = REPO / args[i]
        if not (args[i].startswith("jobs/") and script.is_file()):
            return f"{args[i]} is not a file under jobs/"
        exercised = SPARK_SUBMIT_TEST.read_text()
        untested = [o for o in options(args[:i] + args[i + 1:]) if f'"{o}"' not in exercised]
        if untested:
            return f"spark-submit options {untested} are not exercised by {SPARK_SUBMIT_TEST.relative_to(REPO)}"
        stage = job_stage(script)
        return None if parses([stage, *args[i + 1:]]) else f"`deepseg {stage}` rejects {args[i + 1:]}"
    if program in ("python", "python3"):
        if args[:1] == ["-m"]:
            return None if importlib.util.find_spec(args[1]) else f"no module {args[1]}"
        script = REPO / args[0]
        if not script.is_file():
            return f"no file {args[0]}"
        if args[0].startswith("notebooks/"):
            unknown = sorted(set(options(args[1:])) - notebook_flags(script))
            return f"{args[0]} parses no {unknown}" if unknown else None
        return None
    return f"{tokens[0]}: a kind of command tests/test_readme.py does not check yet; teach it"


def test_shell_commands_name_real_things():
    commands = shell_commands()
    assert commands
    problems = []
    for where, tokens in commands:
        for token in tokens:  # every repository path named must exist
            if re.match(rf"^({'|'.join(PATH_ROOTS)})/[\w./-]+$", token) and not (REPO / token).exists():
                problems.append(f"{where}: no {token}")
        problem = check_command(tokens)
        if problem:
            problems.append(f"{where}: {' '.join(tokens)}: {problem}")
    assert not problems, "\n".join(problems)


def test_shell_checks_catch_mistakes():
    """The checker itself: each of these must be refused."""
    assert check_command(["make", "no-such-target"])
    assert check_command([".venv/bin/deepseg", "no-such-stage"])
    assert check_command([".venv/bin/deepseg", "train", "--no-such-flag"])
    assert check_command([".venv/bin/spark-submit", "--packages", "x", "jobs/train.py", "--conf", "conf/local.yaml"])
    assert check_command([".venv/bin/spark-submit", "jobs/no_such_job.py", "--conf", "conf/local.yaml"])
    assert check_command([".venv/bin/spark-submit", "jobs/train.py", "--all"])  # a score option
    assert check_command([".venv/bin/python", "notebooks/quickstart.py", "--stages", "score"])
    assert check_command(["curl", "http://example.com"])
    assert check_command([".venv/bin/spark-submit", "jobs/score.py", "--conf", "conf/local.yaml", "--all"])
    assert check_command([".venv/bin/spark-submit", "jobs/score.py", "--conf", "conf/local.yaml"]) is None
    assert check_command([".venv/bin/python", "notebooks/train_and_score.py", "--stages", "score"]) is None


# ------------------------------------------------------------------ paths and links
def test_repository_paths_in_readme_exist():
    spans = re.findall(r"`([^`\n]+)`", README.read_text())
    named = {s for s in spans if re.match(rf"^({'|'.join(PATH_ROOTS)})/[\w./-]*$", s)}
    assert named
    missing = sorted(s for s in named if not (REPO / s).exists())
    assert not missing, f"README.md names paths that do not exist: {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", [README, *sorted((REPO / "docs").glob("*.md"))], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif anchor:
            headings = {_slug(m) for m in re.findall(r"^#+\s+(.*)$", file.read_text(), re.MULTILINE)}
            if anchor not in headings:
                problems.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert not problems, f"{doc.relative_to(REPO)}: " + "; ".join(problems)
