"""The chapters and the live explorer in a real JupyterLab and Jupyter Notebook, driven by Chromium.

Starts `jupyter lab` (or `jupyter notebook`) on 127.0.0.1 in a temporary folder. (1) A notebook
that builds a `GroundingExplorer`: runs the cell, clicks the token slider's track and checks that
the step line and the report follow (a round trip through the kernel). (2) Chapter 2 as written
(MyST): with `jupyterlab-myst` its exercise box, formulas and citation render, and no raw
`:label:`, `{cite:p}` or `$` is left on the page. Needs Debian's Chromium like
test_book_browser.py (skipped without it, failed when CI is set).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "medsight-test"
CELL = """\
import torch
import medsight_lab as ml
from medsight_lab.explorer import GroundingExplorer, explorer_data

torch.manual_seed(0)
ds = ml.SyntheticRadiologyDataset(12, seed=0)
lesions = [i for i in range(len(ds)) if ds[i]["finding_name"] != "normal"][:2]
GroundingExplorer(explorer_data(ml.default_model(ds), ds, lesions))"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


APPS = {"lab": "/lab/tree/explorer.ipynb", "notebook": "/notebooks/explorer.ipynb"}


ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "02_architecture.ipynb"      # an exercise box, display and inline math, a citation


def _needs(app):
    if not CHROMIUM.exists():
        message = f"Debian's Chromium is missing at {CHROMIUM}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("jupyterlab" if app == "lab" else "notebook",
                        reason="pip install jupyterlab notebook")


@contextlib.contextmanager
def _jupyter(app, root):
    """The base URL of `jupyter lab` or `jupyter notebook` serving `root`."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", app, "--no-browser", "--allow-root",
         f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={TOKEN}",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"jupyter {app} did not start within 60 s")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(params=sorted(APPS))
def lab(request, tmp_path_factory):
    """(base URL, notebook path) of a running `jupyter lab` or `jupyter notebook`."""
    app = request.param
    _needs(app)
    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "explorer.ipynb")
    with _jupyter(app, root) as base:
        yield base, APPS[app]


@pytest.fixture(params=sorted(APPS))
def chapter_lab(request, tmp_path_factory):
    """(base URL, chapter path) of a running server with chapter 2 as the instructors have it."""
    app = request.param
    _needs(app)
    root = tmp_path_factory.mktemp("chapter")
    shutil.copy(ROOT / "notebooks" / CHAPTER, root / CHAPTER)
    with _jupyter(app, root) as base:
        yield base, APPS[app].replace("explorer.ipynb", CHAPTER)


RENDERED_MARKDOWN = """() => Array.from(document.querySelectorAll('.jp-MarkdownCell'))
    .map(cell => Array.from(cell.querySelectorAll('.jp-MarkdownOutput, .myst'))
                      .map(out => out.innerText).join('\\n')).join('\\n')"""


def test_chapter_myst_renders(chapter_lab):
    """jupyterlab-myst renders the chapter's MyST: the exercise is a box, formulas are typeset,
    the citation is a citation; without it the page would show the markup (the test fails: the
    fence, `:label:`, `{cite:p}` and `$` would be in the text)."""
    from playwright.sync_api import sync_playwright

    base, notebook = chapter_lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 3000})
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base)
                   else r.abort())
        page.goto(f"{base}{notebook}?token={TOKEN}")
        page.locator(".jp-Notebook .jp-MarkdownCell").first.wait_for(timeout=60000)
        exercise = page.locator(".jp-MarkdownCell aside.myst-exercise").first
        exercise.wait_for(timeout=30000)
        assert exercise.inner_text().startswith("Exercise")
        assert page.locator(".jp-MarkdownCell .katex-display").count() >= 1      # $$ ... $$
        assert page.locator(".jp-MarkdownCell .katex").count() >= 5              # $Q$, $K$, ...
        citation = page.locator(".jp-MarkdownCell .myst :text('vaswani2017attention')").first
        citation.wait_for(timeout=10000)
        text = page.evaluate(RENDERED_MARKDOWN)
        assert "Cross-attention from scratch" in text            # the cells have rendered
        for raw in ("{exercise}", ":label:", "{cite:p}", "$"):
            assert raw not in text, f"raw MyST on the page: {raw!r}"
        shots = ROOT / "_build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"{notebook.split('/')[1]}_chapter2_myst.png"))
        browser.close()


def test_widget_explorer_follows_its_slider(lab):
    from playwright.sync_api import sync_playwright

    base, notebook = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base)
                   else r.abort())
        page.goto(f"{base}{notebook}?token={TOKEN}")
        cell = page.locator(".jp-Notebook .jp-Cell").first
        cell.wait_for(timeout=60000)
        # Run the cell; a run requested before the kernel is connected is dropped, so retry.
        prompt = cell.locator(".jp-InputPrompt")
        for _ in range(30):
            cell.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            page.wait_for_timeout(2000)
            if prompt.inner_text().strip() not in ("[ ]:", ""):
                break
        handle = page.locator(".widget-slider .noUi-handle").first
        handle.wait_for(timeout=60000)
        output = page.locator(".jp-OutputArea-output").first
        page.wait_for_function(
            "() => document.querySelector('.jp-OutputArea-output')?.innerText.includes('Step')",
            timeout=30000, polling=250)
        before = output.inner_text()
        assert "Pointing game" in before
        step_line = """() => document.querySelector('.jp-OutputArea-output').innerText
                        .split('\\n').find(line => line.startsWith('Step'))"""
        first_step = page.evaluate(step_line)
        # (polling by interval: requestAnimationFrame polling stalls in headless Chromium here)
        track = page.locator(".widget-slider .noUi-base").first.bounding_box()

        def click_track(fraction):
            """Click the slider's track; the value goes to the kernel and the views come back."""
            page.mouse.click(track["x"] + fraction * track["width"], track["y"] + track["height"] / 2)

        click_track(0.98)                    # far right: the report's last token
        page.wait_for_function(f"s => ({step_line})() !== s", arg=first_step, timeout=15000,
                               polling=250)
        assert page.evaluate(step_line).startswith("Step ") and "«<eos>»" in output.inner_text()
        assert output.inner_text() != before
        shots = Path(__file__).resolve().parents[1] / "_build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"{notebook.split('/')[1]}_explorer.png"))
        browser.close()
