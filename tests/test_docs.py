"""Docs that can't lie: the README, CONTRIBUTING.md and every page of docs/ are checked against the code.

- Every Python block runs (pytest-examples), on tiny models and the bundled demo data: a block may use the
  names of `GIVENS` (`model`, `tokenizer`, `train`, `dev`, ...) as the reader's own, fresh for each block; other
  names carry over from the blocks above it on the same page. Every offline shell command runs too, in a
  scratch folder, in the order of the nav; a recipe's training run is capped at `--max_steps 3` (the figures of
  the demos are tests/test_demos.py's), a search (`hfopt optimize`) at two trials.
- A block that cannot run here has `<!-- skip: REASON -->` on the line before it: it is skipped with that
  reason (shown by `-rs`). A skipped Python block still has its imports run.
- Every command, run or not, in blocks and in inline code (`hfopt <command>`, `accelerate launch`, `hfopt
  launch`, `python recipes/X.py`, `python bench/X.py`, `sbatch recipes/launch.slurm`, `make X`, `pip install`
  extras) is checked against the real argument parsers without training: its command exists, its flags exist
  (and, in a concrete command, parse with the recipe's own parser and checks), the repository files it names
  exist. Any other `--flag` anywhere in the docs must be a flag of one of those parsers.
- Benchmark figures are included from bench/results/*.md with snippets, never typed: a figure of three or more
  significant digits found in bench/results/ fails anywhere else; the README's one-figure-each table is
  checked against the JSON it comes from.

The blocks that run are `slow` (recipes in subprocesses; about three minutes on two CPU cores); the checks are
unit tests. The module prints how many blocks ran and were skipped.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.testing_utils import ROOT, recipe_env

pytest_examples = pytest.importorskip("pytest_examples", reason="needs pytest-examples (the test extra)")

DOCS = ROOT / "docs"
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "py"}
TRAINING_RECIPES = {"finetune_bert", "finetune_gpt", "finetune_translation", "distill_bert"}
RECIPE_CAP = ["--max_steps", "3"]
SEARCH_CAP = ["--max_trials", "2"]  # a documented search, as a training recipe, runs capped: its flags and outputs
HFOPT_COMMANDS = {"env", "check-config", "launch", "compress", "compare", "optimize"}
# flags named in the docs that belong to no parser of ours, each with why it is named
FOREIGN_FLAGS = {
    "--group_by_length": "transformers 4's flag, named as the one transformers 5 replaced",
    "--max-tokens": "fairseq's flag, named for comparison",
    "--strict": "mkdocs build's",
    "--site-dir": "mkdocs build's",
    "--check": "ruff format's",
    "--change": "the duplicates tool's",
    "--lerning_rate": "a misspelt flag, quoted in the error that names it",
}
REPO_DIRS = ("recipes/", "accelerate_configs/", "bench/", "tests/", "docs/", "hfopt/", ".ci/")
COUNTS = {"python_ran": 0, "python_skipped": 0, "commands_ran": 0, "commands_skipped": 0}


# --- the doc files and their blocks ----------------------------------------------------------------------------


def nav_pages() -> list[str]:
    """The docs/ pages in the order of mkdocs.yml's nav."""
    pages = []

    def walk(node):
        if isinstance(node, str):
            pages.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    return pages


def doc_files() -> list[Path]:
    """README, CONTRIBUTING, then docs/ in nav order (pages outside the nav last: test_every_page_is_in_the_nav
    fails on them)."""
    in_nav = [DOCS / page for page in nav_pages()]
    others = sorted(set(DOCS.rglob("*.md")) - set(in_nav))
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *in_nav, *others]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass
class Block:
    path: Path
    line: int  # the fence's line, 1-based
    lang: str
    source: str
    skip: str | None = None  # the reason given in <!-- skip: ... --> on the line before

    @property
    def where(self) -> str:
        return f"{rel(self.path)}:{self.line}"


