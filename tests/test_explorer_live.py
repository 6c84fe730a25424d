"""The live explorer (ipywidgets) in a real JupyterLab and Jupyter Notebook, driven by Chromium.

Starts `jupyter lab` (or `jupyter notebook`) on 127.0.0.1 in a temporary folder holding one
notebook that builds a `GroundingExplorer`, runs the cell, clicks the token slider's track and
checks that the step line and the report follow (a round trip through the kernel). Needs Debian's
Chromium like test_book_browser.py (skipped without it, failed when CI is set).
"""

from __future__ import annotations

import os
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


@pytest.fixture(params=sorted(APPS))
def lab(request, tmp_path_factory):
    """(base URL, notebook path) of a running `jupyter lab` or `jupyter notebook`."""
    app = request.param
    if not CHROMIUM.exists():
        message = f"Debian's Chromium is missing at {CHROMIUM}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("jupyterlab" if app == "lab" else "notebook",
                        reason="pip install jupyterlab notebook")
    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "explorer.ipynb")
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
        yield base, APPS[app]
    finally:
        server.terminate()
        server.wait(timeout=30)


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
