"""README.md and docs/*.md checked against the code, so they cannot drift silently.

- docs/configuration.md lists every variable of ``ops.cli.all_settings()`` with its
  default as written there (an empty default as ``""``), and nothing else.
- Every ``movierec`` command line the README or a doc shows, in code blocks and in inline
  code, names an existing command path of the click tree, with options that exist on it;
  docs/cli.md names every command.
- Every ``make <target>`` shown exists in the Makefile, and every documented target
  (``target: ## help``) is shown in docs/cli.md.
- Every relative link points at a file of the repository (none outside it), and the
  README stays a front door: at most 200 lines.

The small tests at the top check the extraction and resolution helpers on known inputs,
so a broken helper cannot make the README checks pass vacuously.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from ops.cli import all_settings, main

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAKEFILE = ROOT / "Makefile"
README_MAX_LINES = 200

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
COMMENT = re.compile(r"(?:^|\s)#.*$")
# the program, at the start of a snippet or after whitespace or a shell separator
PROGRAM = re.compile(r"(?:^|(?<=[\s|;&(]))(?:\.venv/bin/)?movierec(?=\s|$)")
# where one shell command ends: a pipe, a list operator, a background &, a redirection
SEPARATOR = re.compile(r"\s(?:\|\|?|&&?|;|2?>)(?:\s|$)")
MAKE = re.compile(r"(?:^|(?<=[\s|;&(]))make\s+([A-Za-z0-9_.-]+)")
VARIABLE = re.compile(r"MOVIEREC_[A-Z0-9_]+")
CONFIG_ROW = re.compile(r"^\|\s*`(MOVIEREC_[A-Z0-9_]+)`\s*\|\s*([^|]*?)\s*\|", re.M)
TARGET = re.compile(r"^([A-Za-z0-9_-]+):(?!=)", re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOCUMENTED_TARGET = re.compile(r"^([A-Za-z0-9_-]+):[^=\n]*## ", re.M)
HELP = ("-h", "--help", "--version")  # eager options: no command needs to follow
EMPTY_DEFAULT = '""'


# -- helpers -----------------------------------------------------------------------------


def section(text: str, title: str) -> str:
    """The text under the level-2 heading ``title`` up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def code_lines(text: str) -> list[str]:
    """Logical lines of the fenced code blocks: comments dropped, ``\\`` continuations joined."""
    lines: list[str] = []
    for block in FENCE.findall(text):
        pending = ""
        for raw in block.splitlines():
            line = COMMENT.sub("", raw).rstrip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            lines.append(pending + line)
            pending = ""
        if pending:
            lines.append(pending)
    return lines


def inline_code(text: str) -> list[str]:
    """Inline code spans outside the fenced blocks."""
    return INLINE.findall(FENCE.sub("", text))


def snippets(text: str) -> list[str]:
    """Everything the README shows as code: code-block lines and inline spans."""
    return code_lines(text) + inline_code(text)


def invocations(snippet: str) -> list[list[str]]:
    """Arguments of every ``movierec`` call in one snippet (the program itself dropped).

    ``[`` and ``]`` around optional parts are dropped; a bare ``movierec`` (the name, not
    a call) yields nothing.
    """
    calls = []
    for match in PROGRAM.finditer(snippet):
        rest = snippet[match.end():]
        end = SEPARATOR.search(rest)
        rest = rest[:end.start()] if end else rest
        try:
            tokens = shlex.split(rest)
        except ValueError:  # an unbalanced quote in a placeholder
            tokens = rest.split()
        args = [t.strip("[]") for t in tokens if t.strip("[]")]
        if args:
            calls.append(args)
    return calls


def _option(command: click.Command, name: str) -> click.Option | None:
    for param in command.params:
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def resolve(args: list[str]) -> tuple[tuple[str, ...], str | None]:
    """Walk ``movierec``'s click tree along ``args``: (command path, problem or None).

    Words after a leaf command are its arguments (placeholders such as ``VERSION`` are
    fine); every ``--option`` must exist on the command it follows; a group must be
    followed by one of its commands unless help is asked for.
    """
    command: click.Command = main
    path: list[str] = []
    wants_help = False
    rest = list(args)
    while rest:
        token = rest.pop(0)
        if token in HELP:
            wants_help = True
        elif token.startswith("-") and token != "-":
            name = token.split("=", 1)[0]
            option = _option(command, name)
            if option is None:
                return tuple(path), f"`movierec {' '.join(path)}` has no option {name}"
            if "=" not in token and not option.is_flag and not option.count:
                del rest[:option.nargs]  # the option's value(s)
        elif isinstance(command, click.Group):
            sub = command.commands.get(token)
            if sub is None:
                return tuple(path), f"`movierec {' '.join(path)}` has no command {token!r}"
            command = sub
            path.append(token)
    if isinstance(command, click.Group) and not wants_help:
        return tuple(path), f"`movierec {' '.join(path)}` needs one of its commands"
    return tuple(path), None


def leaf_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the click tree that ends at a command, not a group."""
    paths = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            paths += leaf_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def config_rows(text: str) -> list[tuple[str, str]]:
    """(variable, default cell without its backticks) of every row in the configuration tables."""
    rows = []
    for name, cell in CONFIG_ROW.findall(text):
        assert cell.startswith("`") and cell.endswith("`") and len(cell) >= 2, (
            f"{name}: the default must be written in backticks, not {cell!r}")
        rows.append((name, cell[1:-1]))
    return rows


def make_targets(snippet_list: list[str]) -> set[str]:
    return {target for s in snippet_list for target in MAKE.findall(s)}


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def pages() -> list[Path]:
    """The README and every page under docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