FENCE = re.compile(r"^( *)(```+|~~~+)\s*([\w+-]*)[^\n]*$")
SKIP = re.compile(r"^\s*<!--\s*skip:\s*(.+?)\s*-->\s*$")


@functools.cache
def blocks_of(path: Path) -> tuple[Block, ...]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match.groups()
        end = next(
            (
                k
                for k in range(i + 1, len(lines))
                if lines[k].strip().startswith(fence[:3]) and lines[k].strip() == fence
            ),
            len(lines),
        )
        source = "\n".join(line[len(indent) :] for line in lines[i + 1 : end]) + "\n"
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        skip = SKIP.match(before)
        found.append(Block(path, i + 1, lang.lower(), source, skip.group(1) if skip else None))
        i = end + 1
    return tuple(found)


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in blocks_of(path)]


def prose_of(path: Path) -> str:
    """The text of a doc file outside its fenced blocks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    fenced = set()
    for block in blocks_of(path):
        fenced.update(range(block.line - 1, block.line + block.source.count("\n") + 1))
    return "\n".join(line for k, line in enumerate(lines) if k not in fenced)


def inline_code(path: Path) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose_of(path))


# --- commands --------------------------------------------------------------------------------------------------


@dataclass
class Command:
    text: str
    block: Block
    tokens: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.block.where} {self.text[:70]}"


def commands_of(block: Block) -> list[Command]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block.source)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        tokens = shlex.split(line, comments=True)
        if tokens:
            found.append(Command(" ".join(tokens), block, tokens))
    return found


def all_commands() -> list[Command]:
    return [c for b in all_blocks() if b.lang in SHELL for c in commands_of(b)]


def is_synopsis(tokens: list[str]) -> bool:
    """A usage line rather than a command: optional parts, alternatives, `...`, or placeholders."""
    return any(t.startswith("[") or t.endswith("]") or "|" in t or "..." in t or "<" in t for t in tokens)


def simple_commands(tokens: list[str]) -> list[list[str]]:
    out, current = [], []
    for token in tokens:
        if token in ("&&", "||", ";", "|"):
            out.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in [*out, current] if c]


@functools.cache
def load_recipe(name: str):
    path = ROOT / "recipes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def recipe_flags(name: str) -> frozenset[str]:
    from transformers import HfArgumentParser

    from hfopt.args import argument_dataclasses

    parser = HfArgumentParser(argument_dataclasses(load_recipe(name).ARGUMENTS))
    return frozenset(s for a in parser._actions for s in a.option_strings) | {"--config"}


@functools.cache
def argparse_flags(which: str) -> frozenset[str]:
    if which == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        parser = launch_command_parser()
    else:
        parser = importlib.import_module(f"hfopt.commands.{which}").parser()
    return frozenset(s for a in parser._actions for s in a.option_strings)


@functools.cache
def bench_flags(script: str) -> frozenset[str]:
    """The options a bench script declares (read from its source: the scripts are not imported)."""
    flags = set()
    for node in ast.walk(ast.parse((ROOT / script).read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return frozenset(flags)


@functools.cache
def extras() -> frozenset[str]:
    import tomllib

    return frozenset(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


@functools.cache
def make_targets() -> frozenset[str]:
    return frozenset(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


def flags_in(tokens: list[str]) -> list[str]:
    return [t.split("=")[0] for t in tokens if re.match(r"^--[a-zA-Z]", t)]


def unknown(tokens: list[str], known: frozenset[str], what: str) -> list[str]:
    return [f"{what} has no flag {flag}" for flag in flags_in(tokens) if flag not in known]


def check_recipe_args(name: str, args: list[str], synopsis: bool) -> list[str]:
    if not (ROOT / "recipes" / f"{name}.py").is_file():
        return [f"recipes/{name}.py does not exist"]
    problems = unknown(args, recipe_flags(name), f"recipes/{name}.py")
    if problems or synopsis:
        return problems
    from hfopt.args import parse_args, reject_unsupported
    from hfopt.errors import InputError

    recipe = load_recipe(name)
    try:
        *objects, _ = parse_args(
            recipe.ARGUMENTS, recipe.RECIPE, list(args), defaults=recipe.DEFAULTS, demo=getattr(recipe, "DEMO", None)
        )
        reject_unsupported(objects, getattr(recipe, "UNSUPPORTED", {}), recipe.RECIPE)
    except InputError as err:
        return [f"recipes/{name}.py refuses its arguments: {err}"]
    return []


def check_script(script: str, args: list[str], synopsis: bool) -> list[str]:
    if not (ROOT / script).is_file():
        return [f"{script} does not exist"]
    match = re.fullmatch(r"recipes/(\w+)\.py", script)
    if match and match.group(1) in ("compress", "compare", "optimize"):
        return check_hfopt([match.group(1), *args], synopsis)
    if match:
        return check_recipe_args(match.group(1), args, synopsis)
    if script.startswith("bench/"):
        return unknown(args, bench_flags(script), script)
    return []


def check_accelerate_launch(args: list[str], what: str, synopsis: bool) -> list[str]:
    known = argparse_flags("accelerate")
    at = next((i for i, t in enumerate(args) if not t.startswith("-") and t.endswith(".py")), None)
    if at is None:  # the launcher named with some of its own flags, no script
        return unknown(args, known, what)
    launcher, script, rest = args[:at], args[at], args[at + 1 :]
    return unknown(launcher, known, what) + check_script(script, rest, synopsis)


def check_hfopt(args: list[str], synopsis: bool) -> list[str]:
    args = [a for a in args if a != "--verbose"]
    if not args:
        return []
    command, rest = args[0], args[1:]
    if synopsis and not re.fullmatch(r"[a-z-]+", command):
        return []  # `hfopt <command>`, `hfopt --verbose ...`
    if command not in HFOPT_COMMANDS:
        return [f"hfopt has no command '{command}' (commands: {', '.join(sorted(HFOPT_COMMANDS))})"]
    if command == "launch":
        return check_accelerate_launch(rest, "hfopt launch", synopsis)
    if command in ("compress", "compare", "optimize"):
        problems = unknown(rest, argparse_flags(command), f"hfopt {command}")
        if problems or synopsis:
            return problems
        try:
            importlib.import_module(f"hfopt.commands.{command}").parser().parse_args(rest)
        except SystemExit:
            return [f"hfopt {command} does not parse {shlex.join(rest)}"]
        return []
    if command == "check-config" and rest and not synopsis and rest[0].startswith("accelerate_configs/"):
        return [] if (ROOT / rest[0]).is_file() else [f"{rest[0]} does not exist"]
    return []


def check_paths(tokens: list[str]) -> list[str]:
    """Files of the repository a command names (paths it writes, placeholders and globs aside) must exist."""
    problems = []
    for token in tokens:
        for part in token.split("="):
            if not part.startswith(REPO_DIRS) or re.search(r"[<>*{}$]|NAME|\bX\b", part):
                continue
            if Path(part).suffix and not (ROOT / part).exists():
                problems.append(f"{part} does not exist")
    return problems


def check_command(tokens: list[str]) -> list[str]:
    """What is wrong with a command line, checked against the real parsers without running it."""
    problems = check_paths(tokens)
    synopsis = is_synopsis(tokens)
    for simple in simple_commands(tokens):
        program, args = simple[0], simple[1:]
        if program == "hfopt":
            problems += check_hfopt(args, synopsis)
        elif program == "accelerate" and args[:1] == ["launch"]:
            problems += check_accelerate_launch(args[1:], "accelerate launch", synopsis)
        elif program in ("python", "python3") and args and args[0].endswith(".py"):
            problems += check_script(args[0], args[1:], synopsis)
        elif program == "sbatch" and args[:1] == ["recipes/launch.slurm"]:
            problems += check_script(args[1], args[2:], synopsis) if len(args) > 1 else []
        elif program == "make":
            problems += [f"the Makefile has no target {t}" for t in args if t not in make_targets()]
        elif program == "pip" and args[:1] == ["install"]:
            for token in args:
                for names in re.findall(r"\[([\w,-]+)\]", token):
                    problems += [f"pyproject.toml has no extra '{x}'" for x in names.split(",") if x not in extras()]
    return problems


def inline_commands(path: Path, whole: bool = False) -> list[str]:
    """Inline code that is a command of ours (with `whole`, only those that name what they run on)."""
    starts = ("hfopt ", "accelerate launch ", "python recipes/", "python bench/", "sbatch ")
    spans = [span for span in inline_code(path) if span.startswith(starts)]
    return [span for span in spans if len(span.split()) >= 3] if whole else spans


# --- figures ---------------------------------------------------------------------------------------------------

NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w]|\.\d)")


VERSION_BEFORE = re.compile(r"([<>=≥≤~^]=?\s?|Python |torch |transformers |v)$")


def significant_digits(number: str) -> int:
    return len(number.replace(".", "").lstrip("0"))


@functools.cache
def bench_figures() -> frozenset[str]:
    """The figures of bench/results: as written in its tables, and its JSON values at 1 to 4 decimals."""
    figures = set()
    for path in (ROOT / "bench" / "results").glob("*.md"):
        figures |= set(NUMBER.findall(path.read_text(encoding="utf-8")))

    def walk(value):
        if isinstance(value, float):
            for decimals in range(1, 5):
                figures.add(f"{value:.{decimals}f}")
                if 0 < abs(value) < 1:
                    figures.add(f"{value * 100:.{decimals}f}")  # shares written as percentages
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for path in (ROOT / "bench" / "results").glob("*.json"):
        walk(json.loads(path.read_text()))
    return frozenset(figures)


# --- the checks (unit tests) -----------------------------------------------------------------------------------


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    pages = nav_pages()
    assert len(pages) == len(set(pages)), "a page is twice in the nav"
    missing = [p for p in pages if not (DOCS / p).is_file()]
    outside = sorted(rel(p) for p in DOCS.rglob("*.md") if str(p.relative_to(DOCS)) not in pages)
    assert not missing, f"nav entries without a page: {missing}"
    assert not outside, f"pages no nav entry reaches: {outside}"


def test_readme_is_short_and_links_to_files_that_exist():
    readme = ROOT / "README.md"
    assert readme.stat().st_size <= 12 * 1024, f"README.md is {readme.stat().st_size} bytes (at most 12 KB)"
    for path in (readme, ROOT / "CONTRIBUTING.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose_of(path)):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{rel(path)} links to {target}, which does not exist"


def test_readme_keeps_the_two_setup_commands():
    """The one that runs the demo and the one that runs the tests (tests/test_repository.py checks that the
    second is what CI runs)."""
    commands = [b.source.strip() for b in blocks_of(ROOT / "README.md") if b.lang in SHELL]
    assert any(
        c.startswith("python3 -m venv") and c.endswith("accelerate launch recipes/finetune_bert.py") for c in commands
    )
    assert any(c.startswith("python3 -m venv") and c.endswith("python -m pytest -q -rs") for c in commands)


def test_every_block_skip_says_why():
    for block in all_blocks():
        if block.skip is not None:
            assert len(block.skip) >= 10, f"{block.where}: say why the block is skipped"


@pytest.mark.parametrize("command", all_commands(), ids=lambda c: c.id)
def test_command_and_flags_match_the_parsers(command):
    problems = check_command(command.tokens)
    assert not problems, f"{command.block.where}: {command.text}\n" + "\n".join(problems)


def test_inline_commands_match_the_parsers():
    problems = []
    for path in doc_files():
        for span in inline_commands(path):
            problems += [f"{rel(path)}: `{span}`: {p}" for p in check_command(shlex.split(span))]
    assert not problems, "\n".join(problems)


def test_readme_commands_are_docs_commands():
    """The README's inline commands are blocks of the docs, which run them (or say why not)."""
    in_blocks = {c.text for c in all_commands()}
    readme = inline_commands(ROOT / "README.md", whole=True)
    missing = [span for span in readme if " ".join(shlex.split(span)) not in in_blocks]
    assert not missing, f"README commands that no docs block holds: {missing}"


