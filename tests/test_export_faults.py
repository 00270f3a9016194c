"""Nothing lost, nothing false: an export is whole or refused, and never deletes a file it did not write.

A run with a missing or damaged file (adapter weights, adapter config, processor, run.json) is refused by
``export``, ``export --merged`` and ``evaluate`` alike, before anything is loaded or written, with the file
named and the fix (exit 2). A re-export refuses a folder holding anything the previous export did not
write, leaving every byte as it was. An internal error on a run folder leaves its details in that folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from disk_full import snapshot
from nbtools.__main__ import main
from nbtools.evaluate import RunFolderError, evaluate_run
from nbtools.export import EXPORT_INFO_FILE, ExportFolderError, export_merged, save_adapter, staged_export

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
FIX_ADAPTER = "fix: resume an unfinished run with `python -m nbtools train"


def copy_run(eval_run_dir, target: Path) -> Path:
    """The parts of the shared run an export reads (a few hundred kB), so a test may damage its copy."""
    target.mkdir(parents=True)
    for name in ("config.yaml", "run.json"):
        shutil.copy2(eval_run_dir / name, target / name)
    for name in ("adapter", "processor", "plots"):
        shutil.copytree(eval_run_dir / name, target / name)
    return target


@pytest.fixture
def run_copy(eval_run_dir, tmp_path) -> Path:
    return copy_run(eval_run_dir, tmp_path / "run")


@pytest.fixture
def no_model_loading(monkeypatch):
    """A refusal must come before minutes of loading: loading the model fails the test."""
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the run folder was checked")

    monkeypatch.setattr("nbtools.export.load_run_model", load)
    monkeypatch.setattr("nbtools.evaluate.pipeline.load_run_model", load)


def tree(folder: Path) -> tuple[dict, list]:
    """Every file's bytes and every entry (folders and links included) below ``folder``."""
    return snapshot(folder), sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGES = {  # name: (damage done to the run copy, the file named, what the message says about it)
    "weights_missing": (lambda run: (run / "adapter/adapter_model.safetensors").unlink(),
                        "adapter/adapter_model.safetensors", "is missing"),
    "weights_empty": (lambda run: (run / "adapter/adapter_model.safetensors").write_bytes(b""),
                      "adapter/adapter_model.safetensors", "is empty"),
    "weights_truncated": (lambda run: truncate(run / "adapter/adapter_model.safetensors"),
                          "adapter/adapter_model.safetensors", "is damaged (Error while deserializing header"),
    "config_not_json": (lambda run: truncate(run / "adapter/adapter_config.json"),
                        "adapter/adapter_config.json", "is not valid JSON"),
    "config_not_object": (lambda run: (run / "adapter/adapter_config.json").write_text("[]"),
                          "adapter/adapter_config.json", "is not a JSON object"),
    "processor_damaged": (lambda run: truncate(run / "processor/processor_config.json"),
                          "processor/processor_config.json", "is not valid JSON"),
    "processor_config_missing": (lambda run: (run / "processor/processor_config.json").unlink(),
                                 "processor/processor_config.json", "is missing"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_run_is_refused_by_every_export_and_evaluate(run_copy, tmp_path, damage, no_model_loading):
    spoil, name, problem = DAMAGES[damage]
    spoil(run_copy)
    before = tree(run_copy)
    expected = f"{run_copy / name}: {problem}"
    for export in (save_adapter, export_merged):
        with pytest.raises(RunFolderError) as info:
            export(run_copy, tmp_path / "out")
        assert str(info.value).startswith(expected) and "(fix: " in str(info.value)
    with pytest.raises(RunFolderError) as info:
        evaluate_run(run_copy, progress=False)
    assert str(info.value).startswith(expected)
    if name.startswith("adapter/"):
        assert FIX_ADAPTER in str(info.value) and "re-run training" in str(info.value)
    else:
        assert "(fix: restore the processor folder from a backup, or re-run training)" in str(info.value)
    assert not (tmp_path / "out").exists() and tree(run_copy) == before  # nothing written anywhere


def test_cli_refuses_a_run_without_adapter_weights_with_exit_2(run_copy, tmp_path, capsys, no_model_loading):
    (run_copy / "adapter/adapter_model.safetensors").unlink()
    weights = run_copy / "adapter" / "adapter_model.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "NBTOOLS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "nbtools", "export", str(run_copy), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {weights}: is missing, so the trained adapter cannot be used ({FIX_ADAPTER}")
    assert len(done.stderr.strip().splitlines()) == 1 and not done.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    for argv in (["export", str(run_copy), "--merged", "--out", str(tmp_path / "merged")], ["evaluate", str(run_copy)]):
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith(f"error: {weights}: is missing")
    assert not (tmp_path / "merged").exists() and not (run_copy / "evaluation.json").exists()


@pytest.mark.parametrize("content", [None, "{\"status\": \"finished\", ", "[]"], ids=["missing", "cut", "list"])
def test_an_unreadable_run_json_is_refused(run_copy, tmp_path, content, no_model_loading):
    record = run_copy / "run.json"
    if content is None:
        record.unlink()
    else:
        record.write_text(content)
    before = tree(run_copy)
    problem = {None: "missing", "[]": "is not a JSON object"}.get(content, "is not valid JSON")
    calls = (lambda: save_adapter(run_copy, tmp_path / "out"), lambda: export_merged(run_copy, tmp_path / "out"),
             lambda: evaluate_run(run_copy, progress=False))
    for call in calls:
        with pytest.raises(RunFolderError) as info:
            call()
        assert str(info.value).startswith(f"{record}: {problem}")
        assert "(fix: restore it from a backup or from the machine the run trained on" in str(info.value)
    assert not (tmp_path / "out").exists() and tree(run_copy) == before


def test_internal_errors_on_a_run_folder_are_logged_in_it(run_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NBTOOLS_CACHE_DIR", str(tmp_path / "cache"))

    def broken(*args, **kwargs):
        raise RuntimeError("a bug deep inside")

    monkeypatch.setattr("nbtools.export.save_adapter", broken)
    monkeypatch.setattr("nbtools.evaluate.evaluate_run", broken)
    log = run_copy / "error.log"
    for argv in (["export", str(run_copy), "--out", str(tmp_path / "out")], ["evaluate", str(run_copy)]):
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "internal error: RuntimeError: a bug deep inside" in err
        assert f"(details: {log}; please report this with that file)" in err
    assert log.read_text().count("RuntimeError: a bug deep inside") == 2  # both tracebacks, appended
    assert not (tmp_path / "cache").exists()  # nothing in the global error folder


# --- a re-export replaces only what it wrote ----------------------------------------------------------------

def user_file(out: Path) -> None:
    (out / "MY_NOTES.txt").write_text("mine")


def user_folder(out: Path) -> None:
    (out / "drafts").mkdir()


def user_file_in_plots(out: Path) -> None:
    (out / "plots" / "my_plot.png").write_bytes(b"png")


def user_link(out: Path) -> None:
    (out / "tokenizer.json").unlink()
    (out / "tokenizer.json").symlink_to(out.parent / "elsewhere.json")


ADDITIONS = {"file": (user_file, "MY_NOTES.txt"), "folder": (user_folder, "drafts/"),
             "file_in_export_folder": (user_file_in_plots, "plots/my_plot.png"),
             "link_over_export_file": (user_link, "tokenizer.json")}


@pytest.fixture(scope="module")
def first_export(eval_run_dir, tmp_path_factory):
    run = copy_run(eval_run_dir, tmp_path_factory.mktemp("reexport") / "run")
    return run, save_adapter(run, run.parent / "export")


def test_an_export_lists_every_file_it_wrote(first_export):
    _, out = first_export
    files = json.loads((out / EXPORT_INFO_FILE).read_text())["files"]
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == on_disk and {"README.md", "adapter_model.safetensors", EXPORT_INFO_FILE} <= set(files)
    assert any(name.startswith("plots/") for name in files)


@pytest.mark.parametrize("addition", sorted(ADDITIONS))
def test_a_reexport_refuses_a_folder_with_files_it_did_not_write(first_export, tmp_path, addition, no_model_loading):
    run, first = first_export
    out = tmp_path / "export"
    shutil.copytree(first, out)
    add, shown = ADDITIONS[addition]
    add(out)
    before = tree(out)
    for export in (save_adapter, export_merged):
        with pytest.raises(ExportFolderError) as info:
            export(run, out)
        assert str(info.value) == (
            f"{out}: holds 1 entry the previous export did not write ({shown}); an export replaces its folder "
            "whole, so refusing to delete them (fix: move them out, or choose another --out folder)")
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary folder left


def test_a_reexport_of_an_older_export_without_a_file_list_is_refused(first_export, tmp_path):
    run, first = first_export
    out = tmp_path / "export"
    shutil.copytree(first, out)
    info = json.loads((out / EXPORT_INFO_FILE).read_text())
    info.pop("files", None)  # as an older nbtools wrote it
    (out / EXPORT_INFO_FILE).write_text(json.dumps(info))
    before = tree(out)
    with pytest.raises(ExportFolderError, match=r"lists no files \(written by an older nbtools, or damaged\), so "
                                                r"files you added cannot be told from the export's own; refusing to "
                                                r"replace it \(fix: move out what you want to keep and delete the "
                                                r"folder, or choose another --out folder\)"):
        save_adapter(run, out)
    assert tree(out) == before


def test_a_reexport_replaces_its_own_files_and_a_file_added_meanwhile_is_kept(first_export, tmp_path):
    run, first = first_export
    out = tmp_path / "export"
    shutil.copytree(first, out)
    (out / "README.md").unlink()  # a file it wrote, gone: nothing to protect
    assert save_adapter(run, out) == out
    assert (out / "README.md").is_file()
    before = tree(out)
    with pytest.raises(ExportFolderError, match=r"\(MY_NOTES.txt\)"):
        with staged_export(out) as staging:
            (staging / "model.safetensors").write_bytes(b"new")
            user_file(out)  # the user saves a note while the export is being built
    assert tree(out)[0] == {**before[0], "MY_NOTES.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
