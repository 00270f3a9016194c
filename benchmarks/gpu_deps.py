"""The GPU check's install stage, after the carried wheels are in: does this Python have what the stages need?

    python benchmarks/gpu_deps.py [--wheels DIR] [--json FILE] [--versions FILE]

``gpu_check.sh`` installs the carried wheels (trl, peft, accelerate, transformers, tokenizers, datasets) with
``--no-deps``: everything they need must already be in the GPU image. This script says whether it is, in
two ways, and lists every problem (exit 1 when there is one):

1. **Requirements.** From the carried packages and what nbtools itself imports (``ROOTS``), every declared
   requirement (``Requires-Dist``, markers evaluated; transformers with its ``torch`` extra), followed
   through the installed distributions: each must be installed in a version the requirement accepts
   (e.g. torch >= 2.6 for transformers 5.24, huggingface-hub >= 1.31, safetensors >= 0.8, fsspec <= 2026.9
   for datasets, pyarrow / dill / xxhash / multiprocess for datasets). Like ``pip check``, restricted to what
   the check uses, so unrelated packages of the image cannot fail it. torch's own requirements (its CUDA
   libraries) are the image's business and are not followed. With ``--wheels``, each carried wheel's
   version must also be the installed one (the install took).
2. **Imports.** Every module the stages import (``STAGE_MODULES``), imported here: a package that is
   installed but broken (built for another numpy or torch, say) fails here instead of mid-stage.
   ``OPTIONAL_MODULES`` are imported when installed (the stages use them when they are there).

``--versions FILE`` writes what the check ran with (GPU, driver, Python, package versions, nbtools
revision). ``--hide NAME`` (rehearsal only) acts as if the distribution NAME were not installed and its
import failed: how the test suite rehearses a GPU image that lacks a package.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import os
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_stage  # noqa: E402

# Carried by gpu_check.sh (pure Python, pinned in requirements.txt); installed with --no-deps.
CARRIED = ("trl", "peft", "accelerate", "transformers", "tokenizers", "datasets")
# Where the requirement walk starts: the carried packages (transformers with its torch extra: the torch
# version it needs) and the distributions nbtools imports itself on the stages' paths.
ROOTS = {"transformers": ("torch",), "trl": (), "peft": (), "accelerate": (), "tokenizers": (), "datasets": (),
         "torch": (), "numpy": (), "pillow": (), "safetensors": (), "huggingface-hub": (), "pyyaml": (),
         "matplotlib": (), "pandas": (), "pyarrow": (), "psutil": (), "jinja2": (), "fsspec": (), "typer": (),
         "regex": ()}
# Not followed: the image's own torch stack (its CUDA libraries, triton) is what the image is for.
NOT_FOLLOWED = re.compile(r"^(torch|nvidia-.*|cuda-.*|triton)$")
# What the stages import (module names); tests check that the rehearsal's stages import nothing else.
STAGE_MODULES = (
    "torch", "torch.nn.attention.flex_attention", "torch.distributed.fsdp", "numpy", "PIL.Image", "yaml",
    "safetensors.torch", "huggingface_hub", "tokenizers", "transformers", "accelerate", "peft", "datasets",
    "trl", "trl.trainer.dpo_trainer", "trl.kernels", "pandas", "pyarrow", "psutil", "jinja2", "regex",
    "matplotlib.pyplot", "nbtools.config", "nbtools.models", "nbtools.estimate", "nbtools.packing",
    "nbtools.train.runner", "nbtools.train.trainer", "nbtools.train.dataset", "nbtools.train.reference",
    "nbtools.train.distributed", "nbtools.evaluate.run_model", "nbtools.live", "nbtools.samples.drawing",
)
# module -> distribution: imported when installed, as the stages do (transformers uses torchvision when it is
# there; nbtools.live asks IPython whether it runs in a notebook, and goes on without it)
OPTIONAL_MODULES = {"torchvision": "torchvision", "IPython": "ipython"}


def _packaging():
    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:  # pip's own copy
        from pip._vendor.packaging.markers import default_environment
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.version import Version
    return Requirement, Version, default_environment


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Environment:
    """Installed distributions by normalised name; ``hidden`` ones count as not installed."""

    def __init__(self, hidden=()):
        self.hidden = {normalise(h) for h in hidden}

    def distribution(self, name: str):
        if normalise(name) in self.hidden:
            return None
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None

    def version(self, name: str) -> str | None:
        dist = self.distribution(name)
        return dist.version if dist is not None else None


def wheel_versions(folder: Path | None) -> dict[str, str]:
    """{normalised name: version} of the wheels in ``folder`` (from the file names, as gpu_check.sh reads them)."""
    if folder is None:
        return {}
    found = {}
    for wheel in sorted(folder.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        found[normalise(name)] = version
        with zipfile.ZipFile(wheel) as archive:  # a wheel that is no wheel fails here, named
            archive.namelist()
    return found


def check_requirements(env: Environment, roots: dict, wheels: dict[str, str]) -> tuple[list[str], int]:
    """Problems (missing distributions, versions a requirement refuses, carried wheels not installed), and the
    number of distributions checked."""
    Requirement, Version, default_environment = _packaging()
    base_env = default_environment()
    needed_by: dict[str, list[tuple[str, object]]] = {}
    problems, seen = [], set()
    queue = [(normalise(name), tuple(extras)) for name, extras in roots.items()]
    for name in wheels:
        if name not in dict(queue):
            queue.append((name, ()))
    while queue:
        name, extras = queue.pop(0)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = env.distribution(name)
        if dist is None:
            continue  # reported below, with who needs it
        if NOT_FOLLOWED.match(name):
            continue
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate(dict(base_env, extra=extra)) for extra in ("",) + extras):
                continue
            target = normalise(requirement.name)
            needed_by.setdefault(target, []).append((name, requirement))
            queue.append((target, tuple(sorted(requirement.extras))))
    for name in sorted({n for n, _ in seen}):
        version = env.version(name)
        wanted = needed_by.get(name, [])
        why = ("; ".join(f"{who} needs {req}" for who, req in wanted)
               or ("a carried wheel" if name in wheels else "nbtools imports it"))
        if version is None:
            problems.append(f"missing: {name} ({why})")
            continue
        refused = [f"{who} needs {req}" for who, req in wanted
                   if req.specifier and not req.specifier.contains(Version(version), prereleases=True)]
        if refused:
            problems.append(f"version: {name} {version} is installed, but " + "; ".join(refused))
        if name in wheels and wheels[name] != version:
            problems.append(f"not installed from the wheel: {name} {version} is installed, the carried wheel is "
                            f"{wheels[name]}")
    return problems, len({n for n, _ in seen})


class _Hidden:
    """A meta-path finder that refuses the hidden top-level modules (``--hide``)."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{fullname}' (hidden: rehearsing a GPU image without it)")
        return None