def test_every_flag_named_in_the_docs_exists():
    known = set(FOREIGN_FLAGS) | {"--verbose", "--help"}
    known |= argparse_flags("accelerate") | argparse_flags("compress") | argparse_flags("compare")
    known |= argparse_flags("optimize")
    for recipe in ("finetune_bert", "finetune_gpt", "finetune_translation", "distill_bert"):
        known |= recipe_flags(recipe)
    for script in (ROOT / "bench").glob("*.py"):
        known |= bench_flags(rel(script))
    problems = []
    for path in doc_files():
        text = prose_of(path) + "\n".join(b.source for b in blocks_of(path))
        for flag in sorted(set(re.findall(r"(?<![\w-])--[a-zA-Z][\w-]*", text)) - known):
            problems.append(f"{rel(path)}: {flag} is a flag of no recipe, command or benchmark")
    assert not problems, "\n".join(problems)


def test_no_benchmark_figure_is_typed_by_hand():
    """Figures of bench/results come into the docs as snippets (`--8<-- "bench/results/NAME.md"`), never typed."""
    figures = bench_figures()
    problems = []
    for path in doc_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("--8<--"):
                continue
            for match in NUMBER.finditer(line):
                number = match.group(1)
                if VERSION_BEFORE.search(line[: match.start()]) or significant_digits(number) < 3:
                    continue  # a version (Python ≥ 3.10, torch<2.15), or a rounded figure
                if number not in figures:
                    continue
                problems.append(f"{rel(path)}: {number} is a figure of bench/results: include its table instead")
    assert not problems, "\n".join(sorted(set(problems)))


