"""Natural English text that is available offline and may be redistributed: the prose of CPython's documentation
topics and of its standard library's docstrings.

Every CPython ships ``pydoc_data.topics`` (the text behind ``help("if")``) and the source of its standard library,
both under the Python Software Foundation License. :func:`prose_paragraphs` keeps their English prose paragraphs
(running sentences): the documentation topics first, then the docstrings of the top-level standard-library modules
(read with ``ast``, never imported), which together hold about 90,000 gemma tokens, enough for contexts at the
embedded models' full length. Everything else is dropped:
headings and their underlines, grammar productions, code examples and interactive sessions (indented blocks),
tables, lists, footnote markers and the asterisks of emphasis. The paragraphs keep the order in which CPython lists the topics. The text
differs a little between Python versions, so a run records the Python version and the text's SHA-256.
"""

from __future__ import annotations

import hashlib
import re
import sys
from functools import lru_cache

SOURCE = ("prose paragraphs of pydoc_data.topics (the documentation topics that ship with CPython), then of the "
          "docstrings of CPython's top-level standard-library modules")
LICENCE = "Python Software Foundation License Version 2 (PSF-2.0)"

#: A paragraph must have at least this many words to count as prose ...
MIN_WORDS = 20
#: ... and at least this fraction of them plain English words (letters, then optional sentence punctuation).
MIN_PLAIN_FRACTION = 0.6
_HEADING_RULE = re.compile(r"^[*=\-~^\"]{3,}$")
_FOOTNOTE = re.compile(r"\s*\[\d+\]")
_PLAIN_WORD = re.compile(r"^[A-Za-z][a-z]*[,.;:]?$")
_EMPHASIS = re.compile(r"\*([^*\s][^*]*?)\*")
_BROKEN_HYPHEN = re.compile(r"(?<=[a-z])- (?=[a-z])")
_CODE_MARKERS = (">>>", "::=", "+---", "|", "\t")


def is_prose(paragraph: str) -> bool:
    """Whether a paragraph (lines joined, stripped) reads as English prose: long enough, a capital at its start and
    a full stop or colon at its end, no interactive session, grammar rule or table, and mostly plain words."""
    words = paragraph.split()
    if len(words) < MIN_WORDS or not paragraph[0].isupper() or paragraph[-1] not in ".:":
        return False
    if any(s in paragraph for s in _CODE_MARKERS):
        return False
    return sum(bool(_PLAIN_WORD.match(w)) for w in words) / len(words) >= MIN_PLAIN_FRACTION


def split_paragraphs(text: str) -> list[str]:
    """Unindented blocks of lines separated by blank lines, each joined into one line (indented blocks, headings
    and list items dropped)."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if not lines or any(line.startswith((" ", "\t")) for line in lines):
            continue  # code, grammar, quoted or list continuation
        if any(_HEADING_RULE.match(line.strip()) for line in lines):
            continue
        joined = _FOOTNOTE.sub("", " ".join(line.strip() for line in lines)).strip()
        joined = _BROKEN_HYPHEN.sub("-", _EMPHASIS.sub(r"\1", joined))  # *emphasis* and "read- only" of the wrapping
        if joined:
            out.append(joined)
    return out


def _stdlib_docstrings():
    """The docstrings of the modules, classes and functions in the standard library's top-level ``.py`` files, by
    file name; the files are parsed, never imported (some modules act when imported)."""
    import ast
    import sysconfig
    from pathlib import Path

    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef,
                                                                       ast.AsyncFunctionDef))]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc:
                yield doc


@lru_cache(maxsize=1)
def prose_paragraphs() -> tuple[str, ...]:
    """The prose paragraphs of ``pydoc_data.topics`` in topic order, then of the standard library's docstrings,
    each once."""
    from pydoc_data.topics import topics

    seen, out = set(), []
    for text in [*topics.values(), *_stdlib_docstrings()]:
        for paragraph in split_paragraphs(text):
            if is_prose(paragraph) and paragraph not in seen:
                seen.add(paragraph)
                out.append(paragraph)
    return tuple(out)


def provenance() -> dict:
    """Where the natural text comes from, for the results: source, licence, Python version, size and hash."""
    paragraphs = prose_paragraphs()
    text = "\n\n".join(paragraphs)
    return {
        "source": SOURCE,
        "licence": LICENCE,
        "python_version": sys.version.split()[0],
        "paragraphs": len(paragraphs),
        "characters": len(text),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