def check_imports(env: Environment, hidden_modules=()) -> tuple[list[str], list[str]]:
    """(problems, notes): every stage module imported; optional ones when their distribution is installed."""
    if hidden_modules:
        sys.meta_path.insert(0, _Hidden(hidden_modules))
    os.environ.setdefault("MPLBACKEND", "Agg")
    problems, notes = [], []
    modules = list(STAGE_MODULES)
    for module, dist in OPTIONAL_MODULES.items():
        if env.version(dist) is not None:
            modules.append(module)
        else:
            notes.append(f"{module} not installed (optional: used when it is there)")
    for module in modules:
        try:
            importlib.import_module(module)
        except BaseException as exc:  # ImportError, or whatever a broken binary package raises on import
            first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
            problems.append(f"import {module}: {type(exc).__name__}: {first_line}")
    return problems, notes


def write_versions(path: Path, env: Environment) -> None:
    lines = []
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        lines.append(smi.stdout.strip() or "nvidia-smi: no output")
    except (OSError, subprocess.SubprocessError):
        lines.append("nvidia-smi: not available")
    lines.append(f"python {platform.python_version()}")
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "huggingface-hub",
                 "safetensors", "fsspec", "pyarrow", "pillow", "numpy"):
        lines.append(f"{name} {env.version(name) or 'MISSING'}")
    torch = sys.modules.get("torch")
    if torch is not None:
        cuda = torch.cuda.is_available()
        lines.append(f"cuda {torch.version.cuda} | device {torch.cuda.get_device_name(0) if cuda else 'none'}")
    revision = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    lines.append(f"nbtools revision {revision or 'unknown'}")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="the folder of carried wheels gpu_check.sh installed from")
    parser.add_argument("--json", type=Path, help="write the problems and verdicts here")
    parser.add_argument("--versions", type=Path, help="write the versions the check runs with here")
    parser.add_argument("--hide", action="append", default=[], metavar="NAME",
                        help="rehearsal: act as if distribution NAME (and its top-level module NAME) were missing")
    args = parser.parse_args(argv)
    env = Environment(args.hide)
    try:
        wheels = wheel_versions(args.wheels)
        wheel_problems = []
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        wheels, wheel_problems = {}, [f"wheel folder {args.wheels}: {type(exc).__name__}: {exc}"]
    requirement_problems, checked = check_requirements(env, ROOTS, wheels)
    requirement_problems = wheel_problems + requirement_problems
    import_problems, notes = check_imports(env, [normalise(h).replace("-", "_") for h in args.hide])
    verdicts = [
        gpu_stage.verdict(f"every requirement of the carried packages and of nbtools is met ({checked} "
                          "distributions)", "; ".join(requirement_problems) or "all met", not requirement_problems,
                          figure=len(requirement_problems)),
        gpu_stage.verdict(f"every module the stages import imports ({len(STAGE_MODULES)} modules)",
                          "; ".join(import_problems) or "all import", not import_problems, "; ".join(notes),
                          figure=len(import_problems)),
    ]
    payload = {"wheels": wheels, "requirement_problems": requirement_problems, "import_problems": import_problems,
               "notes": notes, "distributions_checked": checked, "verdicts": verdicts}
    if args.json:
        gpu_stage.write_json(args.json, payload)
    if args.versions:
        write_versions(args.versions, env)
    for problem in requirement_problems + import_problems:
        print(f"gpu_deps: {problem}", file=sys.stderr)
    gpu_stage.print_verdicts("install", verdicts)
    return gpu_stage.exit_code(verdicts)


if __name__ == "__main__":
    sys.exit(main())