def test_snippets_name_benchmark_results_that_exist():
    for path in doc_files():
        for target in re.findall(r'^\s*--8<--\s*"([^":]+)', path.read_text(encoding="utf-8"), flags=re.M):
            assert target.startswith("bench/results/") and (ROOT / target).is_file(), f"{rel(path)}: {target}"


def _results(name: str) -> dict:
    return json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())


def _row(rows: list[dict], key: str, value: str) -> dict:
    return next(r for r in rows if r[key] == value)


def readme_headlines() -> dict[str, list[str]]:
    """What each row of the README's table of what each strategy bought must say, from the JSON."""
    speed = _row(_results("recipe_vs_baselines")["rows"], "variant", "recipe")
    bf16 = _row(_results("cpu_bf16")["rows"], "variant", "recipe_bf16")
    study = _results("sentiment_strategies")["variants"]
    runtime = {v: study[v]["train_runtime"]["mean"] for v in ("baseline", "gradual_unfreezing")}
    chain = {r["key"]: r for r in _results("compress_chain_sst2")["rows"]}
    onnx = _results("compress_sst2")
    sharing = _results("qat_sharing_sst2")["sharing"]

    def within(points: float, teacher: float, accuracy: float) -> bool:
        return (teacher - accuracy) * 100 < points

    assert within(1, chain["original"]["accuracy"], chain["student_3"]["accuracy"])
    assert within(2, chain["original"]["accuracy"], chain["quantize_dynamic_int8"]["accuracy"])
    fp32, int8 = onnx["models"]["fp32"], onnx["models"]["hfopt int8 (+embeddings)"]
    assert within(0.2, fp32["accuracy"], int8["accuracy"])
    return {
        "length-grouped batches": [f"{speed['vs_run_glue']:.1f}×"],
        "bf16 autocast": [f"{bf16['vs_fp32']:.1f}×"],
        "gradual unfreezing": [f"{runtime['baseline'] / runtime['gradual_unfreezing']:.1f}×"],
        "LoRA": [
            f"{study['lora']['model_size_mb']['mean']:.1f} MB",
            f"{study['baseline']['model_size_mb']['mean']:.0f} MB",
        ],
        "distillation into 3 of 6 layers": [f"{chain['student_3']['faster_b16']:.1f}×", "within 1 point"],
        "int8 with `hfopt compress`": [f"{int8['size_reduction']:.1f}×", "within 0.2 points"],
        "distil, prune, int8 chained": [f"{chain['quantize_dynamic_int8']['smaller']:.0f}×", "within 2 points"],
        "ONNX Runtime int8": [f"{onnx['onnx_goals']['alone']['b1_vs_hfopt_int8']:.1f}×"],
        "weight sharing": [
            f"{sharing['shared_distilled']['encoder_parameters'] / sharing['fp32']['encoder_parameters']:.2f}×"
        ],
    }


