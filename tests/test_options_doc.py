"""README.md's options tables are what harness/options.py and harness/cli/ declare (harness/options_doc.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import options
from harness.__main__ import parser
from harness.options_doc import BEGIN, DOC, END, _commands, main, option_row, render


def test_the_readme_tables_are_what_the_declarations_generate() -> None:
    text = DOC.read_text()
    assert render(text) == text, "README.md's options tables are stale: run .venv/bin/python -m harness.options_doc"


def test_no_cell_is_an_empty_code_span() -> None:
    """An empty default (``""``, ``[]``) shows as the no-default dash, not as `` (nothing, rendered)."""
    table = render(DOC.read_text()).split(BEGIN, 1)[1].split(END, 1)[0]
    assert "| `` |" not in table and "``" not in table.replace("```", "")


def test_every_command_of_python_m_harness_is_documented() -> None:
    """The tables are written from the declarations themselves (so a declared option cannot miss its
    row); what can go wrong is a command left out of the walk over the parser's subcommands."""
    assert {"report", "localize", "models", "reference export", "reference import", "merge"} <= {
        name for name, _, _ in _commands(parser(), "")}


@pytest.mark.parametrize(("option", "row"), [
    (options.LIMIT, "| `--limit` | `N` | — | a deterministic subset of N images of --imagenet (ordered by a hash of "
                    "the name) |"),
    (options.OPSET, "| `--opset` | `N` | `11` |"),
    (options.PRECISION, "| `--precision` | " + " \\| ".join(f"`{c}`" for c in options.PRECISION.choices or ())
     + " | — |"),
    (options.CHIP, "| `--chip` | `CHIP[,CHIP]` | `cpu` |"),
    (options.DEVICE_IDS, "| `--device-ids` | `0,1,2,3` | `0` |"),
    (options.MEASUREMENTS, "| `--measurements` | `FILE\\|DIR` | — |"),
    (options.LOCALIZE_ON_FAIL, "| `--localize-on-fail` |  | on |"),
    (options.NO_LOCALIZE, "| `--no-localize` |  | off |"),
    (options.RESULTS, "| `--results` | `FILE` | `reports/results.jsonl` |"),
])
def test_a_row_says_name_values_default_and_help(option: options.Option, row: str) -> None:
    assert option_row(option).startswith(row)
    assert option_row(option).count(" | ") == 3  # four cells: a | in a help text is escaped


def test_help_text_is_safe_in_a_table_cell() -> None:
    row = option_row(options.Option("--x", "a|b, <chip>.csv, DIR/*.JPEG and tv:*", metavar="A|B"))
    assert row == "| `--x` | `A\\|B` | — | a\\|b, &lt;chip>.csv, DIR/\\*.JPEG and tv:\\* |"


def test_check_fails_on_a_stale_file_and_regeneration_fixes_it(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text(f"# title\n\n{BEGIN}\n| `--limit` | STALE-ROW |\n{END}\n\nafter\n")
    assert main(["--check"], doc=doc) == 1
    assert main([], doc=doc) == 0
    assert main(["--check"], doc=doc) == 0
    text = doc.read_text()
    assert text.startswith(f"# title\n\n{BEGIN}\n") and text.endswith(f"{END}\n\nafter\n") and "STALE-ROW" not in text


def test_a_file_without_the_markers_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("# title\n")
    with pytest.raises(ValueError, match="markers"):
        main(["--check"], doc=doc)
