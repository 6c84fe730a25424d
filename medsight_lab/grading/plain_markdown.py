"""MyST-only markup turned into plain Markdown, for the student edition's notebooks.

The chapters are written in MyST, which the book (Sphinx) and JupyterLab with `jupyterlab-myst`
render. Notebook 7 without it, VS Code, Colab and nbconvert show MyST's directives and roles as raw
text (an exercise is a code block with `:label:` in it, `$D$` inside it stays unrendered). The
student edition therefore carries plain Markdown:

- ```` ```{exercise} Title ```` fences: a heading `#### Exercise N — Title` (numbered within the
  notebook) and the body as ordinary Markdown;
- `:::{admonition} Title` (and `{note}`, `{tip}`, `{warning}`, ...): a blockquote with the title in
  bold;
- `{cite:p}` / `{cite:t}` roles: "(Author, year)" / "Author (year)", and below the cell the list of
  the works it cites, read from `book/references.bib`;
- `$...$` and `$$...$$` math stay: plain Markdown in Jupyter renders them (MathJax / KaTeX);
- directive options (`:label:`, `:class:`) are dropped, `(label)=` targets too.
"""

from __future__ import annotations

import re
from pathlib import Path

# A fence opening a directive: ```{name} argument  or  :::{name} argument
_OPEN = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>.*)$")
_OPTION = re.compile(r"^:[\w-]+:")
_CITE = re.compile(r"\{cite(?::(?P<kind>[pt]))?\}`(?P<keys>[^`]+)`")
_TARGET = re.compile(r"^\([\w-]+\)=\s*$")
_ROLE = re.compile(r"\{(?P<name>[\w:-]+)\}`(?P<text>[^`]*)`")
ADMONITIONS = {"admonition", "note", "tip", "hint", "important", "warning", "caution",
               "attention", "danger", "error", "seealso"}


class PlainMarkdownError(ValueError):
    """Markup the conversion does not know (a directive or role without a plain rendering)."""


# -- the bibliography ----------------------------------------------------------------------------

def read_bibtex(text: str) -> dict:
    """{key: {field: value}} of a BibTeX file; values lose their outer braces and LaTeX braces."""
    entries = {}
    for match in re.finditer(r"@(\w+)\s*\{\s*([^,\s]+)\s*,", text):
        fields, i = {}, match.end()
        depth, start = 1, i
        while i < len(text) and depth:              # the entry ends at its matching brace
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[start:i - 1]
        for field in re.finditer(r"(\w+)\s*=\s*", body):
            value, j = _bib_value(body, field.end())
            fields[field.group(1).lower()] = value
        entries[match.group(2)] = fields
    return entries


def _bib_value(body, i):
    if body[i] == "{":
        depth, j = 0, i
        while j < len(body):
            depth += {"{": 1, "}": -1}.get(body[j], 0)
            j += 1
            if depth == 0:
                break
        raw = body[i + 1:j - 1]
    elif body[i] == '"':
        j = body.index('"', i + 1) + 1
        raw = body[i + 1:j - 1]
    else:
        j = re.match(r"[^,}\s]*", body[i:]).end() + i
        raw = body[i:j]
    return _delatex(raw), j


_LATEX = {r"\L": "Ł", r"\l": "ł", r"\o": "ø", r"\O": "Ø", r"\ss": "ß", r"\&": "&"}
_ACCENTS = {'"': "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303",
            "c": "\u0327", "v": "\u030c"}


def _delatex(text):
    import unicodedata
    text = re.sub(r"\\([\"'`^~]|[cv](?=\s|\{))\s*\{?(\w)\}?",
                  lambda m: unicodedata.normalize("NFC", m.group(2) + _ACCENTS[m.group(1)]), text)
    for command, char in _LATEX.items():
        text = re.sub(re.escape(command) + r"(?![A-Za-z])", char, text)
    text = text.replace("--", "–").replace("{", "").replace("}", "")
    return re.sub(r"\s+", " ", text).strip()


def _surnames(authors: str):
    names = [a.strip() for a in re.split(r"\s+and\s+", authors) if a.strip()]
    return [n.split(",")[0].strip() if "," in n else n.split()[-1] for n in names]


def author_year(entry: dict) -> tuple:
    """("Vaswani et al.", "2017") for an entry."""
    surnames = _surnames(entry.get("author", entry.get("editor", "Anonymous")))
    who = (surnames[0] if len(surnames) == 1 else " and ".join(surnames) if len(surnames) == 2
           else f"{surnames[0]} et al.")
    return who, entry.get("year", "n.d.")