def test_readme_strategy_figures_are_the_benchmarks():
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| ")]
    for strategy, figures in readme_headlines().items():
        row = next((r for r in rows if r.startswith(f"| {strategy}")), None)
        assert row is not None, f"README has no row for {strategy}"
        for figure in figures:
            assert figure in row, f"README row '{strategy}' should say {figure} (bench/results): {row}"


# --- running the blocks (slow) ---------------------------------------------------------------------------------

GIVEN_DOC = {
    "model_path": "a folder holding a tiny BERT classifier (6 layers, width 32) and its tokenizer",
    "model": "that classifier, loaded",
    "teacher": "that classifier, loaded",
    "tokenizer": "its WordPiece tokenizer",
    "train": "the demo's training sentences, tokenized",
    "dev": "the demo's validation sentences, tokenized",
    "texts": "16 demo sentences",
}


@pytest.fixture(scope="module")
def givens(tmp_path_factory):
    """Builders of the names a Python block may use as the reader's own (GIVEN_DOC)."""
    import csv

    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tests.testing_utils import make_tiny_bert

    demo = ROOT / "recipes" / "data" / "sentiment"
    rows = {
        split: list(csv.DictReader(open(demo / f"{split}.csv", encoding="utf-8"))) for split in ("train", "validation")
    }
    words = {w for split in rows.values() for r in split for w in re.findall(r"\w+|[^\w\s]", r["sentence"].lower())}
    folder = make_tiny_bert(tmp_path_factory.mktemp("docs_model"), words=sorted(words), num_hidden_layers=6)
    tokenizer = AutoTokenizer.from_pretrained(folder)

    label_ids = {name: i for i, name in enumerate(sorted({r["label"] for r in rows["train"]}))}

    def dataset(split):
        data = Dataset.from_list([{"sentence": r["sentence"], "labels": label_ids[r["label"]]} for r in rows[split]])
        return data.map(lambda b: tokenizer(b["sentence"], truncation=True), batched=True, remove_columns=["sentence"])

    train, dev = dataset("train"), dataset("validation")
    return {
        "model_path": lambda: str(folder),
        "model": lambda: AutoModelForSequenceClassification.from_pretrained(folder),
        "teacher": lambda: AutoModelForSequenceClassification.from_pretrained(folder),
        "tokenizer": lambda: tokenizer,
        "train": lambda: train,
        "dev": lambda: dev,
        "texts": lambda: [r["sentence"] for r in rows["validation"][:16]],
    }


