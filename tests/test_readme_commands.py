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

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

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
                if args is not None:
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


@cache
def _value_options() -> frozenset[str]:
    """Long options that take a value, as ``pytest --help`` shows them (``--imagenet=DIR``)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=_env())
    return frozenset(re.findall(r"(--[\w-]+)=\S", proc.stdout))


def _equals_form(args: list[str]) -> list[str]:
    """The same command with every long option's value joined by ``=``."""
    takes_value = _value_options()
    joined: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in takes_value and i + 1 < len(args):
            joined.append(f"{args[i]}={args[i + 1]}")
            i += 2
        else:
            joined.append(args[i])
            i += 1
    return joined


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


def _collected(args: list[str]) -> tuple[list[str], str]:
    proc = _run(args, "--collect-only", "-q", *_without_own_tests(args))
    output = proc.stdout + proc.stderr
    assert "unrecognized arguments" not in output and "usage:" not in output, (
        f"pytest {shlex.join(args)} stopped at the argument parser:\n{output[-3000:]}")
    assert "PytestUnknownMarkWarning" not in output and "Unknown pytest.mark" not in output, (
        f"pytest {shlex.join(args)} does not know a marker (ini-file not read?):\n{output[-3000:]}")
    assert proc.returncode in (0, 5), f"pytest {shlex.join(args)} exited {proc.returncode}:\n{output[-3000:]}"
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
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
    """Every collection the tests below compare, started at once, two at a time.

    A collection imports the whole suite (~8 s); pytest runs these tests on one core, so two
    subprocesses at a time halve the wait. Identical argument lists are collected once.
    """

    def __init__(self, outside: Path, inside: Path, out: Path):
        self.outside, self.inside, self.out = outside, inside, out
        self._pool = ThreadPoolExecutor(max_workers=2)
        self._futures: dict[tuple[str, ...], Future[tuple[list[str], str]]] = {}
        for command in documented_commands():
            self.submit_both(self.documented(command))
        for where, relative in HEADLINE_VARIANTS:
            self.submit_both(self.headline(where, relative))

    def documented(self, command: Command) -> list[str]:
        return _substitute(command.args, _make_data(self.outside, relative=False), self.out)

    def headline(self, where: str, relative: bool) -> list[str]:
        data = _make_data(self.outside if where == "outside" else self.inside, relative)
        return _substitute(_headline().args, data, self.out)

    def submit_both(self, args: list[str]) -> None:
        for form in (args, _equals_form(args)):
            if tuple(form) not in self._futures:
                self._futures[tuple(form)] = self._pool.submit(_collected, form)

    def result(self, args: list[str]) -> tuple[list[str], str]:
        return self._futures[tuple(args)].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def collections(outside: Path, inside: Path, out: Path) -> Iterator[Collections]:
    planned = Collections(outside, inside, out)
    yield planned
    planned.close()


def test_the_docs_hold_the_commands_we_promise() -> None:
    commands = documented_commands()
    where = {c.where.split(":")[0] for c in commands}
    assert {"README.md", "docs/nightly-workflow.yml"} <= where, where
    assert any("--imagenet" in c.args for c in commands)
    assert sum(c.where.startswith("docs/nightly-workflow.yml") for c in commands) == 4  # one per matrix chip


@pytest.mark.parametrize("command", documented_commands(), ids=lambda c: c.where)
def test_documented_command_parses_as_typed(command: Command, collections: Collections) -> None:
    args = collections.documented(command)
    typed, typed_output = collections.result(args)
    joined, _ = collections.result(_equals_form(args))
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
    joined, _ = collections.result(_equals_form(args))
    assert typed and typed == joined, output[-3000:]
    assert all(i.startswith("acceptance/") for i in typed), typed


def test_xdist_workers_take_the_repository_as_rootdir(outside: Path, tmp_path: Path) -> None:
    """A real run under two workers: each worker parses the typed command itself, and its JUnit
    equals the ``=`` form's (same test names, same properties, xunit1 format from the ini-file)."""
    data = _make_data(outside, relative=True)
    base = ["-m", "perf", "--chip", "310P3", "--measurements", "fixtures/baselines/Ascend310P3.csv",
            "--imagenet", data.imagenet, "--models", "resnext50_32x4d", "--no-report",
            "--results", str(tmp_path / "results.jsonl")]
    reports = {}
    for form, args in (("typed", base + ["-n", "2"]), ("joined", _equals_form(base))):
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
    from harness.__main__ import _parser

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