def reference_line(entry: dict) -> str:
    """One line of a reference list: authors (year). Title. Venue. URL."""
    authors = entry.get("author", "")
    names = [a.strip() for a in re.split(r"\s+and\s+", authors) if a.strip()]
    people = ", ".join(" ".join(reversed([p.strip() for p in n.split(",", 1)])) if "," in n
                       else n for n in names)
    venue = entry.get("journal") or entry.get("booktitle") or entry.get("publisher") or ""
    parts = [f"{people} ({entry.get('year', 'n.d.')}). {entry.get('title', '')}."]
    if venue:
        parts.append(f"*{venue}*.")
    if entry.get("url") or entry.get("doi"):
        parts.append(entry.get("url") or f"https://doi.org/{entry['doi']}")
    return " ".join(parts)


# -- the conversion ------------------------------------------------------------------------------

class Converter:
    """Converts the markdown cells of one notebook in order (exercise numbers run through it)."""

    def __init__(self, bibliography: dict):
        self.bibliography = bibliography
        self.exercises = 0

    def cell(self, source: str) -> str:
        """The plain-Markdown version of one markdown cell's source."""
        cited = self._cited = []
        text = "\n".join(self._blocks(source.splitlines()))
        if cited:
            refs = "\n".join(f"- {reference_line(self.bibliography[k])}" for k in cited)
            text = text.rstrip("\n") + "\n\n**References**\n\n" + refs
        return text + ("\n" if source.endswith("\n") else "")

    def _inline(self, line):
        """A prose line with its roles rendered (code blocks never reach here)."""
        line = _CITE.sub(lambda m: self._cite(m, self._cited), line)
        unknown = _ROLE.search(line)
        if unknown:
            raise PlainMarkdownError(f"no plain-Markdown rendering for the role "
                                     f"{{{unknown.group('name')}}} in: {unknown.group(0)!r}")
        return line

    def _cite(self, match, cited):
        keys = [k.strip() for k in match.group("keys").split(",")]
        for key in keys:
            if key not in self.bibliography:
                raise PlainMarkdownError(f"citation {key!r} is not in the bibliography")
            if key not in cited:
                cited.append(key)
        pairs = [author_year(self.bibliography[k]) for k in keys]
        if match.group("kind") == "t":
            return "; ".join(f"{who} ({year})" for who, year in pairs)
        return "(" + "; ".join(f"{who}, {year}" for who, year in pairs) + ")"

    def _blocks(self, lines):
        """Lines with every directive replaced by its plain rendering (nested ones too)."""
        out, i = [], 0
        in_code = None                       # the fence of an ordinary code block we are in
        while i < len(lines):
            line = lines[i]
            if in_code:
                out.append(line)
                if line.strip() == in_code:
                    in_code = None
                i += 1
                continue
            opened = _OPEN.match(line.strip())
            if opened is None:
                fence = re.match(r"^\s*(`{3,}|~{3,})", line)
                if fence:
                    in_code = fence.group(1)
                    out.append(line)
                elif not _TARGET.match(line):
                    out.append(self._inline(line))
                i += 1
                continue
            fence, name, arg = opened.group("fence"), opened.group("name"), opened.group("arg")
            body, i = self._body(lines, i + 1, fence)
            out += self._directive(name, arg.strip(), self._blocks(body))
        return out

    @staticmethod
    def _body(lines, i, fence):
        """The directive's lines up to its closing fence (options dropped), and the next index."""
        body = []
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise PlainMarkdownError(f"a {fence}{{...}} directive is not closed")
        while body and _OPTION.match(body[0].strip()):
            body.pop(0)
        return body, i + 1

    def _directive(self, name, arg, body):
        while body and not body[0].strip():
            body.pop(0)
        if name in ("exercise", "solution"):
            if name == "exercise":
                self.exercises += 1
            heading = f"Exercise {self.exercises}" if name == "exercise" else "Solution"
            heading += f" — {arg}" if arg else ""
            return [f"#### {heading}", ""] + body
        if name in ADMONITIONS:
            title = arg if name == "admonition" else name.capitalize() + (f": {arg}" if arg else "")
            head = [f"> **{title}**", ">"] if title else []
            return head + [f"> {b}" if b.strip() else ">" for b in body]
        if name == "math":
            return ["$$"] + body + ["$$"]
        raise PlainMarkdownError(f"no plain-Markdown rendering for the directive {{{name}}}")


def load_bibliography(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no bibliography at {path} (the book's references.bib)")
    return read_bibtex(path.read_text(encoding="utf-8"))


def plain_notebook(nb, bibliography: dict):
    """Convert every markdown cell of `nb` in place; returns `nb`."""
    converter = Converter(bibliography)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = converter.cell(cell.source)
    return nb