def names_used(source: str) -> tuple[set[str], set[str]]:
    """The names a block reads, and those it binds."""
    tree = ast.parse(source)
    read, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
    return read, bound


PAGE_STATE: dict[Path, dict] = {}


def python_examples():
    by_place = {(b.path, b.line): b for b in all_blocks() if b.lang in PYTHON}
    examples = []
    for path in doc_files():
        for example in pytest_examples.find_examples(path):
            block = by_place.get((path, example.start_line))
            if block is not None:
                examples.append(pytest.param(example, block, id=block.where))
    return examples


@pytest.mark.slow
@pytest.mark.parametrize("example, block", python_examples())
def test_python_block_runs(example, block, eval_example, givens, tmp_path_factory, monkeypatch):
    state = PAGE_STATE.setdefault(block.path, {"folder": tmp_path_factory.mktemp("page"), "names": {}})
    monkeypatch.chdir(state["folder"])  # "out/..." of one page's blocks is one folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a block that reaches for the hub fails at once
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    if block.skip:
        tree = ast.parse(example.source)
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(body=imports, type_ignores=[]), block.where, "exec"), {})
        COUNTS["python_skipped"] += 1
        pytest.skip(f"{block.where}: {block.skip}")
    read, bound = names_used(example.source)
    globals_ = {k: v for k, v in state["names"].items() if k not in givens}
    globals_ |= {name: givens[name]() for name in read - bound if name in givens and not hasattr(builtins, name)}
    # the project's line length; names given by GIVENS are defined at run time, and isort here cannot tell hfopt
    # (first party in pyproject.toml) from transformers
    eval_example.set_config(line_length=120, target_version="py310", ruff_ignore=["F821", "I001"])
    eval_example.lint_ruff(example)
    try:
        module = eval_example.run(example, module_globals=globals_)
    except Exception as err:  # pytest cannot render the frames pytest-examples makes: say where, plainly
        frames, tb = [], err.__traceback__
        while tb is not None:
            frames.append(f"  {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno} in {tb.tb_frame.f_code.co_name}")
            tb = tb.tb_next
        trace = "\n".join(frames[-8:] + traceback.format_exception_only(err))
        raise AssertionError(f"{block.where} failed:\n{trace}") from None
    state["names"].update({k: v for k, v in module.items() if not k.startswith("__")})
    COUNTS["python_ran"] += 1


