"""What the README, docs/ and the embedded model's card say is what the code does and what was measured: tables that
copy a results file are identical to it, every table is well formed, every path, command-line flag and `medrg.`
name they mention exists, and the numbers they state in prose are read off the code or the results files."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
DOCS = [
    REPO_ROOT / "README.md",
    *sorted((REPO_ROOT / "docs").glob("*.md")),
    REPO_ROOT / "medrg" / "default_model" / "README.md",
    REPO_ROOT / "medrg" / "default_model" / "RECIPE.md",
]
README = (REPO_ROOT / "README.md").read_text()
FLAT_README = " ".join(README.split())


def doc_ids(paths):
    return [str(p.relative_to(REPO_ROOT)) for p in paths]


def tables(text: str) -> list[list[list[str]]]:
    """The markdown tables of `text`, each a list of rows of stripped cells (the `|---|` line left out)."""
    found, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))  # an escaped \| stays in its cell
            current.append([cell.strip() for cell in cells])
        elif current:
            found.append([row for row in current if not all(set(c) <= set("-: ") for c in row)])
            current = []
    return found


def results_tables() -> dict[tuple[str, ...], tuple[str, list[list[str]]]]:
    out = {}
    for path in sorted(RESULTS.glob("*.md")):
        for table in tables(path.read_text()):
            out.setdefault(tuple(table[0]), (path.name, table))
    return out


@pytest.mark.parametrize(
    "path", DOCS + sorted(RESULTS.glob("*.md")), ids=doc_ids(DOCS + sorted(RESULTS.glob("*.md")))
)
def test_every_table_row_has_a_cell_per_column(path):
    for table in tables(path.read_text()):
        for row in table[1:]:
            assert len(row) == len(table[0]), f"{path.name}: row {row} under {table[0]}"


@pytest.mark.parametrize("path", DOCS, ids=doc_ids(DOCS))
def test_a_table_with_a_results_files_columns_is_a_copy_of_it(path):
    measured = results_tables()
    copies = 0
    for table in tables(path.read_text()):
        if tuple(table[0]) in measured:
            name, result = measured[tuple(table[0])]
            assert table == result, (
                f"{path.name}: the table {table[0]} differs from benchmarks/results/{name}"
            )
            copies += 1
    if path.name == "README.md" and path.parent == REPO_ROOT:
        assert copies >= 10  # seeing, sides, targets, inference, scaling, roofline tables


def test_readme_reading_table_is_the_measured_one():
    """The README's ChestX-ray8 reading table has the numbers of `reading_reports_default.md`, row by row."""
    measured = {}
    for row in tables((RESULTS / "reading_reports_default.md").read_text())[0][1:]:
        writer = re.search(r"(template|gpt|llama) reports", row[0])
        if writer:
            method = {"prior (text only)": "prior"}.get(
                row[1], row[1].rsplit(" ", 1)[-1].split(",")[-1].strip()
            )
            measured[(writer.group(1), method)] = row[2:8]
    table = next(
        t for t in tables(README) if t[0][:3] == ["reports", "method", "acc@0.1"] and "ECE" in t[0][-1]
    )
    writers = {"template": "template", "GPT-written": "gpt", "LLaMA-written (unseen writer)": "llama"}
    for row in table[1:]:
        method = {"prior (text only)": "prior"}.get(row[1], row[1].split(", ")[-1])
        key = (writers[row[0]], {"free": "reading", "guided": "report-guided"}.get(method, method))
        assert row[2:] == measured[key], f"README row {row} vs reading_reports_default.md {measured[key]}"
    assert len(table) - 1 == len(measured) == 9


PATH_PATTERN = re.compile(
    r"(?<![\w/.-])((?:docs|configs|benchmarks|processing|modeling_medrg|medrg|evaluation|recipes|tests|hub_cards)"
    r"/[\w./-]*\w)(?![\w*{<])"  # a path pattern (`bench_*`, `NAME_{x}`) is not a path
)
# written by a command that needs an accelerator; not in the repository until one runs it
OUTPUTS_NOT_COMMITTED = {"benchmarks/results/gpu_check.json"}


