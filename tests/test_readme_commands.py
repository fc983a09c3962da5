"""The documented commands are the contract: every ``pytest`` command in README.md and docs/ runs as typed.

Each command is taken from the Markdown (code blocks and inline code) and from the nightly
workflow's ``run:`` steps, its placeholders (``/data/imagenet``, ``$IMAGENET``, ``DIR``, ``<chip>``,
``${{ matrix.chip }}``) are given real paths and values, and it is run from the repository root
with ``--collect-only``. It fails on a usage error, on an unknown-marker warning, on a rootdir or
ini-file other than the repository's, and when the collected node ids differ from the same command
written with ``--option=value``: pytest takes the value of an option it does not know yet for a test
path (harness/pytest/rootdir.py), and only the space form shows it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.readme_collect import equals_form

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
WORKFLOWS = sorted((ROOT / "docs").glob("*.yml"))

# Option values that stand for the user's data, and what the test gives them.
DATA_OPTIONS = {"--imagenet": "imagenet", "--predictions": "predictions", "--imagenet-labels": "labels"}
OUTPUT_OPTIONS = ("--junitxml", "--junit-xml", "--results", "--report-dir")
PLACEHOLDER = re.compile(r"^[A-Z]+$|[<>$]|\{\{")


@dataclass(frozen=True)
class Command:
    """One documented pytest command: where it is written and its arguments after ``pytest``."""

    where: str
    args: tuple[str, ...]


def _pytest_args(argv: list[str]) -> list[str] | None:
    """The arguments after ``pytest`` / ``python -m pytest``, or None if argv runs something else."""
    if argv and Path(argv[0]).name == "pytest":
        return argv[1:]
    for i in range(len(argv) - 1):
        if argv[i] == "-m" and argv[i + 1] == "pytest" and "python" in Path(argv[0]).name:
            return argv[i + 2:]
    return None


def _shell_commands(text: str) -> Iterator[list[str]]:
    """The simple commands of a shell snippet: continuations joined, comments dropped, split at && and ;."""
    for line in text.replace("\\\n", " ").splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        current: list[str] = []
        for token in tokens + ["&&"]:
            if token in ("&&", ";", "||"):
                if current:
                    yield current
                current = []
            else:
                current.append(token)


def _markdown_snippets(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, shell text) of every fenced code block line group and every inline code span."""
    lines = path.read_text().splitlines()
    fence: list[str] | None = None
    start = 0
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            if fence is None:
                fence, start = [], number + 1
            else:
                block_start = start
                for offset, chunk in _logical_lines(fence):
                    yield block_start + offset, chunk
                fence = None
            continue
        if fence is not None:
            fence.append(line)
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span


def _logical_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    i = 0
    while i < len(lines):
        first, text = i, lines[i]
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + " " + lines[i]
        yield first, text
        i += 1


