"""Two fixes to the HTML book, loaded by `_config.yml` (`sphinx.local_extensions`).

1. Every page ran sphinx-thebe's configuration script twice, and the second copy threw
   `Identifier 'THEBE_JS_URL' has already been declared`. sphinx-thebe adds the script with
   `app.add_js_file(None, body=...)` once the builder exists; Sphinx 7.4 then keeps it twice, once
   as `None` and once, re-read from its registry, as `''`, which its de-duplication sees as two
   files. Each page's script list is de-duplicated here.
2. The copyright line ends with the year the book is built (SOURCE_DATE_EPOCH's year when set, as
   for reproducible builds), so it never goes stale: `copyright: "2024"` reads 2024–<this year>.
"""

import os
import re
import time


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts, seen = [], set()
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            scripts.append(script)
    if "script_files" in context:
        context["script_files"] = scripts


def build_year() -> int:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return time.gmtime(int(epoch) if epoch else None).tm_year


def copyright_to(line: str, year: int) -> str:
    """`line` ("2024" or "2024-2025 ...") with its years running to `year`."""
    match = re.match(r"(\d{4})(?:[-–](\d{4}))?", line)
    if match is None:
        return line
    first = int(match.group(1))
    years = str(first) if first >= year else f"{first}–{year}"
    return years + line[match.end():]


def set_copyright_year(app, config):
    config.copyright = copyright_to(config.copyright, build_year())


def setup(app):
    app.connect("config-inited", set_copyright_year)
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
