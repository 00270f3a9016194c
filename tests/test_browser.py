"""A real browser: JupyterLab on loopback, every notebook in notebooks/ run in headless Chromium.

Checks what no Python-side test can, the way a new user meets the notebooks (Run All):

* each notebook opens unmodified once its kernel has started (its committed metadata is what
  JupyterLab writes), runs to the end with short parameters (``max_steps`` 4; each notebook's
  parameters cell is read and the known names shortened), and shows no error;
* no image in any output is broken (``naturalWidth > 0``), no label or button text is cut off;
* every input of the config form shows the field's help on hover, an invalid value outlines its
  box in red, Save answers every click; an empty model name is refused the same way, and the "?"
  shows a field's help on click; the model lab's answers are legible (not faint grey);
* the widget manager renders the form and the lab (no JupyterLab-only extension of ours, so
  Colab's renders them too), and a value typed into the page reaches the kernel and comes back
  as a new estimate.

A screenshot of each notebook is kept in test-artifacts/browser-<notebook>.png. Skipped, with
the reason, only where chromium cannot be installed (scripts/install_browser.sh).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# Short values for parameters a notebook declares (any notebook: names it lacks are ignored).
SHORT_PARAMETERS = {
    "max_steps": 4, "eval_steps": 2, "save_steps": 2, "logging_steps": 1, "batch_size": 2,
    "preview_rows": 3, "lab_samples": 1, "max_new_tokens": 8,
    # 00_prepare_data: a handful of prompts, two samples each
    "max_prompts": 8, "samples_per_prompt": 2,
}
VIEWPORT = {"width": 1280, "height": 1000}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def chromium_path() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    reason_file = ARTIFACTS / "browser-install.txt"
    reason = reason_file.read_text().strip() if reason_file.is_file() else "chromium is not installed"
    pytest.skip(f"no chromium: {reason} (scripts/install_browser.sh installs Debian's chromium with apt-get)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_validation_file(data: Path, n: int = 12) -> Path:
    """The first n sample validation pairs (image paths made absolute): evaluations stay quick."""
    source = data / "shapes" / "validation.jsonl"
    rows = [json.loads(line) for line in source.read_text().splitlines()[:n]]
    for row in rows:
        row["images"] = [str(source.parent / image) for image in row["images"]]
    path = data / "shapes" / "validation_small.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def shorten_parameters(notebook: dict, values: dict) -> dict:
    """The notebook with the given values in its parameters cell (only names it declares; rest untouched)."""
    for cell in notebook["cells"]:
        if "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        lines = "".join(cell["source"]).splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"^(\w+)(\s*:\s*[^=]+)?\s*=\s*(.*?)(\s+#.*)?$", line)
            if match and match.group(1) in values:
                annotation = (match.group(2) or "").rstrip()
                lines[i] = f"{match.group(1)}{annotation} = {values[match.group(1)]!r}{match.group(4) or ''}"
        cell["source"] = "\n".join(lines)
    return notebook


def parameter_names(notebook: dict) -> set[str]:
    cells = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    tree = ast.parse("".join(cells[0]["source"])) if cells else ast.parse("")
    return {node.target.id for node in tree.body if isinstance(node, ast.AnnAssign)} | {
        t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a scratch project (the notebooks, shortened, + a copy of the sample data)."""
    executable = chromium_path()  # skips, with the reason, before anything starts
    from nbtools.models import resolve_model_path

    # The notebooks' default model; built once into the shared cache (minutes) if no test did it yet,
    # so the page waits for the notebooks, not for a model build.
    resolve_model_path("tiny-qwen3-vl-warm")
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    shutil.copytree(REPO / "data_samples", project / "data_samples")  # a copy: nothing a notebook writes lands in the repo
    values = {**SHORT_PARAMETERS, "validation_file": str(small_validation_file(project / "data_samples"))}
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text())
        # The one machine-dependent entry JupyterLab writes: the kernel's Python version. The rest of the
        # committed metadata must be exactly what it writes (tests/test_notebooks.py checks the keys).
        notebook["metadata"].get("language_info", {}).update(version=platform.python_version())
        (project / "notebooks" / path.name).write_text(json.dumps(shorten_parameters(notebook, values), indent=1))
    port, token = free_port(), secrets.token_hex(16)
    settings = tmp_path / "settings" / "@jupyterlab"
    # no "get notified about Jupyter news?" toast over the screenshot
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    # every cell in the DOM (no windowing), so every output can be checked and photographed
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    env.pop("MPLBACKEND", None)
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={project}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                pytest.fail("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield {"base": base, "token": token, "project": project, "chromium": executable,
               "log": tmp_path / "jupyterlab.log"}
    finally:
        stop(server)
        log.close()


