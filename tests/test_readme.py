"""The README's map stays true: every link inside it lands on a heading, and the CLI table names
every command the parser has."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import xenon_elixir as xe

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, each space a hyphen."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def outside_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.DOTALL)


def test_every_link_inside_the_readme_lands_on_a_heading() -> None:
    prose = outside_code(README)
    anchors = {slug(line.lstrip("#")) for line in prose.splitlines() if re.match(r"#{1,4} ", line)}
    links = re.findall(r"\]\(#([^)]+)\)", prose)
    assert len(links) > 30  # the table of contents, and the cross-references
    assert sorted(set(links) - anchors) == []


def test_the_contents_list_every_section() -> None:
    prose = outside_code(README)
    contents = prose.split("## Contents", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"\]\(#([^)]+)\)", contents))
    sections = {slug(line[3:]) for line in prose.splitlines() if line.startswith("## ")}
    assert sections - {"contents"} <= listed


def test_the_cli_table_names_every_command() -> None:
    parser = xe._parser()
    [commands] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    rows = set(re.findall(r"^\| `xenon-elixir ([a-z-]+)", README, flags=re.MULTILINE))
    assert set(commands.choices) <= rows
    assert {"migrate", "schema", "sandbox"} <= rows
    assert "schema [--postgres]" in README
