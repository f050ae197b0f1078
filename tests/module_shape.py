"""The shape of xenon_elixir.py, measured from its syntax tree (issue 22):

(a) every use of a module-level name above the name's module-level definition (in code: function
    bodies, default values, decorators, class bodies; not in annotations, which
    ``from __future__ import annotations`` never evaluates), and every local name (a parameter or
    a variable of a function) that shadows a module-level function;
(b) the classes longer than :data:`CLASS_LIMIT` lines;
(c) the banner sections (``# ----`` / ``# Title`` / ``# ----``) and their line counts.

    python tests/module_shape.py [path]     # prints all three; exit 1 if (a) or (b) found anything
"""

from __future__ import annotations

import ast
import dataclasses
import re
import sys
from collections.abc import Iterator
from pathlib import Path

MODULE = Path(__file__).resolve().parent.parent / "xenon_elixir.py"
CLASS_LIMIT = 160
_BANNER = re.compile(r"# -{20,}\n# (?P<title>[^\n]+)\n# -{20,}\n")


@dataclasses.dataclass(frozen=True)
class Finding:
    line: int
    name: str
    where: str  # the function or class the use or local is in ("<module>" at the top level)
    defined: int  # the line of the module-level definition
    kind: str = ""  # for a shadowing local: "parameter" or "variable"

    def __str__(self) -> str:
        kind = f"{self.kind} " if self.kind else ""
        return (
            f"{self.line}: {kind}{self.name} in {self.where} (module-level definition at line {self.defined})"
        )


@dataclasses.dataclass(frozen=True)
class Section:
    title: str
    start: int  # the line of the banner's first rule
    end: int  # the last line before the next banner (or the file's last line)

    @property
    def lines(self) -> int:
        return self.end - self.start + 1