@pytest.mark.parametrize("path", DOCS, ids=doc_ids(DOCS))
def test_every_repository_path_named_exists(path):
    text = path.read_text()
    named = sorted(set(PATH_PATTERN.findall(text)))
    assert named
    placeholder = re.compile(r"/[A-Z]+[./]")  # configs/NAME.yaml
    missing = [
        p for p in named
        if not (REPO_ROOT / p).exists() and p not in OUTPUTS_NOT_COMMITTED and not placeholder.search(p)
    ]  # fmt: skip
    assert not missing, f"{path.name} names paths that do not exist: {missing}"


def cli_flags() -> dict[str, set[str]]:
    from medrg.cli import SUBCOMMANDS, build_parser

    flags = {}
    for command in SUBCOMMANDS:
        parser = build_parser([command])
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        flags[command] = {option for action in sub._actions for option in action.option_strings}
    return flags


@pytest.mark.parametrize("path", DOCS, ids=doc_ids(DOCS))
def test_every_command_line_flag_named_exists(path):
    flags = cli_flags()
    spans = re.findall(r"```(?:bash)?\n(.*?)```|`([^`\n]+)`", path.read_text(), re.S)
    checked = 0
    for span in (a or b for a, b in spans):
        for line in span.splitlines():
            for command, rest in re.findall(r"\bmedrg (ground|evaluate|train|export|demo)\b([^;&|`]*)", line):
                for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
                    assert flag in flags[command], f"{path.name}: `medrg {command} {flag}` is not an option"
                    checked += 1
    if path.name == "README.md" and path.parent == REPO_ROOT:
        assert checked >= 5


@pytest.mark.parametrize("path", DOCS, ids=doc_ids(DOCS))
def test_every_medrg_name_named_exists(path):
    names = sorted(set(re.findall(r"\bmedrg(?:\.[A-Za-z_]\w*)+", path.read_text())))
    for name in names:
        parts = name.split(".")
        target, index = None, len(parts)
        while index > 0:  # the longest importable module, then attributes
            try:
                target = importlib.import_module(".".join(parts[:index]))
                break
            except ModuleNotFoundError:
                index -= 1
        for attribute in parts[index:]:
            assert hasattr(target, attribute), f"{path.name}: `{name}` does not exist"
            target = getattr(target, attribute)


def test_numbers_the_readme_states_in_prose():
    from medrg.processing.pipeline_medrg import DEFAULT_THRESHOLD
    from medrg.processing.reading_medrg import MAX_REPORT_CHARS
    from medrg.processing.vocabulary_medrg import default_vocabulary

    size = (REPO_ROOT / "medrg" / "default_model" / "model.safetensors").stat().st_size / 2**20
    assert f"a {round(size)} MiB" in FLAT_README
    categories = len(default_vocabulary()["findings"])
    assert f"{categories} categories" in FLAT_README
    assert f"`medrg.processing.pipeline_medrg.DEFAULT_THRESHOLD` ({DEFAULT_THRESHOLD})" in FLAT_README
    assert f"a report over {MAX_REPORT_CHARS:,} characters is refused" in FLAT_README
    inference = json.loads((RESULTS / "bench_inference.json").read_text())["data"]["models"]["default"]
    assert f"`import medrg` {inference['cold_start']['import_medrg_s']:.3f} s" in FLAT_README
    assert f"p50 {round(inference['batch1']['p50_ms'])} ms per report" in FLAT_README


def test_the_readme_example_output_is_what_the_cli_prints(capsys):
    """The README's first command's printed lines, with the embedded default model."""
    from medrg.cli import main

    block = re.search(r"It prints .*?```\n(.*?)```", README, re.S).group(1)
    main(["ground", "--image", str(REPO_ROOT / "docs" / "example_cxr.png"), "--report-file",
          str(REPO_ROOT / "docs" / "example_report.txt")])  # fmt: skip
    assert capsys.readouterr().out == block


def test_readme_benchmark_block_is_the_generators_output():
    import sys

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        from run_all import readme_table
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))
    start = README.index("\n", README.index("<!-- benchmarks:")) + 1
    end = README.index("<!-- end of benchmarks -->")
    assert README[start:end] == readme_table(RESULTS).rstrip("\n") + "\n"
