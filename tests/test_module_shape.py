"""The shape of xenon_elixir.py (issue 22), measured by tests/module_shape.py: no name used above
its definition, no local shadowing a module-level function, no class over 160 lines, the SQLite
and PostgreSQL sections together at most 2,400 lines."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from module_shape import (
    CLASS_LIMIT,
    MODULE,
    long_classes,
    sections,
    shadowing_locals,
    uses_before_definition,
)

SOURCE = MODULE.read_text(encoding="utf-8")


def _sample(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def test_the_checker_finds_uses_above_the_definition_in_code_but_not_in_annotations() -> None:
    source = _sample(
        """
        from __future__ import annotations

        def first(value: Later = None) -> Later:
            kept: Later = helper(value)
            return kept

        @decorate
        def second(x=DEFAULT):
            return [later for later in range(3)]

        class Early:
            made = helper

            def method(self, helper):
                return helper

        def decorate(f): return f
        def helper(x): return x
        DEFAULT = 1
        class Later: ...
        """
    )
    found = [(finding.line, finding.name) for finding in uses_before_definition(source)]
    assert found == [(4, "helper"), (7, "decorate"), (8, "DEFAULT"), (12, "helper")]


def test_the_checker_finds_locals_shadowing_module_functions() -> None:
    source = _sample(
        """
        def metrics(): ...

        def health(): ...

        class Hub:
            def __init__(self, metrics):
                self.metrics = metrics

        def route():
            health = 1
            return health
        """
    )
    found = [(f.line, f.name, f.where, f.kind) for f in shadowing_locals(source)]
    assert found == [(6, "metrics", "Hub.__init__", "parameter"), (10, "health", "route", "variable")]


def test_the_checker_measures_classes_and_sections() -> None:
    source = "# " + "-" * 30 + "\n# One\n# " + "-" * 30 + "\n\nclass A:\n" + "    x = 1\n" * 170
    source += "\n# " + "-" * 30 + "\n# Two\n# " + "-" * 30 + "\n"
    assert long_classes(source) == [("A", 5, 171)]
    assert [(s.title, s.start, s.end) for s in sections(source)] == [("One", 1, 176), ("Two", 177, 179)]


def test_the_sections_cover_the_module_after_its_imports() -> None:
    found = sections(SOURCE)
    assert len(found) >= 20
    assert all(a.end + 1 == b.start for a, b in zip(found, found[1:], strict=False))
    assert found[-1].end == SOURCE.count("\n")


def test_the_report_runs_as_a_script() -> None:
    run = subprocess.run(
        [sys.executable, str(MODULE.parent / "tests" / "module_shape.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode in (0, 1), run.stderr
    for part in ("(a) uses of a module-level name", "(a) locals shadowing", "(b) classes over", "(c) banner"):
        assert part in run.stdout


@pytest.mark.parametrize("name", ["Config", "FrontLayer"])
def test_the_classes_already_split_stay_short(name: str) -> None:
    assert name not in [found for found, _, _ in long_classes(SOURCE)]


def test_no_name_is_used_above_its_definition() -> None:
    assert [str(finding) for finding in uses_before_definition(SOURCE)] == []


def test_no_local_shadows_a_module_level_function() -> None:
    assert [str(finding) for finding in shadowing_locals(SOURCE)] == []


def test_no_class_is_over_the_limit() -> None:
    assert long_classes(SOURCE) == [], f"over {CLASS_LIMIT} lines"


def test_the_sqlite_and_postgresql_sections_are_at_most_2400_lines_together() -> None:
    storage = [s for s in sections(SOURCE) if s.title.split(". ", 1)[-1].startswith(("SQLite", "PostgreSQL"))]
    assert len(storage) == 2
    assert sum(s.lines for s in storage) <= 2400


def test_the_banners_are_numbered_in_reading_order() -> None:
    numbers = [int(s.title.split(".", 1)[0]) for s in sections(SOURCE) if s.title[:1].isdigit()]
    assert numbers == list(range(1, len(sections(SOURCE)) + 1))


def test_the_module_docstring_maps_every_section() -> None:
    """The map at the top names each numbered section once (``21-23`` names three), in order."""
    import ast

    docstring = ast.get_docstring(ast.parse(SOURCE)) or ""
    named: list[int] = []
    for match in re.finditer(r"^ +(\d+)(?:-(\d+))? [A-Z]", docstring, re.M):
        first, last = int(match[1]), int(match[2] or match[1])
        named += range(first, last + 1)
    assert named == list(range(1, len(sections(SOURCE)) + 1))
