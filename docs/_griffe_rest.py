"""Griffe extension for the API pages: the reST in the package's docstrings, as Markdown.

The docstrings are Google style with a little reST, which reads well in an editor and in
``help()``; mkdocstrings renders Markdown. When the package is loaded, each docstring is
rewritten (the source files are not touched):

- a Sphinx role (``:class:`ContextManager```, ``:meth:`~ctx_memory.manager.ContextManager.clear```,
  ``:func:`_text```) becomes a cross-reference
  (``[`ContextManager`][ctx_memory.manager.ContextManager]``) when the name resolves, from
  the docstring's own scope, to a public object with a docstring in a module the API pages
  render, so every link has a target and ``mkdocs build --strict`` holds; any other name
  (a private helper, a LangChain class, a command-line module) becomes plain code. ``~``
  shows the last component only and ``:role:`title <target>``` keeps the title, as in Sphinx;
- a ``.. code-block:: python`` directive or a paragraph ending in ``::`` and the indented
  block after it become a fenced code block (the paragraph keeps one colon).
"""

from __future__ import annotations

import re
from functools import partial
from textwrap import dedent
from typing import TYPE_CHECKING, Any

import griffe

if TYPE_CHECKING:
    from griffe import Module, Object

PACKAGE = "ctx_memory"
# Modules whose interface is the command line (docs/cli.md), not an API page.
UNDOCUMENTED_MODULES = ("ctx_memory.cli", "ctx_memory.demo", "ctx_memory.__main__")
ROLE = re.compile(r":(?:py:)?(class|meth|func|attr|data|mod|exc|obj|const):`([^`]+)`")
TITLED = re.compile(r"(.*?)\s*<([^>]+)>")
CODE_BLOCK = re.compile(r"(\s*)\.\. code-block::\s*(\w*)\s*")
LITERAL = re.compile(r"(\s*)(.*?)::\s*")


def _lookup(scope: Object, name: str) -> Object | None:
    """The object ``name`` names from ``scope``, followed through aliases, or None."""
    first, _, rest = name.partition(".")
    try:
        path = name if first == PACKAGE else scope.resolve(first)
        if first != PACKAGE and rest:
            path = f"{path}.{rest}"
        found = scope.modules_collection[path]
        return found.final_target if found.is_alias else found
    except (KeyError, ValueError, griffe.NameResolutionError, griffe.AliasResolutionError):
        return None


def _rendered(obj: Object) -> bool:
    """Whether the API pages render ``obj`` (so a link to its path has a target).

    They render the public members (``filters: public`` in mkdocs.yml: a module's
    ``__all__``, else the names without a leading underscore) that have a docstring.
    """
    if obj.path != PACKAGE and not obj.path.startswith(f"{PACKAGE}."):
        return False
    if any(obj.path == m or obj.path.startswith(f"{m}.") for m in UNDOCUMENTED_MODULES):
        return False
    node: Object | None = obj
    while node is not None and node.path != PACKAGE:
        if not node.is_public or not node.docstring:
            return False
        node = node.parent
    return True


def _role(scope: Object, match: re.Match[str]) -> str:
    kind, text = match.group(1), match.group(2).strip()
    titled = TITLED.fullmatch(text)
    target = (titled.group(2) if titled else text).strip()
    short = target.startswith("~")
    target = target.lstrip("~.").removesuffix("()")
    if titled:
        shown = titled.group(1)
    else:
        shown = target.rsplit(".", 1)[-1] if short else target
        if kind in ("meth", "func"):
            shown += "()"
    found = _lookup(scope, target)
    if found is not None and not _rendered(found):
        found = _documented_ancestor(found)
    if found is not None and _rendered(found):
        return f"[`{shown}`][{found.path}]"
    return f"`{shown}`"


def _documented_ancestor(obj: Object) -> Object | None:
    """A method that only overrides (no docstring of its own): the base class's, or None."""
    owner = obj.parent
    if owner is None or not owner.is_class:
        return None
    try:
        bases = owner.mro()
    except (ValueError, griffe.AliasResolutionError):
        return None
    for base in bases:
        member = base.members.get(obj.name)
        if member is not None and not member.is_alias and _rendered(member):
            return member
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _literal_blocks(text: str) -> str:
    """Turn reST ``::`` paragraphs and ``.. code-block::`` directives into fenced blocks."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = CODE_BLOCK.fullmatch(line)
        literal = None if directive else LITERAL.fullmatch(line)
        if directive is None and literal is None:
            out.append(line)
            i += 1
            continue
        margin = _indent(line)
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        end = j
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > margin):
            end += 1
        while end > j and not lines[end - 1].strip():
            end -= 1
        if end == j:  # no indented block follows: leave the line alone
            out.append(line)
            i += 1
            continue
        pad = " " * margin
        if directive:
            language = directive.group(2) or "text"
        else:
            language = "text"
            if literal and literal.group(2):
                out.extend([f"{pad}{literal.group(2)}:", ""])
        block = dedent("\n".join(lines[j:end])).split("\n")
        out.extend([f"{pad}```{language}", *(f"{pad}{b}" if b else "" for b in block)])
        out.append(f"{pad}```")
        i = end
    return "\n".join(out)


class RestToMarkdown(griffe.Extension):
    """Rewrite every docstring of the package (see the module docstring)."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        """Run once the whole package is loaded, so every name can be resolved."""
        if pkg.name != PACKAGE:
            return
        todo: list[Object] = [pkg]
        while todo:
            obj = todo.pop()
            if obj.docstring is not None:
                value = _literal_blocks(obj.docstring.value)
                obj.docstring.value = ROLE.sub(partial(_role, obj), value)
            todo.extend(member for member in obj.members.values() if not member.is_alias)