def _workflow_runs(path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(step name, run text, matrix values) of every ``run:`` step, once per matrix entry."""
    workflow = yaml.safe_load(path.read_text())
    for job_name, job in workflow.get("jobs", {}).items():
        matrix = (job.get("strategy") or {}).get("matrix") or {}
        entries = matrix.get("include") or [{}]
        for step in job.get("steps", []):
            if "run" not in step:
                continue
            for entry in entries:
                yield f"{job_name}/{step.get('name', 'run')}", step["run"], {str(k): str(v) for k, v in entry.items()}


@cache
def documented_commands() -> tuple[Command, ...]:
    found: list[Command] = []
    for doc in DOCS:
        for number, snippet in _markdown_snippets(doc):
            for argv in _shell_commands(snippet):
                args = _pytest_args(argv)
                # a usage line ([--opt A|B]) is not a command to run, as for the harness commands below
                if args is not None and not any(a.startswith("[") or "|" in a for a in args):
                    found.append(Command(f"{doc.relative_to(ROOT)}:{number}", tuple(args)))
    for workflow in WORKFLOWS:
        for step, text, matrix in _workflow_runs(workflow):
            for key, value in matrix.items():
                text = re.sub(r"\$\{\{\s*matrix\." + re.escape(key) + r"\s*\}\}", value, text)
            for argv in _shell_commands(text):
                args = _pytest_args(argv)
                if args is not None:
                    label = f"{workflow.relative_to(ROOT)}:{step}" + (f"[{matrix['chip']}]" if "chip" in matrix else "")
                    found.append(Command(label, tuple(args)))
    unique: dict[tuple[str, ...], Command] = {}
    for command in found:
        unique.setdefault(command.args, command)
    return tuple(unique.values())


@dataclass(frozen=True)
class DataPaths:
    """Real folders and files standing in for the user's data, somewhere relative to the repository."""

    imagenet: str
    predictions: str
    labels: str


def _make_data(base: Path, relative: bool) -> DataPaths:
    imagenet = base / "imagenet"
    (imagenet / "val").mkdir(parents=True, exist_ok=True)
    (imagenet / "val_label.txt").write_text("")
    predictions = base / "predictions"
    predictions.mkdir(exist_ok=True)
    labels = imagenet / "val_label.txt"

    def show(p: Path) -> str:
        return os.path.relpath(p, ROOT) if relative else str(p)

    return DataPaths(show(imagenet), show(predictions), show(labels))


def _substitute(args: tuple[str, ...], data: DataPaths, out: Path) -> list[str]:
    """The command with its placeholders given values, in the space form the docs use."""
    result: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in DATA_OPTIONS or name in OUTPUT_OPTIONS:
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            if name in DATA_OPTIONS:
                value = getattr(data, DATA_OPTIONS[name])
            else:
                value = str(out / Path(value.replace("<", "").replace(">", "")).name)
            result += [name, value]
        elif name == "--chip" and not eq and i + 1 < len(args) and PLACEHOLDER.search(args[i + 1]):
            result += ["--chip", "cpu"]
            i += 1
        else:
            if PLACEHOLDER.search(arg) and not arg.startswith("-"):
                raise AssertionError(f"unknown placeholder {arg!r} in a documented command {args}: give it a value "
                                     "in tests/test_readme_commands.py")
            result.append(arg)
        i += 1
    return result


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MZC_"))}
    env["MZC_PROGRESS"] = "0"
    env["MZC_CACHE_DIR"] = str(Path(os.environ.get("MZC_CACHE_DIR", ROOT / ".ci-cache")))
    return env


def _run(args: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=_env())


def _without_own_tests(args: list[str]) -> tuple[str, ...]:
    """The harness's own tests (tests/) take most of a collection's time (their imports) and no
    documented command selects them by its options: a command that names no path under tests/ is
    collected without them. Both forms of a command get the same, so they are still compared whole."""
    return () if any(a.startswith("tests") for a in args) else (f"--ignore-glob={ROOT / 'tests'}/*",)


def _collected(args: list[str], result: dict[str, Any]) -> tuple[list[str], str]:
    """The node ids of one collection (tests/readme_collect.py's result), after checking it went through."""
    output = result["stdout"] + result["stderr"]
    assert "unrecognized arguments" not in output and "usage:" not in output, (
        f"pytest {shlex.join(args)} stopped at the argument parser:\n{output[-3000:]}")
    assert "PytestUnknownMarkWarning" not in output and "Unknown pytest.mark" not in output, (
        f"pytest {shlex.join(args)} does not know a marker (ini-file not read?):\n{output[-3000:]}")
    assert result["code"] in (0, 5), f"pytest {shlex.join(args)} exited {result['code']}:\n{output[-3000:]}"
    ids = [line for line in result["stdout"].splitlines() if "::" in line]
    return ids, output


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the repository (the usual place of ImageNet)."""
    return tmp_path_factory.mktemp("data-outside-repo")


@pytest.fixture(scope="module")
def inside() -> Iterator[Path]:
    """A folder inside the repository (some users keep a data symlink there)."""
    path = ROOT / f".readme-commands-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the commands' --junitxml / --results files go."""
    return tmp_path_factory.mktemp("outputs")


def _headline() -> Command:
    return next(c for c in documented_commands() if "--imagenet" in c.args and c.where.startswith("README.md"))


HEADLINE_VARIANTS = [(where, relative) for where in ("outside", "inside") for relative in (False, True)]


class Collections:
    """Every collection the tests below compare, in both forms, made in one subprocess.

    tests/readme_collect.py runs them one after the other with ``pytest.main``: the suite's imports
    (~7 s) are paid once instead of once per collection (a subprocess each, ~50 of them). Identical
    argument lists are collected once.
    """

    def __init__(self, outside: Path, inside: Path, out: Path, work: Path):
        self.outside, self.inside, self.out = outside, inside, out
        commands = [self.documented(c) for c in documented_commands()]
        commands += [self.headline(where, relative) for where, relative in HEADLINE_VARIANTS]
        jobs = [{"args": args, "extra": ["-p", "no:cacheprovider", "--collect-only", "-q", *_without_own_tests(args)]}
                for args in commands]
        (work / "in.json").write_text(json.dumps(jobs))
        proc = subprocess.run([sys.executable, "-m", "tests.readme_collect", str(work / "in.json"),
                               str(work / "out.json")], cwd=ROOT, capture_output=True, text=True, timeout=900,
                              env=_env())
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        answer = json.loads((work / "out.json").read_text())
        self.value_options = frozenset(answer["value_options"])
        self._joined: dict[tuple[str, ...], list[str]] = {}
        self._results: dict[tuple[str, ...], dict[str, Any]] = {}
        for args, found in zip(commands, answer["results"], strict=True):
            self._joined[tuple(args)] = found["joined"]
            self._results[tuple(args)] = found["typed_result"]
            self._results[tuple(found["joined"])] = found["joined_result"]

    def documented(self, command: Command) -> list[str]:
        return _substitute(command.args, _make_data(self.outside, relative=False), self.out)

    def headline(self, where: str, relative: bool) -> list[str]:
        data = _make_data(self.outside if where == "outside" else self.inside, relative)
        return _substitute(_headline().args, data, self.out)

    def joined(self, args: list[str]) -> list[str]:
        """``args`` with every long option's value joined by ``=``."""
        return self._joined[tuple(args)]

    def result(self, args: list[str]) -> tuple[list[str], str]:
        return _collected(args, self._results[tuple(args)])


@pytest.fixture(scope="module")
def collections(outside: Path, inside: Path, out: Path, tmp_path_factory: pytest.TempPathFactory) -> Collections:
    return Collections(outside, inside, out, tmp_path_factory.mktemp("collections"))


def test_the_docs_hold_the_commands_we_promise() -> None:
    commands = documented_commands()
    where = {c.where.split(":")[0] for c in commands}
    assert {"README.md", "docs/nightly-workflow.yml"} <= where, where
    assert any("--imagenet" in c.args for c in commands)
    nightly = [c.where for c in commands if c.where.startswith("docs/nightly-workflow.yml") and "[" in c.where]
    assert {"Ascend310", "Ascend310P3", "T4", "cpu"} <= {w.rsplit("[", 1)[1].rstrip("]") for w in nightly}, nightly


# --------------------------------------------------------------------------------------------
# The README's first two lines, and no command in it that runs whichever python/pip is on PATH

README = ROOT / "README.md"
# Without an activated venv these run another Python (or none) and install elsewhere: the README
# says .venv/bin/python, .venv/bin/pip, as scripts/setup.sh leaves them.
BARE = frozenset({"python", "python3", "pip", "pip3", "pytest"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def bare_commands(path: Path) -> list[str]:
    """``line: command`` of every command in the Markdown file (code blocks and inline code) whose
    program, after any leading ``NAME=value`` assignments, is a bare python, pip or pytest."""
    found = []
    for number, snippet in _markdown_snippets(path):
        for argv in _shell_commands(snippet):
            words = list(argv)
            while words and _ASSIGNMENT.match(words[0]):
                words.pop(0)
            if len(words) > 1 and words[0] in BARE:  # a program named alone (`python3`) is a mention
                found.append(f"{path.name}:{number}: {shlex.join(argv)}")
    return found


def test_bare_commands_are_found(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("Run `python -m harness report x`, `.venv/bin/python -m harness report x` (`python3`) or\n\n```sh\n"
                   "MZC_PROGRESS=0 pip install -e '.[mutation]'   # pip\n.venv/bin/pip install -e .\n"
                   "bash scripts/setup.sh && pytest -m perf\n```\n")
    assert bare_commands(doc) == ["README.md:1: python -m harness report x",
                                  "README.md:4: MZC_PROGRESS=0 pip install -e '.[mutation]'",
                                  "README.md:6: pytest -m perf"]


def test_every_readme_command_runs_the_venv() -> None:
    assert bare_commands(README) == [], "write .venv/bin/python, .venv/bin/pip (as scripts/setup.sh makes them)"


def _first_block() -> list[list[str]]:
    """The commands of the README's first code block, which must open it (after the title)."""
    lines = README.read_text().splitlines()
    assert lines[0].startswith("# ") and lines[2].startswith("```") and lines[5] == "```", lines[:6]
    return [shlex.split(line, comments=True) for line in lines[3:5]]


def test_the_readme_opens_with_the_main_job_and_the_tests(collections: Collections) -> None:
    """Line 1 runs the main job on its embedded default (every kind of certification, no data);
    line 2 runs the tests as CI does (.ci/run) over both test folders. Both set up .venv first."""
    main_job, tests = _first_block()
    for command in (main_job, tests):
        assert command[:3] == ["bash", "scripts/setup.sh", "&&"], command
    assert subprocess.run(["bash", "-n", "scripts/setup.sh", "scripts/test.sh"], cwd=ROOT).returncode == 0

    assert main_job[3:6] == [".venv/bin/python", "-m", "pytest"], main_job
    collected, output = collections.result(_pytest_args(main_job[3:]) or [])
    kinds = {node.split("::")[1].split("[")[0] for node in collected}
    assert {"test_export_parity", "test_accuracy", "test_agreement", "test_throughput"} <= kinds, output[-3000:]
    assert all(node.startswith("acceptance/") for node in collected), collected[:3]

    assert tests[3:] == ["bash", "scripts/test.sh"], tests
    ci = [argv for argv in _shell_commands((ROOT / ".ci/run").read_text()) if argv[:2] == ["bash", "scripts/test.sh"]]
    assert ci, ".ci/run no longer runs the README's test command"
    # scripts/test.sh names no path: pytest takes pyproject's testpaths, the harness tests and acceptance
    assert 'testpaths = ["tests", "acceptance"]' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("command", documented_commands(), ids=lambda c: c.where)
def test_documented_command_parses_as_typed(command: Command, collections: Collections) -> None:
    args = collections.documented(command)
    typed, typed_output = collections.result(args)
    joined, _ = collections.result(collections.joined(args))
    assert typed == joined, (
        f"{command.where}: the space form collects other tests than the = form:\n{typed_output[-3000:]}"
    )
    assert all(i.split("/")[0] in ("tests", "acceptance", "benchmarks") for i in typed), (
        f"{command.where}: node ids are not relative to the repository root: {typed[:3]}")


@pytest.mark.parametrize(("where", "relative"), HEADLINE_VARIANTS,
                         ids=[f"{'relative' if r else 'absolute'}-{w}" for w, r in HEADLINE_VARIANTS])
def test_headline_command_with_data_anywhere(where: str, relative: bool, collections: Collections) -> None:
    """(``--collect-only`` turns pytest-xdist off: the run under ``-n 2`` is the test below.)"""
    args = collections.headline(where, relative)
    typed, output = collections.result(args)
    joined, _ = collections.result(collections.joined(args))
    assert typed and typed == joined, output[-3000:]
    assert all(i.startswith("acceptance/") for i in typed), typed


def test_xdist_workers_take_the_repository_as_rootdir(outside: Path, tmp_path: Path, collections: Collections) -> None:
    """A real run under two workers: each worker parses the typed command itself, and its JUnit
    equals the ``=`` form's (same test names, same properties, xunit1 format from the ini-file)."""
    data = _make_data(outside, relative=True)
    base = ["-m", "perf", "--chip", "310P3", "--measurements", "fixtures/baselines/Ascend310P3.csv",
            "--imagenet", data.imagenet, "--models", "resnext50_32x4d", "--no-report",
            "--results", str(tmp_path / "results.jsonl")]
    reports = {}
    joined = equals_form(base, collections.value_options)
    for form, args in (("typed", base + ["-n", "2"]), ("joined", joined)):
        junit = tmp_path / f"{form}.xml"
        proc = _run(args, "--junitxml", str(junit))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert "rootdir" not in proc.stderr, proc.stderr
        cases = {}
        for case in ET.parse(junit).getroot().iter("testcase"):
            cases[(case.get("classname"), case.get("name"))] = {
                p.get("name"): p.get("value") for p in case.iter("property")
            }
        reports[form] = cases
    assert reports["typed"] and set(reports["typed"]) == set(reports["joined"])
    for key, props in reports["typed"].items():
        assert props.keys() == reports["joined"][key].keys(), key


# --------------------------------------------------------------------------------------------
# python -m harness COMMAND: every documented one parses as typed; those that need no data run


def _harness_args(argv: list[str]) -> list[str] | None:
    """The arguments after ``python -m harness``, or None if argv runs something else."""
    for i in range(len(argv) - 1):
        if argv[i] == "-m" and argv[i + 1] == "harness" and "python" in Path(argv[0]).name:
            return argv[i + 2:]
    return None


@cache
def documented_harness_commands() -> tuple[Command, ...]:
    found: dict[tuple[str, ...], Command] = {}
    for doc in DOCS:
        for number, snippet in _markdown_snippets(doc):
            for argv in _shell_commands(snippet):
                args = _harness_args(argv)
                # a mention of a command (no arguments) or a usage line ([--opt A|B]) is not a command to run
                if args and len(args) > 1 and not any(a.startswith("[") or "|" in a for a in args):
                    found.setdefault(tuple(args), Command(f"{doc.relative_to(ROOT)}:{number}", tuple(args)))
    return tuple(found.values())


def test_the_docs_show_the_harness_commands() -> None:
    commands = {c.args[0] for c in documented_harness_commands()}
    assert {"report", "localize", "models"} <= commands, commands


@pytest.mark.parametrize("command", documented_harness_commands(), ids=lambda c: c.where)
def test_documented_harness_command_parses_as_typed(command: Command) -> None:
    """Every option and value of the documented command is one the command accepts (argparse
    exits 2 on an unknown option or a bad choice); commands that need no data of the user's run."""
    from harness.__main__ import parser as _parser

    try:
        args = _parser().parse_args(list(command.args))
    except SystemExit as exc:
        raise AssertionError(f"{command.where}: python -m harness {shlex.join(command.args)} does not parse "
                             f"(exit {exc.code})") from None
    assert callable(args.main)
    if command.args[0] == "models":
        proc = subprocess.run([sys.executable, "-m", "harness", *command.args], cwd=ROOT, capture_output=True,
                              text=True, timeout=600, env={**os.environ, "MZC_PROGRESS": "0"})
        assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-2000:]