def stop(server: subprocess.Popen) -> None:
    """Stop the server and the kernels it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --- what the page is asked (JavaScript run in the page; `app` is JupyterLab) ------------------------

PANEL = "window.jupyterapp.shell.currentWidget"
KERNEL_IDLE = (f"() => {{ const p = {PANEL}; return p && p.sessionContext && p.sessionContext.session"
               " && p.sessionContext.session.kernel && p.sessionContext.session.kernel.status === 'idle'"
               " && p.context.isReady; }")
# '' while cells run; 'done' when every code cell ran; 'error: …' at the first error output.
RUN_STATE = f"""() => {{
  const panel = {PANEL}; let pending = false;
  for (const cell of panel.content.widgets) {{
    if (cell.model.type !== 'code') continue;
    for (const out of cell.model.outputs.toJSON()) {{
      if (out.output_type === 'error') return 'error: ' + out.ename + ': ' + out.evalue;
    }}
    const prompt = cell.node.querySelector('.jp-InputPrompt');
    if (cell.model.executionCount === null || (prompt && prompt.textContent.includes('*'))) pending = true;
  }}
  return (!pending && panel.sessionContext.session.kernel.status === 'idle') ? 'done' : '';
}}"""
IMAGES = f"""() => Array.from({PANEL}.node.querySelectorAll('.jp-OutputArea-output img')).map(
  img => ({{complete: img.complete, width: img.naturalWidth, src: img.src.slice(0, 60), alt: img.alt}}))"""
# Visible text that does not fit its box (ellipsis or clipped): labels, buttons, slider readouts.
CUT_TEXT = f"""() => Array.from({PANEL}.node.querySelectorAll(
    '.jp-OutputArea-output .widget-label, .jp-OutputArea-output button, .jp-OutputArea-output .widget-readout'))
  .filter(el => el.offsetParent !== null && el.textContent.trim() && el.scrollWidth > el.clientWidth + 1)
  .map(el => el.textContent.trim())"""
# Printed output (stream text) that JupyterLab would wrap mid-word ("adapt|er/"), after nbtools' tables are shown.
PRINTED_BREAK_ALL = f"""() => Array.from({PANEL}.node.querySelectorAll('.jp-OutputArea-output pre'))
  .filter(el => el.offsetParent !== null && getComputedStyle(el).wordBreak === 'break-all')
  .map(el => el.textContent.trim().slice(0, 60))"""
# Every input of a form built from config fields (the run config form, or any other built on
# nbtools.widgets.fields), and the config form's own inputs.
FORM_INPUTS = f"""() => Array.from({PANEL}.node.querySelectorAll(
    '.nbtools-config-form input, .nbtools-config-form select, .nbtools-config-form textarea,'
    + ' .nbtools-field input, .nbtools-field select, .nbtools-field textarea')).map(el => {{
  const row = el.closest('.nbtools-field');
  const field = row ? Array.from(row.classList).find(c => c.startsWith('nbtools-field-')) : null;
  const hovered = el.closest('[title]');  // what the browser shows on hover: the nearest title
  return {{field: field ? field.slice('nbtools-field-'.length) : null, title: hovered ? hovered.title : '',
           kind: el.tagName.toLowerCase() + (el.type ? ':' + el.type : '')}};
}})"""


def open_notebook(page, lab, name: str, first: bool) -> None:
    if first:
        page.goto(f"{lab['base']}/lab/tree/notebooks/{name}?token={lab['token']}", wait_until="domcontentloaded",
                  timeout=90_000)
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=90_000)
    else:
        page.evaluate("async (path) => { await window.jupyterapp.commands.execute('docmanager:open', {path}); return true; }",
                      f"notebooks/{name}")
    page.wait_for_function(f"(name) => {PANEL} && {PANEL}.context && {PANEL}.context.path.endsWith(name)", arg=name,
                           timeout=60_000)
    page.wait_for_function(KERNEL_IDLE, timeout=120_000)


def run_all(page, name: str, timeout_s: float) -> None:
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }")
    page.wait_for_timeout(500)  # the cells are queued: their prompts show '*'
    state = page.wait_for_function(RUN_STATE, timeout=timeout_s * 1000, polling=500).json_value()
    assert state == "done", f"{name}: {state}"


def wait_for_images(page) -> list[dict]:
    page.wait_for_function(f"() => Array.from({PANEL}.node.querySelectorAll('.jp-OutputArea-output img'))"
                           ".every(img => img.complete)", timeout=30_000)
    return page.evaluate(IMAGES)


def screenshot(page, name: str, label: str = "") -> Path:
    """The whole notebook: the viewport grows to the notebook's height for the picture (``label``: a later pass)."""
    scroller = f"({PANEL}.content.node.querySelector('.jp-WindowedPanel-outer') || {PANEL}.content.node)"
    height = page.evaluate(f"() => {scroller}.scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height + 200, VIEWPORT["height"]), 16000)})
    page.wait_for_timeout(500)
    page.evaluate(f"() => {{ {scroller}.scrollTop = 0; }}")
    page.wait_for_timeout(200)
    path = ARTIFACTS / f"browser-{Path(name).stem}{label}.png"
    page.screenshot(path=str(path))
    page.set_viewport_size(VIEWPORT)
    return path


def check_configure_form(page) -> None:
    """02's form: help on every input, live estimate, red outline and advice, Save feedback."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from nbtools.config import RunConfig

    help_of = {f.name: f.metadata["help"] for f in dataclasses.fields(RunConfig)}
    form = page.locator(".nbtools-config-form")
    form.wait_for(state="attached", timeout=60_000)
    # ipywidgets attaches the form's outer box first and renders its ~60 child views one promise at a
    # time: on a slow machine (CI once saw 13 of 54 fields) some are on the page while others are coming.
    try:
        page.wait_for_function(
            f"(n) => new Set(({FORM_INPUTS})().map(i => i.field).filter(f => f)).size >= n", arg=len(help_of),
            timeout=60_000)
    except PlaywrightTimeout:
        pass  # the assertion below names the fields that never appeared
    inputs = page.evaluate(FORM_INPUTS)
    fields = [i for i in inputs if i["field"]]
    assert {i["field"] for i in fields} == set(help_of)  # every field rendered
    missing = [i for i in inputs if not i["title"]]
    assert missing == [], f"inputs without help on hover: {missing}"
    wrong = [i["field"] for i in fields if not i["title"].startswith(help_of[i["field"]])]
    assert wrong == [], f"inputs whose hover text is not their field's help: {wrong}"

    page.wait_for_function(
        "() => { const e = document.querySelector('.nbtools-estimate');"
        " return e && e.innerText.trim().length > 0 && !e.innerText.includes('fix the fields'); }", timeout=120_000)
    estimate = page.locator(".nbtools-estimate")
    before = estimate.inner_text()
    assert "Estimate unavailable" not in before
    batch_size = page.locator(".nbtools-field-batch_size input")
    assert batch_size.input_value() == "2"  # the shortened parameter reached the form
    batch_size.fill("8")
    batch_size.press("Enter")
    page.wait_for_function(
        "(before) => { const e = document.querySelector('.nbtools-estimate');"
        " return e && e.innerText !== before && !e.innerText.includes('fix the fields'); }", arg=before,
        timeout=60_000)
    after = estimate.inner_text()

    learning_rate = page.locator(".nbtools-field-learning_rate input")
    learning_rate.fill("1e-12")  # below the minimum: advice, a red box, Save disabled
    learning_rate.press("Enter")
    error = page.locator(".nbtools-field-error", has_text="below the minimum 1e-9")
    error.wait_for(state="visible", timeout=30_000)
    assert "most runs use learning_rate 1e-6 to 1e-4 with LoRA" in error.inner_text()
    page.locator(".nbtools-config-form").screenshot(path=str(ARTIFACTS / "browser-02_configure-invalid.png"))
    outline = learning_rate.evaluate("el => getComputedStyle(el).outlineColor + ' ' + getComputedStyle(el).outlineStyle")
    assert outline == "rgb(198, 40, 40) solid", outline
    assert page.locator("button.nbtools-save").is_disabled()
    learning_rate.fill("0.0005")
    learning_rate.press("Enter")
    error.wait_for(state="hidden", timeout=30_000)
    page.wait_for_function("(after) => document.querySelector('.nbtools-estimate').innerText === after", arg=after,
                           timeout=60_000)
    status = page.locator(".nbtools-save-status")
    page.locator("button.nbtools-save").click()
    status.filter(has_text="Saved to").wait_for(timeout=30_000)
    first = status.inner_text()
    page.locator("button.nbtools-save").click()  # a second click is seen: the message changes
    page.wait_for_function("(first) => document.querySelector('.nbtools-save-status').innerText !== first",
                           arg=first, timeout=30_000)
    assert re.search(r"saved \d+ times", status.inner_text())


def check_empty_model_refused(page) -> None:
    """02's form, second pass: an empty model name is marked like learning_rate 5 (red box, advice, Save disabled),
    the estimate shows no raw transformers message; the "?" shows a field's help on click."""
    model = page.locator(".nbtools-field-model input")
    before = model.input_value()
    model.fill("")
    model.press("Enter")
    error = page.locator(".nbtools-field-error", has_text="name the base model")
    error.wait_for(state="visible", timeout=30_000)
    assert "is empty" in error.inner_text()
    outline = model.evaluate("el => getComputedStyle(el).outlineColor + ' ' + getComputedStyle(el).outlineStyle")
    assert outline == "rgb(198, 40, 40) solid", outline
    assert page.locator("button.nbtools-save").is_disabled()
    estimate = page.locator(".nbtools-estimate").inner_text()
    assert "fix the fields" in estimate and "Unrecognized" not in estimate
    page.locator(".nbtools-config-form").screenshot(path=str(ARTIFACTS / "browser-02_configure-empty-model.png"))
    model.fill(before)
    model.press("Enter")
    error.wait_for(state="hidden", timeout=30_000)
    page.wait_for_function("() => !document.querySelector('button.nbtools-save').disabled", timeout=60_000)

    help_note = page.locator(".nbtools-field-help", has_text="Peak learning rate of the LoRA weights")  # in Basic
    assert not help_note.is_visible()
    page.locator(".nbtools-field-learning_rate button.nbtools-help").click()
    help_note.wait_for(state="visible", timeout=30_000)


def check_model_lab(page) -> None:
    """04's lab: Generate answers from both models, legibly (dark text, not the faint grey of a disabled box)."""
    lab = page.locator(".nbtools-lab")
    lab.locator("button", has_text="Generate (base and tuned)").click()
    lab.locator(".widget-html", has_text="done (seed").wait_for(timeout=120_000)
    answers = page.locator(".nbtools-answer textarea")
    assert answers.count() == 2
    for i in range(2):
        assert answers.nth(i).input_value().strip(), "an empty answer"
        colour, opacity = answers.nth(i).evaluate("el => [getComputedStyle(el).color,"
                                                   " getComputedStyle(el).opacity]")
        channels = [int(c) for c in re.findall(r"\d+", colour)[:3]]
        assert max(channels) < 90 and float(opacity) == 1.0, (colour, opacity)


# --- the second pass: what a user does next (edit 02, train again, share the export) ---------------------

def close_notebook(page) -> None:
    """Shut the open notebook's kernel down (memory) and close its tab without saving."""
    page.evaluate(f"async () => {{ const p = {PANEL}; await p.sessionContext.shutdown();"
                  " p.context.model.dirty = false; p.dispose(); return true; }")


def edit_learning_rate_in_02(page, lab, value: str) -> None:
    """02 again: Run All, a new learning_rate typed into the form, Save clicked; the saved YAML has it."""
    from nbtools.config import RunConfig

    open_notebook(page, lab, "02_configure.ipynb", first=False)
    run_all(page, "02_configure.ipynb (second pass)", timeout_s=300)
    learning_rate = page.locator(".nbtools-field-learning_rate input")
    learning_rate.fill(value)
    learning_rate.press("Enter")
    saved_yaml = lab["project"] / "runs" / "notebooks" / "config.yaml"
    page.locator("button.nbtools-save").click()
    # The page may still be showing Run All's own save (cell 4) when the click's arrives: read the file it writes.
    deadline = time.time() + 60
    while RunConfig.from_yaml(saved_yaml).learning_rate != float(value):
        assert time.time() < deadline, ("Save did not write the edited learning_rate; the form says: "
                                        + page.locator(".nbtools-save-status").inner_text())
        page.wait_for_timeout(500)
    close_notebook(page)


def train_again_in_03(page, lab) -> Path:
    """03 again after 02 changed: a new run in a new folder, no error, the first run kept as it was."""
    runs = lab["project"] / "runs" / "notebooks"
    before = {p.parent: json.loads(p.read_text()) for p in runs.glob("*/run.json")}
    open_notebook(page, lab, "03_train.ipynb", first=False)
    run_all(page, "03_train.ipynb (second pass)", timeout_s=300)  # no error output: not a dead end
    wait_for_images(page)
    screenshot(page, "03_train.ipynb", "-second-run")
    close_notebook(page)
    after = sorted(q.parent for q in runs.glob("*/run.json"))
    new = [p for p in after if p not in before]
    assert len(new) == 1 and len(after) == len(before) + 1, after
    assert json.loads((new[0] / "run.json").read_text())["status"] == "finished"
    for folder, record in before.items():  # the earlier runs are untouched
        assert json.loads((folder / "run.json").read_text()) == record
    return new[0]


def check_card_is_shareable(card_path: Path, project: Path) -> None:
    """The export's card (meant for the Hub) names files, never a path of this machine or its user."""
    import getpass

    card = card_path.read_text()
    absolute = re.findall(r"(?<![\w.:/~<-])~?/[\w.-]+/\S*", card)
    assert absolute == [], f"absolute paths in {card_path}: {absolute[:5]}"
    assert str(project) not in card and str(Path.home()) not in card
    user = getpass.getuser()
    assert not re.search(rf"\b{re.escape(user)}\b", card), f"the user name {user!r} is in {card_path}"


def test_every_notebook_runs_in_the_browser_as_a_user_sees_it(lab, tmp_path):
    executable = lab["chromium"]
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("browser-*.png"):
        old.unlink()
    assert [p.name for p in NOTEBOOKS][:4] == ["01_inspect_data.ipynb", "02_configure.ipynb", "03_train.ipynb",
                                               "04_evaluate.ipynb"] or NOTEBOOKS[0].name.startswith("00_")
    timings, image_counts = {}, {}
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"), executable_path=executable, headless=True,
            args=CHROMIUM_FLAGS, viewport=VIEWPORT,
        )
        page = browser.pages[0] if browser.pages else browser.new_page()
        name = NOTEBOOKS[0].name
        try:
            for i, path in enumerate(NOTEBOOKS):
                name, started = path.name, time.time()
                open_notebook(page, lab, name, first=i == 0)
                page.wait_for_timeout(1000)  # JupyterLab writes the kernel's metadata into the model now
                assert page.evaluate(f"() => {PANEL}.context.model.dirty") is False, (
                    f"{name} is marked modified as soon as its kernel started: commit the metadata JupyterLab adds")
                run_all(page, name, timeout_s=300)
                missing_help = [i for i in page.evaluate(FORM_INPUTS) if not i["title"]]
                assert missing_help == [], f"{name}: form inputs without help on hover: {missing_help}"
                if page.locator(".nbtools-config-form").count():
                    check_configure_form(page)
                    check_empty_model_refused(page)
                if page.locator(".nbtools-answer").count():
                    check_model_lab(page)
                images = wait_for_images(page)
                broken = [img for img in images if img["width"] == 0]
                assert broken == [], f"{name}: broken images {broken}"
                image_counts[name] = len(images)
                cut = page.evaluate(CUT_TEXT)
                assert cut == [], f"{name}: text cut off: {cut}"
                broken_words = page.evaluate(PRINTED_BREAK_ALL)
                assert broken_words == [], f"{name}: printed lines that break mid-word: {broken_words}"
                screenshot(page, name)
                # Shut its kernel down (memory) and close the tab without saving, so the next notebook's
                # checks see only that notebook's outputs.
                close_notebook(page)
                timings[name] = round(time.time() - started, 1)
            name, started = "second-pass", time.time()
            edit_learning_rate_in_02(page, lab, "0.001")
            second_run = train_again_in_03(page, lab)
            timings["second pass (02, 03)"] = round(time.time() - started, 1)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"browser-{Path(name).stem}-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    print("seconds per notebook:", timings, "images per notebook:", image_counts)
    # statistics + gallery; live figure; plots, card, side by side, lab, run curves: all of them loaded
    assert all(image_counts[n] > 0 for n in ("01_inspect_data.ipynb", "03_train.ipynb", "04_evaluate.ipynb"))
    project = lab["project"]
    assert (project / "runs" / "notebooks" / "config.yaml").is_file()  # 02's save cell ran in the page's kernel
    first_run = min((p.parent for p in (project / "runs" / "notebooks").glob("*/run.json")), key=lambda p: p.name)
    record = json.loads((first_run / "run.json").read_text())
    assert record["status"] == "finished"
    steps = [json.loads(line).get("step") for line in (first_run / "metrics.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == SHORT_PARAMETERS["max_steps"]
    # the second pass: 03 run again after 02's learning_rate was edited made a new run with the new value
    assert second_run != first_run and json.loads((second_run / "run.json").read_text())["config"]["learning_rate"] \
        == 0.001
    check_card_is_shareable(first_run / "export" / "merged" / "README.md", project)  # 04's export of the first run


def test_parameters_are_shortened_by_name_and_keep_their_comments():
    notebook = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": [
        "# Parameters\n", "max_steps: int = 48  # optimizer steps\n", 'model: str = "x"  # base model\n',
        'output_dir: "Optional[str]" = None  # the run folder']}]}
    shortened = shorten_parameters(notebook, {"max_steps": 4, "output_dir": "runs/a", "not_there": 1})
    assert shortened["cells"][0]["source"] == (
        "# Parameters\nmax_steps: int = 4  # optimizer steps\nmodel: str = \"x\"  # base model\n"
        "output_dir: \"Optional[str]\" = 'runs/a'  # the run folder")
    assert parameter_names(shortened) == {"max_steps", "model", "output_dir"}


def test_every_notebook_has_parameters_the_browser_test_shortens():
    """A notebook that trains or generates must take the short values, or the browser test would run it long."""
    for path in NOTEBOOKS:
        names = parameter_names(json.loads(path.read_text()))
        assert names, f"{path.name} has no parameters cell"
        if path.name.startswith(("02_", "03_")):
            assert "max_steps" in names
        if path.name.startswith("04_"):
            assert {"lab_samples", "max_new_tokens"} <= names


def test_missing_chromium_skips_with_the_install_scripts_reason(monkeypatch, tmp_path):
    this = sys.modules[__name__]
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setattr(this.os, "access", lambda path, mode: False)
    monkeypatch.setattr(this.shutil, "which", lambda name: None)
    monkeypatch.setattr(this, "ARTIFACTS", tmp_path)
    (tmp_path / "browser-install.txt").write_text("chromium is missing and installing it needs root\n")
    with pytest.raises(pytest.skip.Exception) as info:
        chromium_path()
    assert str(info.value.msg) == ("no chromium: chromium is missing and installing it needs root "
                                   "(scripts/install_browser.sh installs Debian's chromium with apt-get)")