@pytest.fixture(scope="module")
def everything() -> str:
    return "\n".join(page.read_text(encoding="utf-8") for page in pages())


def doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


# -- the helpers on known inputs ---------------------------------------------------------


def test_code_lines_join_continuations_and_drop_comments() -> None:
    text = "x\n```bash\na --b \\\n    --c  # why\n# only a comment\nd\n```\n`e f`\n"
    assert code_lines(text) == ["a --b      --c", "", "d"]
    assert inline_code(text) == ["e f"]


def test_invocations_find_the_program_anywhere_in_a_command_line() -> None:
    assert invocations("echo '{}' | .venv/bin/movierec experiment set - | cat") == [
        ["experiment", "set", "-"]]
    assert invocations(".venv/bin/movierec sim api &") == [["sim", "api"]]
    assert invocations("movierec infra up [kafka redis]") == [["infra", "up", "kafka", "redis"]]
    assert invocations("python -m movierec.wire; the `movierec` command") == []


def test_resolve_accepts_real_commands_with_their_options_and_placeholders() -> None:
    assert resolve(["train", "--models", "als", "--no-promote"]) == (("train",), None)
    assert resolve(["--log-level", "DEBUG", "consume"]) == (("consume",), None)
    assert resolve(["drift", "report", "--reference", "A", "B", "--json"]) == (
        ("drift", "report"), None)
    assert resolve(["sim", "grade", "--probe", "URL", "-n", "1000"]) == (("sim", "grade"), None)
    assert resolve(["models", "show", "VERSION"]) == (("models", "show"), None)
    assert resolve(["infra", "--help"]) == (("infra",), None)


def test_resolve_rejects_unknown_commands_and_options_and_bare_groups() -> None:
    assert "has no command 'start'" in str(resolve(["infra", "start"])[1])
    assert "has no option --bogus" in str(resolve(["train", "--bogus"])[1])
    # an option of another command is not an option of this one
    assert "has no option --json" in str(resolve(["infra", "up", "--json"])[1])
    assert "needs one of its commands" in str(resolve(["models"])[1])


def test_config_rows_read_variable_and_default_cells() -> None:
    text = ("| variable | default | meaning |\n|---|---|---|\n"
            "| `MOVIEREC_A` | `1.0` | one |\n| `MOVIEREC_B` | `\"\"` | empty |\n")
    assert config_rows(text) == [("MOVIEREC_A", "1.0"), ("MOVIEREC_B", EMPTY_DEFAULT)]
    with pytest.raises(AssertionError, match="backticks"):
        config_rows("| `MOVIEREC_C` | 5 | bare |\n")


# -- the README and the docs -------------------------------------------------------------


def test_the_configuration_page_lists_every_variable_with_its_default() -> None:
    rows = config_rows(doc("configuration.md"))
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a variable is listed twice"
    expected = {name: (default or EMPTY_DEFAULT) for name, default, _ in all_settings()}
    shown = dict(rows)
    assert sorted(expected.keys() - shown.keys()) == [], "variables missing from the table"
    assert sorted(shown.keys() - expected.keys()) == [], "the table names unknown variables"
    wrong = {name: (shown[name], expected[name]) for name in expected
             if shown[name] != expected[name]}
    assert wrong == {}, "defaults as (docs, code)"


def test_every_variable_named_anywhere_exists(everything: str) -> None:
    names = {name for name, _, _ in all_settings()}
    unknown = set()
    for word in set(VARIABLE.findall(everything)):
        if word.endswith("_"):  # a family, as in MOVIEREC_SIM_API_*
            if not any(name.startswith(word) for name in names):
                unknown.add(word)
        elif word not in names:
            unknown.add(word)
    assert sorted(unknown) == []


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_movierec_command_shown_exists_with_its_options(page: Path) -> None:
    problems = [f"{snippet.strip()}: {problem}"
                for snippet in snippets(page.read_text(encoding="utf-8"))
                for args in invocations(snippet)
                if (problem := resolve(args)[1])]
    assert problems == []


def test_the_cli_reference_names_every_command() -> None:
    shown = {resolve(args)[0] for snippet in snippets(doc("cli.md"))
             for args in invocations(snippet)}
    assert sorted(set(leaf_paths(main)) - shown) == []


def test_every_make_target_shown_exists(everything: str) -> None:
    defined = set(TARGET.findall(MAKEFILE.read_text(encoding="utf-8")))
    shown = make_targets(snippets(everything))
    assert sorted(shown - defined) == []


def test_every_documented_make_target_is_shown_in_the_cli_reference() -> None:
    documented = set(DOCUMENTED_TARGET.findall(MAKEFILE.read_text(encoding="utf-8")))
    assert sorted(documented - make_targets(snippets(doc("cli.md")))) == []


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file_of_the_repository(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL, or an anchor on the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
    assert broken == []


def test_the_readme_is_a_front_door(readme: str) -> None:
    assert len(readme.splitlines()) <= README_MAX_LINES
    for heading in ("## The two commands", "## What the demo shows", "## Where to go next"):
        assert heading in readme
