"""Export: swapped in only when complete, and every name in the model card is data, not markup or shell.

The hostile names below try everything a name can do to a README: raw HTML, links and images,
emphasis, table pipes, math, backticks that close a code span, and quotes, ``;``, ``$(...)`` and
backticks that would run a command when the printed ``vllm serve``/``curl`` line is pasted.
"""

from __future__ import annotations

import ast
import errno
import html
import json
import re
import shlex
import shutil
import subprocess

import pytest
from markdown_it import MarkdownIt

from disk_full import disk_full, snapshot
from nbtools import markdown as md
from nbtools.__main__ import main
from nbtools.config import RunConfig
from nbtools.atomic import TEMP_MARK
from nbtools.export import CURL_IMAGE, ExportFolderError, save_adapter, staged_export

pytestmark = pytest.mark.slow

HOSTILE = ("x'; touch PWNED_QUOTE; echo '$(touch PWNED_SUBST) `touch PWNED_TICK` \"dq\" <script>alert(1)</script> "
           "[click](javascript:alert(1)) ![i](http://tracker.invalid/x.png) **b** | pipe $\\frac{a}{ ``code`` #")
TASK = "task <b>bold</b> `tick` [link](http://x.invalid) $x^2$ | & &amp; \\"
FOLDER = "dir with 'quotes' \"double\" $(touch PWNED_DIR) and `ticks`"


def render(card: str) -> str:
    """The card as a CommonMark + GFM-tables renderer shows it (raw HTML allowed, as on the hub)."""
    body = card.split("---\n", 2)[2]  # without the YAML front matter
    return MarkdownIt("commonmark").enable("table").render(body)


def code_blocks(card: str, language: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"(`{3,})" + language + r"\n(.*?)\n\1\n", card, re.S)]


@pytest.fixture(scope="module")
def hostile_run(eval_run_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("hostile") / "runs" / FOLDER
    shutil.copytree(eval_run_dir, run_dir, ignore=shutil.ignore_patterns("export", "lab", "evaluation*"))
    config = RunConfig.from_yaml(run_dir / "config.yaml").replace(custom_model_name=HOSTILE, task_display_name=TASK)
    config.to_yaml(run_dir / "config.yaml")
    record = json.loads((run_dir / "run.json").read_text())
    record.update(task_display_name=TASK, custom_model_name=HOSTILE)
    (run_dir / "run.json").write_text(json.dumps(record))
    shutil.copy2(next((run_dir / "plots").glob("*.png")), run_dir / "plots" / "my plot (1) [x].png")
    return run_dir


@pytest.fixture(scope="module")
def hostile_card(hostile_run, tmp_path_factory):
    out = save_adapter(hostile_run, tmp_path_factory.mktemp("out") / "exports" / FOLDER)  # named by its folder
    return out, (out / "README.md").read_text()


def run_in_bash(command: str, folder, stubs: str) -> list[str]:
    """Run ``command`` with its program replaced by a function that prints its argv as JSON."""
    script = stubs + "\n" + command
    done = subprocess.run(["bash", "-c", script], cwd=folder, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert not list(folder.glob("PWNED*")), "a name ran a shell command"
    return json.loads(done.stdout)


ARGV_STUB = "{0}() {{ python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"; }}"


def test_card_shows_hostile_names_as_literal_text(hostile_card, hostile_run):
    _, card = hostile_card
    page = render(card)
    assert "<script" not in page and "<b>" not in page
    assert "javascript:" not in " ".join(re.findall(r'href="([^"]*)"', page))
    assert "tracker.invalid" not in " ".join(re.findall(r'<img src="([^"]*)"', page))
    assert "<strong>" not in page and "<em>" not in page
    heading = re.search(r"<h1>(.*?)</h1>", page, re.S).group(1)
    assert html.unescape(heading) == HOSTILE  # exactly the name, as text
    codes = [html.unescape(c) for c in re.findall(r"<code>(.*?)</code>", page, re.S)]
    assert TASK in codes  # the run's name, verbatim in a code span
    assert f"python -m nbtools evaluate {shlex.quote(hostile_run.name)}" in codes  # not evaluated yet
    assert '<img src="plots/my%20plot%20%281%29%20%5Bx%5D.png" alt="my plot (1) [x]"' in page


def test_printed_commands_run_exactly_their_arguments(hostile_card, hostile_run, tmp_path):
    out, card = hostile_card
    serve = next(line for block in code_blocks(card, "bash") for line in block.splitlines()
                 if line.startswith("vllm serve"))
    base = RunConfig.from_yaml(hostile_run / "config.yaml").model
    expected = [base, "--enable-lora", "--max-lora-rank", "8", "--lora-modules", f"{HOSTILE}={out.name}",
                "--max-model-len", "4096", "--mm-processor-kwargs", '{"max_pixels": 16384}']
    assert shlex.split(serve) == ["vllm", "serve", *expected]
    assert run_in_bash(serve, tmp_path, ARGV_STUB.format("vllm")) == ["serve", *expected]
    ours = next(line for block in code_blocks(card, "bash") for line in block.splitlines()
                if line.startswith("python -m nbtools serve"))
    expected = ["-m", "nbtools", "serve", out.name, "--port", "8000"]
    assert run_in_bash(ours, tmp_path, ARGV_STUB.format("python")) == expected

    curl = next(block for block in code_blocks(card, "bash") if block.startswith("curl "))
    argv = shlex.split(curl)
    body = json.loads(argv[argv.index("-d") + 1].replace(CURL_IMAGE, "AAAA"))
    assert body["model"] == HOSTILE
    ran = run_in_bash(curl, tmp_path, ARGV_STUB.format("curl") + "\nbase64() { printf AAAA; }")
    assert json.loads(ran[ran.index("-d") + 1])["messages"][0]["content"][0]["image_url"]["url"] == \
        "data:image/png;base64,AAAA"  # the picture is the one expansion the command makes