def _bound_here(statement: ast.stmt) -> Iterator[str]:
    """The names a top-level statement binds in the module's namespace."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        yield statement.name
    elif isinstance(statement, ast.Import | ast.ImportFrom):
        for alias in statement.names:
            if alias.name != "*":
                yield (alias.asname or alias.name).partition(".")[0]
    elif isinstance(statement, ast.If | ast.Try | ast.With | ast.For | ast.While):
        for field in ("body", "orelse", "finalbody", "handlers"):
            for inner in getattr(statement, field, []):
                if isinstance(inner, ast.ExceptHandler):
                    for nested in inner.body:
                        yield from _bound_here(nested)
                else:
                    yield from _bound_here(inner)
        for target in _targets(statement):
            yield from _stored(target)
    else:
        for target in _targets(statement):
            yield from _stored(target)


def _targets(statement: ast.stmt) -> list[ast.expr]:
    if isinstance(statement, ast.Assign):
        return list(statement.targets)
    if isinstance(statement, ast.AnnAssign | ast.AugAssign):
        return [statement.target] if isinstance(statement, ast.AugAssign) or statement.value else []
    if isinstance(statement, ast.For):
        return [statement.target]
    if isinstance(statement, ast.With):
        return [item.optional_vars for item in statement.items if item.optional_vars is not None]
    return []


def _stored(target: ast.expr) -> Iterator[str]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name):
            yield node.id


def module_definitions(tree: ast.Module) -> dict[str, int]:
    """Each module-level name and the first line of its first definition (a decorated function's
    or class's first decorator)."""
    defined: dict[str, int] = {}
    for statement in tree.body:
        first = statement.lineno
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = min([first, *(decorator.lineno for decorator in statement.decorator_list)])
        for name in _bound_here(statement):
            defined.setdefault(name, first)
    return defined


def _annotations(tree: ast.AST) -> set[int]:
    """The ids of every node inside an annotation (never evaluated under ``from __future__``)."""
    skipped: set[int] = set()

    def skip(node: ast.AST | None) -> None:
        if node is not None:
            skipped.update(id(inner) for inner in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            skip(node.annotation)
        elif isinstance(node, ast.arg):
            skip(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            skip(node.returns)
    return skipped


_FUNCTION = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
_COMPREHENSION = ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp


def _locals_of(scope: ast.AST) -> dict[str, int]:
    """The names local to a function, lambda or comprehension (parameters, assignments, imports,
    nested definitions; ``global`` ones excepted), each with the line of its first binding."""
    bound: dict[str, int] = {}
    declared_global: set[str] = set()
    if isinstance(scope, _FUNCTION):
        arguments = scope.args
        for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs):
            bound.setdefault(arg.arg, arg.lineno)
        for arg in (arguments.vararg, arguments.kwarg):
            if arg is not None:
                bound.setdefault(arg.arg, arg.lineno)
        body: list[ast.AST] = list(scope.body) if isinstance(scope.body, list) else [scope.body]
    elif isinstance(scope, _COMPREHENSION):
        for generator in scope.generators:
            for name in _stored(generator.target):
                bound.setdefault(name, generator.target.lineno)
        return bound
    else:
        body = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Global | ast.Nonlocal):
            declared_global.update(node.names)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.setdefault(node.name, node.lineno)
            for decorator in node.decorator_list:
                visit(decorator)
            if not isinstance(node, ast.ClassDef):
                for default in (*node.args.defaults, *node.args.kw_defaults):
                    if default is not None:
                        visit(default)
            return  # its body is its own scope
        if isinstance(node, ast.Lambda | _COMPREHENSION):
            if isinstance(node, _COMPREHENSION):  # the first iterable is evaluated here
                visit(node.generators[0].iter)
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.setdefault(node.id, node.lineno)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                bound.setdefault((alias.asname or alias.name).partition(".")[0], node.lineno)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.setdefault(node.name, node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for statement in body:
        visit(statement)
    for name in declared_global:
        bound.pop(name, None)
    return bound


def _scopes(tree: ast.Module) -> Iterator[tuple[ast.AST, list[str], list[dict[str, int]]]]:
    """Each function, lambda, comprehension and class body with its qualified name and the locals
    of the function scopes around it (innermost last); a class body's names are not seen by the
    functions inside it."""

    def walk(
        node: ast.AST, path: list[str], enclosing: list[dict[str, int]]
    ) -> Iterator[tuple[ast.AST, list[str], list[dict[str, int]]]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _FUNCTION | _COMPREHENSION):
                name = getattr(child, "name", f"<{type(child).__name__.lower()}>")
                inner = [*enclosing, _locals_of(child)]
                yield child, [*path, name], inner
                yield from walk(child, [*path, name], inner)
            elif isinstance(child, ast.ClassDef):
                own = {name: child.lineno for statement in child.body for name in _bound_here(statement)}
                yield child, [*path, child.name], [*enclosing, own]
                yield from walk(child, [*path, child.name], enclosing)
            else:
                yield from walk(child, path, enclosing)

    yield from walk(tree, [], [])


def _own_names(scope: ast.AST) -> Iterator[ast.Name]:
    """The loaded names of a scope's own code (not those of the scopes nested in it, except what
    runs in this scope: decorators, default values, a comprehension's first iterable)."""

    def visit(node: ast.AST, top: bool) -> Iterator[ast.Name]:
        if not top:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                for decorator in node.decorator_list:
                    yield from visit(decorator, False)
                if isinstance(node, ast.ClassDef):
                    for base in (*node.bases, *(keyword.value for keyword in node.keywords)):
                        yield from visit(base, False)
                else:
                    for default in (*node.args.defaults, *node.args.kw_defaults):
                        if default is not None:
                            yield from visit(default, False)
                return
            if isinstance(node, ast.Lambda):
                for default in (*node.args.defaults, *node.args.kw_defaults):
                    if default is not None:
                        yield from visit(default, False)
                return
            if isinstance(node, _COMPREHENSION):
                yield from visit(node.generators[0].iter, False)
                return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            yield node
        if top and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            children: list[ast.AST] = list(node.body)
        elif top and isinstance(node, ast.Lambda):
            children = [node.body]
        elif top and isinstance(node, _COMPREHENSION):
            children = [node.generators[0].target, *node.generators[0].ifs]
            for generator in node.generators[1:]:
                children += [generator.target, generator.iter, *generator.ifs]
            children += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        else:
            children = list(ast.iter_child_nodes(node))
        for child in children:
            yield from visit(child, False)

    if isinstance(scope, ast.Module):
        for statement in scope.body:
            yield from visit(statement, False)
    else:
        yield from visit(scope, True)


def uses_before_definition(source: str) -> list[Finding]:
    """Each use of a module-level name on a line above the name's module-level definition."""
    tree = ast.parse(source)
    defined = module_definitions(tree)
    skipped = _annotations(tree)
    found: list[Finding] = []
    scopes: list[tuple[ast.AST, list[str], list[dict[str, int]]]] = [(tree, [], [])]
    scopes += _scopes(tree)
    for scope, path, enclosing in scopes:
        for name in _own_names(scope):
            if id(name) in skipped or name.id not in defined:
                continue
            if any(name.id in local for local in enclosing):
                continue
            if name.lineno < defined[name.id]:
                where = ".".join(path) or "<module>"
                found.append(Finding(name.lineno, name.id, where, defined[name.id]))
    return sorted(set(found), key=lambda finding: (finding.line, finding.name))


def shadowing_locals(source: str) -> list[Finding]:
    """Each local name (a parameter, a variable) of a function that is also the name of a
    module-level function."""
    tree = ast.parse(source)
    functions = {
        statement.name: statement.lineno
        for statement in tree.body
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    found: list[Finding] = []
    for scope, path, enclosing in _scopes(tree):
        if not isinstance(scope, _FUNCTION) or not enclosing:
            continue
        arguments = scope.args
        parameters = {
            arg.arg
            for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg)
            if arg is not None
        }
        for name, line in enclosing[-1].items():
            if name in functions:
                kind = "parameter" if name in parameters else "variable"
                found.append(Finding(line, name, ".".join(path), functions[name], kind))
    return sorted(set(found), key=lambda finding: (finding.line, finding.name))


def long_classes(source: str, limit: int = CLASS_LIMIT) -> list[tuple[str, int, int]]:
    """Each class (at any depth) longer than ``limit`` lines: its name, first line and length."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > limit:
                found.append((node.name, first, length))
    return sorted(found, key=lambda item: item[1])


def sections(source: str) -> list[Section]:
    """The banner sections in order; a section runs from its banner to the line before the next."""
    starts = [
        (source.count("\n", 0, match.start()) + 1, match["title"].strip())
        for match in _BANNER.finditer(source)
    ]
    last = source.count("\n") + (0 if source.endswith("\n") else 1)
    return [
        Section(title, start, (starts[i + 1][0] - 1) if i + 1 < len(starts) else last)
        for i, (start, title) in enumerate(starts)
    ]


def report(source: str, path: str = "xenon_elixir.py") -> tuple[str, bool]:
    """The printed report, and whether (a) and (b) found nothing."""
    early, shadows = uses_before_definition(source), shadowing_locals(source)
    classes = long_classes(source)
    lines = [f"(a) uses of a module-level name above its definition: {len(early)}"]
    lines += [f"  {path}:{finding}" for finding in early]
    lines.append(f"(a) locals shadowing a module-level function: {len(shadows)}")
    lines += [f"  {path}:{finding}" for finding in shadows]
    lines.append(f"(b) classes over {CLASS_LIMIT} lines: {len(classes)}")
    lines += [f"  {path}:{line}: {name} {length} lines" for name, line, length in classes]
    found = sections(source)
    lines.append(f"(c) banner sections: {len(found)}")
    lines += [f"  {s.start:>5}-{s.end:<5} {s.lines:>5}  {s.title}" for s in found]
    return "\n".join(lines), not (early or shadows or classes)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else MODULE
    text, clean = report(path.read_text(encoding="utf-8"), path.name)
    print(text)
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
