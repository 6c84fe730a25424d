"""The HTML book in a real browser: build it, open every page in Chromium, look.

    python -m pytest -m browser tests/test_book_browser.py

Instructor edition (built from a copy of the book sources, so the repository's `_build/html` is
left alone): every local link and #anchor resolves, every page loads without a JavaScript error,
every image loads, every solution is folded behind its toggle until the toggle is clicked, and the
kernel-free grounding explorer answers its slider: chapter 5's on the first world, chapter 7's
over the films of the second. Student edition
(`medsight_lab.grading.release.release`): no solution or hidden-test text anywhere, neither in the
files nor in what the browser renders, and its local links resolve too.

Screenshots of every page land in `_build/screenshots/` for a person to look at.

The machine has no internet: requests to other hosts are aborted at once, and only errors that
come from the book itself count (a page error, a console error of a local script, a local file
that fails to load). Needs Debian's Chromium (`/usr/bin/chromium`): skipped when it is missing,
failed when the environment variable CI is set (CI must install it).
"""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
INSTALL = "apt-get update && apt-get install -y --no-install-recommends chromium"
SCREENSHOTS = ROOT / "_build" / "screenshots"
MARKERS = [("### BEGIN SOLUTION", "### END SOLUTION"),
           ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")]
# Solution lines shorter than this ("return x") are too common to prove a leak.
MIN_SECRET = 12


# -- helpers -------------------------------------------------------------------------------------
def _jupyter_book():
    exe = Path(sys.executable).with_name("jupyter-book")
    return str(exe) if exe.exists() else "jupyter-book"


def build_book(project: Path, html_dir_parent: Path) -> Path:
    """Copy the book sources of `project` into `html_dir_parent` and build them there with
    `jupyter-book build -W -n --keep-going`; return the HTML folder."""
    out = html_dir_parent
    shutil.copy2(project / "_config.yml", out / "_config.yml")
    shutil.copy2(project / "_toc.yml", out / "_toc.yml")
    for folder in ("book", "notebooks"):
        shutil.copytree(project / folder, out / folder)
    done = subprocess.run([_jupyter_book(), "build", str(out), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=600)
    log = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    problems = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert done.returncode == 0, "the book did not build:\n" + "\n".join(problems or [log[-3000:]])
    return out / "_build" / "html"


def html_pages(html_dir: Path) -> list:
    """Every page of a built book, as paths relative to its HTML folder."""
    skip = ("_static", "_sources", "_images")
    return sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
                  if not p.relative_to(html_dir).parts[0] in skip)


def secret_lines(notebook_dir: Path) -> list:
    """The solution and hidden-test lines of the instructor notebooks (markers excluded),
    computed here rather than taken from the release module under test."""
    secrets = set()
    for path in sorted(notebook_dir.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            lines = cell.source.splitlines()
            for begin, end in MARKERS:
                inside = False
                for line in lines:
                    if begin in line:
                        inside = True
                    elif end in line:
                        inside = False
                    elif inside and len(line.strip()) >= MIN_SECRET \
                            and not line.strip().startswith("#"):
                        secrets.add(line.strip())
    return sorted(secrets)


class _Anchors(HTMLParser):
    """The ids a page defines and the local references it makes (href / src)."""

    def __init__(self):
        super().__init__()
        self.ids, self.refs = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update(v for k, v in attrs.items() if k in ("id", "name") and v)
        for key in ("href", "src"):
            ref = attrs.get(key)
            if ref and not urlparse(ref).scheme and not ref.startswith("//"):
                self.refs.append(ref)


@functools.lru_cache(maxsize=None)
def _parse(page: Path) -> _Anchors:
    parser = _Anchors()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def broken_local_links(html_dir: Path) -> list:
    """Every href / src of every page that points inside the book at a file that is not there,
    or at an #anchor its page does not define. (Links to other sites cannot be fetched offline;
    they are not checked.)"""
    problems = []
    for rel in html_pages(html_dir):
        for ref in _parse(html_dir / rel).refs:
            parts = urlparse(urljoin(rel, ref))
            target = html_dir / unquote(parts.path) if parts.path else html_dir / rel
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{rel}: {ref} -> no file {target.relative_to(html_dir)}")
            elif parts.fragment and target.suffix == ".html" \
                    and unquote(parts.fragment) not in _parse(target).ids:
                problems.append(f"{rel}: {ref} -> no anchor #{parts.fragment}")
    return problems


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Server:
    """A static HTTP server for one folder on 127.0.0.1, in a thread."""

    def __init__(self, folder: Path):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _is_local(url: str) -> bool:
    return urlparse(url).hostname in ("127.0.0.1", "localhost") or url.startswith(("data:",
                                                                                   "blob:",
                                                                                   "about:"))


class PageWatch:
    """Collects the errors of one page that are ours: uncaught exceptions, console errors not
    caused by an aborted request to another host, and local requests that failed."""

    def __init__(self, page):
        self.errors = []
        page.on("pageerror", self._page_error)
        page.on("console", self._console)
        page.on("requestfailed", self._request_failed)

    def _page_error(self, err):
        self.errors.append(f"page error: {err}")

    def _console(self, msg):
        if msg.type != "error":
            return
        url = (msg.location or {}).get("url", "")
        if "Failed to load resource" in msg.text and not _is_local(url):
            return  # an external resource (CDN) that cannot be reached offline
        self.errors.append(f"console error: {msg.text} ({url})")

    def _request_failed(self, request):
        if _is_local(request.url):
            self.errors.append(f"failed to load {request.url}: {request.failure}")


def _offline_routes(context):
    """Abort every request to another host at once (there is no internet here), so pages load
    fast and deterministically."""
    context.route("**/*", lambda route: route.continue_() if _is_local(route.request.url)
                  else route.abort())


def _screenshot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


IMAGES_LOADED = """async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(img => { img.loading = "eager";
                                      return img.decode().catch(() => null); }));
  return imgs.map(img => ({src: img.currentSrc || img.src,
                           ok: img.complete && img.naturalWidth > 0}));
}"""


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        message = f"Debian's Chromium is missing at {CHROMIUM}; install it with: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def instructor_html(tmp_path_factory):
    return build_book(ROOT, tmp_path_factory.mktemp("instructor_book"))


@pytest.fixture(scope="module")
def student_edition(tmp_path_factory):
    from medsight_lab.grading.release import release
    out = tmp_path_factory.mktemp("student") / "edition"
    release(ROOT / "notebooks", out, build_html=True)
    return out


def _is_redirect(path: Path) -> bool:
    """A page that only forwards the reader elsewhere (the book's index.html)."""
    return re.search(r'http-equiv="refresh"', path.read_text(encoding="utf-8"), re.I) is not None


def _open(browser, url, redirect=False):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    _offline_routes(context)
    page = context.new_page()
    watch = PageWatch(page)
    if redirect:
        # Wait for the page it forwards to, so nothing navigates while we look.
        with page.expect_navigation(url=lambda u: u != url, wait_until="load", timeout=15000):
            page.goto(url)
    else:
        page.goto(url, wait_until="load")
    return context, page, watch


# -- the instructor edition ----------------------------------------------------------------------
def test_instructor_book_pages(chromium, instructor_html):
    pages = html_pages(instructor_html)
    chapters = [p for p in pages if p.startswith("notebooks/")]
    assert chapters, f"no chapter pages in the built book: {pages}"
    problems = []
    with Server(instructor_html) as server:
        for rel in pages:
            context, page, watch = _open(chromium, server.base + rel,
                                         _is_redirect(instructor_html / rel))
            try:
                images = page.evaluate(IMAGES_LOADED)
                broken = [img["src"] for img in images if not img["ok"]]
                if broken:
                    problems.append(f"{rel}: images that do not load: {broken}")
                problems += [f"{rel}: {e}" for e in watch.errors]
                _screenshot(page, rel.replace("/", "__").replace(".html", ".png"))
            finally:
                context.close()
    assert not problems, "\n".join(problems)


def test_no_page_runs_a_script_twice_and_the_copyright_is_current(instructor_html):
    """Sphinx 7.4 wrote sphinx-thebe's inline config script twice into every page (the second
    copy threw `Identifier 'THEBE_JS_URL' has already been declared`); book/_ext/medsight_book.py
    removes the repeat and runs the copyright to the build year."""
    import time
    year = time.gmtime().tm_year
    for rel in html_pages(instructor_html):
        text = (instructor_html / rel).read_text(encoding="utf-8")
        if _is_redirect(instructor_html / rel):
            continue
        bodies = re.findall(r"<script>(.*?)</script>", text, re.S)
        assert len(bodies) == len(set(bodies)), f"{rel}: an inline script appears twice"
        assert text.count("const THEBE_JS_URL") <= 1, rel
        assert re.search(rf"Copyright\s+2024(–{year})?\.", text) and str(year) in text, rel


def test_copyright_runs_to_the_build_year():
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        from medsight_book import copyright_to
    finally:
        sys.path.remove(str(ROOT / "book" / "_ext"))
    assert copyright_to("2024", 2026) == "2024–2026"
    assert copyright_to("2024-2025 MedSight Lab", 2026) == "2024–2026 MedSight Lab"
    assert copyright_to("2026", 2026) == "2026"
    assert copyright_to("MedSight Lab", 2026) == "MedSight Lab"


def test_instructor_book_links_resolve(instructor_html):
    problems = broken_local_links(instructor_html)
    assert not problems, "\n".join(problems[:30])


def test_every_figure_has_a_text_alternative(instructor_html):
    # A chapter's figures get their alt text from the cell's `mystnb.image.alt` metadata; without
    # it MyST-NB writes the image's file path, which a screen reader reads out instead.
    figures = []
    for rel in html_pages(instructor_html):
        if rel.startswith("notebooks/"):
            page = (instructor_html / rel).read_text(encoding="utf-8")
            figures += [(rel, html.unescape(alt)) for alt in
                        re.findall(r'<img alt="([^"]*)" src="[^"]*_images/', page)]
    assert len(figures) >= 10, f"too few chapter figures found: {figures}"
    missing = [(rel, alt) for rel, alt in figures if "_images/" in alt or len(alt.split()) < 8]
    assert not missing, f"figures without a text alternative: {missing}"


def test_solutions_hidden_until_toggled(chromium, instructor_html):
    # The chapter pages whose code shows a solution (a guide may quote the markers in prose).
    pages = [rel for rel in html_pages(instructor_html) if rel.startswith("notebooks/")
             and "BEGIN SOLUTION" in (instructor_html / rel).read_text(encoding="utf-8")]
    assert pages, "no chapter of the instructor book shows a solution: were the exercises removed?"
    n_solutions = 0
    with Server(instructor_html) as server:
        for rel in pages:
            context, page, watch = _open(chromium, server.base + rel,
                                         _is_redirect(instructor_html / rel))
            try:
                # Every code cell holding a solution sits inside a folded <details> toggle.
                inputs = page.locator("div.cell_input", has_text="### BEGIN SOLUTION")
                n_solutions += inputs.count()
                unfolded = page.evaluate("""() => Array.from(document.querySelectorAll(
                    'div.cell_input')).filter(el => el.textContent.includes('### BEGIN SOLUTION')
                    && !el.closest('details.hide.above-input')).length""")
                assert unfolded == 0, f"{rel}: {unfolded} solution cell(s) not behind a toggle"
                for i in range(inputs.count()):
                    cell = inputs.nth(i)
                    toggle = cell.evaluate_handle(
                        "el => el.closest('details.hide.above-input')").as_element()
                    assert not toggle.evaluate("d => d.open"), f"{rel}: solution {i} starts open"
                    assert not cell.is_visible(), f"{rel}: solution {i} visible before the click"
                    toggle.query_selector("summary").click()
                    cell.wait_for(state="visible", timeout=5000)
                    assert toggle.evaluate("d => d.open")
                    assert "### BEGIN SOLUTION" in cell.inner_text(), \
                        f"{rel}: solution {i} still hidden after the click"
                assert not watch.errors, f"{rel}: {watch.errors}"
            finally:
                context.close()
    assert n_solutions > 0, f"no solution cell found on {pages}"


def test_answer_keys_folded_until_clicked(chromium, instructor_html):
    # Every chapter ends with the answers to its questions, folded (sphinx-togglebutton).
    chapters = [rel for rel in html_pages(instructor_html) if rel.startswith("notebooks/")]
    with Server(instructor_html) as server:
        for rel in chapters:
            context, page, watch = _open(chromium, server.base + rel)
            try:
                keys = page.locator("div.admonition.dropdown",
                                    has_text="Answers to the questions (instructor edition)")
                assert keys.count() == 1, f"{rel}: {keys.count()} answer keys"
                first = keys.locator("ol > li").first
                assert not first.is_visible(), f"{rel}: the answers are visible before the click"
                keys.locator("button.toggle-button").click()
                first.wait_for(state="visible", timeout=5000)
                assert not watch.errors, f"{rel}: {watch.errors}"
            finally:
                context.close()


def test_formulas_render_offline(chromium, instructor_html):
    """MathJax ships with the book (book/_static/mathjax): formulas render with no internet."""
    rel = "notebooks/02_architecture.html"
    with Server(instructor_html) as server:
        context, page, watch = _open(chromium, server.base + rel)
        try:
            page.wait_for_selector("mjx-container svg", timeout=15000)
            assert page.locator("mjx-container").count() >= 3
            visible = page.evaluate("() => document.body.innerText")
            assert "\\sqrt" not in visible and "\\mathrm" not in visible, "raw LaTeX on the page"
            assert not watch.errors, watch.errors
        finally:
            context.close()


def test_explorer_answers_its_slider(chromium, instructor_html):
    rel = "notebooks/05_evaluation.html"
    with Server(instructor_html) as server:
        context, page, watch = _open(chromium, server.base + rel)
        try:
            explorer = page.locator("div.medsight-explorer").first
            explorer.scroll_into_view_if_needed()
            slider = explorer.locator("input.medsight-token-slider")
            grid, verdict = explorer.locator(".medsight-grid"), explorer.locator(".medsight-verdict")
            step = explorer.locator(".medsight-step")

            def state():
                return grid.inner_html(), verdict.inner_text(), step.inner_text()

            # Work on an image with a lesion (the pointing game applies to it).
            sample = explorer.locator("select.medsight-sample")
            options = sample.locator("option")
            lesion = [options.nth(i).get_attribute("value") for i in range(options.count())
                      if not options.nth(i).inner_text().endswith("normal")]
            assert lesion, "the explorer holds no image with a lesion"
            sample.select_option(lesion[0])
            start = state()
            first = int(slider.input_value())
            assert first > 0, "the explorer should open on the first finding word, not <bos>"
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            explorer.screenshot(path=str(SCREENSHOTS / "explorer_before.png"))

            slider.fill("0")                 # back to <bos>: not a finding word
            moved = state()
            assert moved[2] != start[2], "the step line did not follow the slider"
            assert moved[0] != start[0], "the attention map did not change with the slider"
            assert moved[1] != start[1], "the verdict did not change with the slider"
            assert "Not a finding word" in moved[1]
            explorer.screenshot(path=str(SCREENSHOTS / "explorer_after.png"))

            slider.fill(str(first))          # and forth: the original state comes back exactly
            assert state() == start

            # The other controls redraw too: one head's map is not the mean of the heads.
            explorer.locator("select.medsight-head").select_option("0")
            assert state()[0] != start[0], "the map did not change with the head"
            explorer.locator("select.medsight-mode").select_option("generated")
            explorer.locator("select.medsight-layer").select_option("0")
            sample.select_option(options.nth(options.count() - 1).get_attribute("value"))
            assert re.match(r"Pointing game: (hit|miss)|No lesion|Position not read",
                            verdict.inner_text())
            assert not watch.errors, watch.errors
        finally:
            context.close()


FILM_STATE = """root => {
  const box = el => { const r = el.getBoundingClientRect();
                      return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  const img = root.querySelector('img.medsight-film-image');
  const cells = Array.from(root.querySelectorAll('.medsight-heat'));
  const opacity = cells.map(c => parseFloat(getComputedStyle(c).opacity));
  const k = opacity.indexOf(Math.max(...opacity));
  const mark = root.querySelector('text.medsight-top');
  return {loaded: img.complete ? img.naturalWidth : 0, src: img.getAttribute('src'),
          film: box(img), cells: cells.length, hottest: +cells[k].dataset.patch,
          hot: box(cells[k]), mark: mark && box(mark), opacities: opacity.join(' '),
          outlines: Array.from(root.querySelectorAll('path.medsight-outline'))
                         .map(p => p.dataset.finding)};
}"""


def test_film_explorer_answers_its_slider(chromium, instructor_html):
    """Chapter 7's explorer on films: the film loads, the current word's map lies over it with the
    most-attended patch (the most opaque square, marked) at its place on the patch grid, the film's
    findings are outlined, and the slider, the report and the controls redraw it."""
    rel = "notebooks/07_harder_world.html"
    with Server(instructor_html) as server:
        context, page, watch = _open(chromium, server.base + rel)
        try:
            explorer = page.locator("div.medsight-explorer").first
            explorer.scroll_into_view_if_needed()
            assert explorer.locator(".medsight-film").count() == 1, "no film in chapter 7's explorer"
            assert explorer.locator("select.medsight-mode").input_value() == "generated"
            slider = explorer.locator("input.medsight-token-slider")
            verdict, step = explorer.locator(".medsight-verdict"), explorer.locator(".medsight-step")
            sample = explorer.locator("select.medsight-sample")
            options = sample.locator("option")
            findings = options.nth(0).inner_text().split(" ", 1)[1].split(", ")

            def film_state():
                state = explorer.evaluate(FILM_STATE)
                assert state["loaded"] == 64 and state["cells"] == 64
                side, film, hot = 8, state["film"], state["hot"]
                # The squares are the 8 x 8 patch grid over the film: the hottest one sits at its
                # patch's row and column, and the mark in it.
                assert hot["w"] == pytest.approx(film["w"] / side, abs=0.5)
                row = round((hot["y"] - film["y"]) / hot["h"])
                col = round((hot["x"] - film["x"]) / hot["w"])
                assert 0 <= row < side and 0 <= col < side
                assert row * side + col == state["hottest"]
                mark = state["mark"]
                if mark is not None:
                    cx, cy = mark["x"] + mark["w"] / 2, mark["y"] + mark["h"] / 2
                    assert hot["x"] <= cx <= hot["x"] + hot["w"]
                    assert hot["y"] <= cy <= hot["y"] + hot["h"]
                return state

            start = film_state()
            assert sorted(start["outlines"]) == sorted(findings), \
                "the film's findings are not the ones outlined"
            first = int(slider.input_value())
            start_text = verdict.inner_text(), step.inner_text()
            assert re.match(r"Pointing game: (hit|miss)|This film has no", start_text[0]), \
                "the explorer should open on a finding word of the generated report"
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            explorer.screenshot(path=str(SCREENSHOTS / "film_explorer_before.png"))

            slider.fill("0")                 # back to <bos>: not a finding word
            moved = film_state()
            assert step.inner_text() != start_text[1], "the step line did not follow the slider"
            assert moved["opacities"] != start["opacities"], "the map did not follow the slider"
            assert "Not a finding word" in verdict.inner_text()
            slider.fill(str(first))          # and forth: the original state comes back exactly
            assert film_state()["opacities"] == start["opacities"]
            assert (verdict.inner_text(), step.inner_text()) == start_text

            explorer.locator("select.medsight-head").select_option("0")
            assert film_state()["opacities"] != start["opacities"], "the map ignored the head"
            explorer.locator("select.medsight-mode").select_option("teacher_forced")
            explorer.locator("select.medsight-layer").select_option("0")
            film_state()
            sample.select_option(options.nth(options.count() - 1).get_attribute("value"))
            other = film_state()
            assert other["src"] != start["src"], "the film did not change with the sample"
            explorer.screenshot(path=str(SCREENSHOTS / "film_explorer_after.png"))
            assert re.match(r"Pointing game: (hit|miss)|No finding|This film has no|Position not",
                            verdict.inner_text())
            assert not watch.errors, watch.errors
        finally:
            context.close()


# -- the student edition -------------------------------------------------------------------------
def test_student_edition_has_no_solutions(chromium, student_edition):
    secrets = secret_lines(ROOT / "notebooks")
    assert secrets, "the instructor notebooks hold no solution lines to look for"
    html_dir = student_edition / "_build" / "html"
    pages = html_pages(html_dir)
    assert any(p.startswith("notebooks/") for p in pages), pages
    problems = []
    # In the files, tags stripped (syntax highlighting splits code into spans).
    for rel in pages:
        raw = (html_dir / rel).read_text(encoding="utf-8")
        text = html.unescape(re.sub(r"<[^>]+>", "", raw))
        # A marker on a chapter page is a solution cell that survived (the guides name them).
        for begin, end in MARKERS:
            if rel.startswith("notebooks/") and (begin in text or end in text):
                problems.append(f"{rel}: contains {begin!r}")
        problems += [f"{rel}: solution line {s!r}" for s in secrets if s in text]
    # In the browser, every node's text (hidden ones included), and no JavaScript errors.
    with Server(html_dir) as server:
        for rel in pages:
            context, page, watch = _open(chromium, server.base + rel,
                                         _is_redirect(html_dir / rel))
            try:
                text = page.evaluate("() => document.documentElement.textContent")
                problems += [f"{rel} (rendered): solution line {s!r}" for s in secrets
                             if s in text]
                if rel.startswith("notebooks/") and ("BEGIN SOLUTION" in text
                                                     or "BEGIN HIDDEN TESTS" in text):
                    problems.append(f"{rel} (rendered): solution markers")
                problems += [f"{rel}: {e}" for e in watch.errors]
                _screenshot(page, "student__" + rel.replace("/", "__").replace(".html", ".png"))
            finally:
                context.close()
    problems += broken_local_links(html_dir)
    # And the student notebooks themselves.
    for path in sorted((student_edition / "notebooks").glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        problems += [f"{path.name}: solution line {s!r}" for s in secrets if s in text]
    assert not problems, "\n".join(problems[:20])
