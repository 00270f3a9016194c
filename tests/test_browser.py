"""A real browser: JupyterLab on loopback, 02_configure.ipynb in headless Chromium via Playwright.

Checks what no Python-side test can: the widget manager renders the form (no JupyterLab-only
extension of ours involved, so Colab's renders it too), and a value typed into the page
reaches the kernel and comes back as a new estimate. A screenshot is kept in test-artifacts/.
Skipped, with the reason, only where chromium cannot be installed (scripts/install_browser.sh).
"""

from __future__ import annotations

import os
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


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a scratch project (the notebook + the sample data), so nothing lands in the repo."""
    executable = chromium_path()  # skips, with the reason, before anything starts
    from nbtools.models import resolve_model_path

    # The notebook's default model; built once into the shared cache (minutes) if no test did it yet,
    # so the page waits for the estimate, not for a model build.
    resolve_model_path("tiny-qwen3-vl-warm")
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "02_configure.ipynb", project / "notebooks")
    (project / "data_samples").symlink_to(REPO / "data_samples")
    port, token = free_port(), secrets.token_hex(16)
    # no "get notified about Jupyter news?" toast over the screenshot
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
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
        yield {"base": base, "token": token, "project": project, "chromium": executable}
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


def test_configure_notebook_renders_the_form_and_updates_the_estimate(lab, tmp_path):
    executable = lab["chromium"]
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"), executable_path=executable, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 1600},
        )
        page = browser.pages[0] if browser.pages else browser.new_page()
        try:
            page.goto(f"{lab['base']}/lab/tree/notebooks/02_configure.ipynb?token={lab['token']}",
                      wait_until="domcontentloaded", timeout=90_000)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel",
                                   timeout=90_000)
            page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext"
                                   ".session.kernel.status === 'idle'", timeout=90_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            form = page.locator(".nbtools-config-form")
            form.wait_for(state="visible", timeout=180_000)
            estimate = page.locator(".nbtools-estimate")
            page.wait_for_function(
                "() => { const e = document.querySelector('.nbtools-estimate');"
                " return e && e.innerText.trim().length > 0 && !e.innerText.includes('fix the fields'); }",
                timeout=180_000)
            before = estimate.inner_text()

            for name in ("model", "custom_model_name", "task_display_name", "epoch", "batch_size",
                         "learning_rate", "lora_rank"):
                assert page.locator(f".nbtools-field-{name}").is_visible(), name
            batch_size = page.locator(".nbtools-field-batch_size input")
            assert batch_size.input_value() == "4"  # the notebook's default
            tooltip = page.locator(".nbtools-field-batch_size label").get_attribute("title")  # hover text
            assert tooltip.startswith("Pairs per device per step")

            batch_size.fill("8")
            batch_size.press("Enter")
            page.wait_for_function(
                "(before) => { const e = document.querySelector('.nbtools-estimate');"
                " return e && e.innerText !== before && !e.innerText.includes('fix the fields'); }",
                arg=before, timeout=60_000)
            after = estimate.inner_text()
            assert after != before

            batch_size.fill("0")  # below the field's minimum: shown inline, Save disabled
            batch_size.press("Enter")
            error = page.locator(".nbtools-field-error", has_text="below the minimum 1")
            error.wait_for(state="visible", timeout=30_000)
            assert page.locator(".nbtools-save button, button.nbtools-save").first.is_disabled()
            batch_size.fill("8")
            batch_size.press("Enter")
            error.wait_for(state="hidden", timeout=30_000)
            page.wait_for_function(
                "(after) => document.querySelector('.nbtools-estimate').innerText === after", arg=after,
                timeout=60_000)
            page.locator(".nbtools-save").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "browser-02_configure.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-02_configure-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    saved = lab["project"] / "runs" / "notebooks" / "config.yaml"
    assert saved.is_file()  # the notebook's save cell ran in the kernel the page drove


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