RAN: dict[str, subprocess.CompletedProcess] = {}


@pytest.fixture(scope="session")
def scratch(tmp_path_factory):
    """Where the docs' commands run: the repository's recipes, configs and benchmarks, and outputs of its own."""
    folder = tmp_path_factory.mktemp("docs_commands")
    for name in ("recipes", "accelerate_configs", "bench"):
        (folder / name).symlink_to(ROOT / name)
    return folder


def runnable(command: Command) -> list[str]:
    """The command line that runs: as written, a training recipe capped at a few steps, a search at two trials."""
    tokens = command.tokens
    script = next((t for t in tokens if re.fullmatch(r"recipes/\w+\.py", t)), None)
    if script and Path(script).stem in TRAINING_RECIPES:
        return [*tokens, *RECIPE_CAP]
    if tokens[:2] == ["hfopt", "optimize"] or script == "recipes/optimize.py":
        return [*tokens, *SEARCH_CAP]
    return tokens


@pytest.mark.slow
@pytest.mark.parametrize("command", all_commands(), ids=lambda c: c.id)
def test_offline_command_runs(command, scratch):
    if command.block.skip:
        COUNTS["commands_skipped"] += 1
        pytest.skip(f"{command.block.where}: {command.block.skip}")
    line = shlex.join(runnable(command))
    if line not in RAN:
        env = recipe_env(threads=None)
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        RAN[line] = subprocess.run(
            ["bash", "-c", line], cwd=scratch, env=env, capture_output=True, text=True, timeout=600
        )
        COUNTS["commands_ran"] += 1
    result = RAN[line]
    assert result.returncode == 0, f"{command.block.where}: {line} exited {result.returncode}\n{result.stderr[-4000:]}"


class _CountsReport:
    """Prints, at the end of the session, how many blocks of the docs ran and were skipped."""

    def __init__(self):
        self.started = self.ended = time.monotonic()

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_line(
            f"docs: {COUNTS['python_ran']} Python blocks ran, {COUNTS['python_skipped']} skipped; "
            f"{COUNTS['commands_ran']} commands ran, {COUNTS['commands_skipped']} skipped; "
            f"in {self.ended - self.started:.0f} s"
        )


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    report = _CountsReport()
    request.config.pluginmanager.register(report, "hfopt_docs_counts")
    yield
    report.ended = time.monotonic()