def test_card_python_snippets_hold_the_path_as_a_string(hostile_card):
    out, card = hostile_card
    literals = set()
    for block in code_blocks(card, "python"):
        literals |= {node.value for node in ast.walk(ast.parse(block)) if isinstance(node, ast.Constant)}
    assert out.name == FOLDER and FOLDER in literals


def test_evaluation_section_escapes_its_data_path_and_warnings(hostile_run, tmp_path):
    side = {m: 0.5 for m in ("preference_accuracy", "preference_accuracy_normalized", "reward_accuracy",
                             "logprob_margin", "reward_margin", "chosen_logprob", "rejected_logprob")}
    side["ci95"] = {m: [0.4, 0.6] for m in side}
    payload = {"base": side, "tuned": side, "difference": {}, "n_pairs": 3, "confidence": 0.95,
               "data": TASK, "warnings": [HOSTILE]}
    run_dir = tmp_path / "run"
    shutil.copytree(hostile_run, run_dir)
    (run_dir / "evaluation.json").write_text(json.dumps(payload))
    card = (save_adapter(run_dir, tmp_path / "out") / "README.md").read_text()
    page = render(card)
    assert "<script" not in page
    quote = re.search(r"<blockquote>\s*<p><strong>Warning:</strong> (.*?)</p>", page, re.S).group(1)
    assert html.unescape(quote) == HOSTILE
    assert TASK in [html.unescape(c) for c in re.findall(r"<code>(.*?)</code>", page, re.S)]


@pytest.mark.parametrize("value", ["a `b` c", "``x", "x`", " padded ", "a|b", "line\nbreak\n\n# heading",
                                   "```", "<i>x</i> & [y](z)"])
def test_markdown_helpers_render_the_literal_text(value):
    literal = md.one_line(value)
    render_md = MarkdownIt("commonmark").enable("table").render
    # (a paragraph drops leading and trailing spaces; a code span keeps them)
    assert html.unescape(re.search(r"<p>(.*)</p>", render_md(md.text(value)), re.S).group(1)) == literal.strip()
    assert html.unescape(re.search(r"<code>(.*)</code>", render_md(md.code(value)), re.S).group(1)) == literal
    table = render_md(f"| a | b |\n|---|---|\n| {md.code(value, in_table=True)} | {md.text(value)} |\n")
    cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", table, re.S)]
    assert cells == [f"<code>{literal}</code>", literal.strip()]
    block = render_md("before\n\n" + md.fenced(value + "\n```\nafter", "text") + "\nend\n")
    assert html.unescape(re.search(r"<pre><code[^>]*>(.*?)</code></pre>", block, re.S).group(1)) == \
        value + "\n```\nafter\n"


# --- the export swap ---------------------------------------------------------------------------------

@pytest.mark.parametrize("names, after_bytes", [((), 500), (("README.md",), 100)], ids=["processor", "card"])
def test_a_failed_export_keeps_the_previous_one(eval_run_dir, tmp_path, names, after_bytes):
    out = tmp_path / "exports" / "adapter"
    save_adapter(eval_run_dir, out)
    before = snapshot(out)
    record_before = json.loads((eval_run_dir / "run.json").read_text())["export_path"]
    with disk_full(tmp_path / "exports", after_bytes=after_bytes, names=names) as opened:
        with pytest.raises(OSError) as info:
            save_adapter(eval_run_dir, out)
    assert opened and info.value.errno == errno.ENOSPC
    assert snapshot(out) == before  # the old export, byte for byte
    assert [p.name for p in (tmp_path / "exports").iterdir()] == ["adapter"]  # no temporary folder left
    assert json.loads((eval_run_dir / "run.json").read_text())["export_path"] == record_before
    assert save_adapter(eval_run_dir, out) == out  # the next export is not refused
    assert (out / "README.md").read_text().startswith("---\n")


def test_export_after_a_killed_export_cleans_up_and_restores(eval_run_dir, tmp_path):
    """kill -9 mid-export leaves a staging folder (and at worst the previous export moved aside)."""
    out = tmp_path / "adapter"
    save_adapter(eval_run_dir, out)
    before = snapshot(out)
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = finished.pid  # a process that has exited
    staging = tmp_path / f".adapter{TEMP_MARK}{dead}-0a1b2c3d"  # the names nbtools.atomic gives
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"half")
    out.rename(tmp_path / f".adapter.old{TEMP_MARK}{dead}-4e5f6a7b")

    with pytest.raises(RuntimeError):
        with staged_export(out):  # finds the leftovers first: the previous export is put back
            assert snapshot(out) == before
            raise RuntimeError("stop before the swap")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_export_refuses_a_file_or_a_link_as_out(eval_run_dir, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("mine")
    with pytest.raises(ExportFolderError, match="is not a folder"):
        save_adapter(eval_run_dir, target)
    link = tmp_path / "link"
    (tmp_path / "real").mkdir()
    link.symlink_to(tmp_path / "real")
    assert main(["export", str(eval_run_dir), "--out", str(link)]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert target.read_text() == "mine" and link.is_symlink() and not any((tmp_path / "real").iterdir())
