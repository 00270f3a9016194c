"""The demo's models served as the README says, asked about a sample picture: the reply the README quotes.

After ``make demo`` (which leaves ``runs/demo/run`` and its merged export ``runs/demo/export``), this runs

    python -m nbtools serve runs/demo/export --port 0            # the tuned model
    python -m nbtools serve runs/demo/run --base --port 0        # the run's base model, the model lab's base side

as child processes, sends each the ``curl`` call its banner prints with ``photo.png`` = ``--picture``, stops both
with Ctrl-C (as a user would; each must exit with 130) and writes what came back:

    python benchmarks/served_reply.py [--demo runs/demo] [--picture data_samples/shapes/images/validation_0004.png]

Writes ``benchmarks/results/served_reply.json`` (``--out``); ``benchmarks/readme_figures.py`` quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUESTION = "What colour is the shape?"  # the one the printed curl call asks


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nbtools", "serve", *args, "--port", "0"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})


def _banner(process: subprocess.Popen) -> str:
    lines = []
    while not lines or not lines[-1].startswith("print(reply"):
        line = process.stdout.readline()
        if not line:  # the command ended before serving
            sys.exit(f"nbtools serve did not start: {process.stderr.read()[-2000:]}")
        lines.append(line)
    return "".join(lines)


def _curl(banner: str) -> str:
    """The printed curl call: from ``curl `` to the end of its JSON body."""
    start = banner.index("curl ")
    return banner[start:banner.index("}'", start) + 2]


def ask(args: list[str], picture: Path) -> dict:
    process = _start(args)
    banner = _banner(process)
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(picture, Path(folder) / "photo.png")
        done = subprocess.run(["bash", "-c", _curl(banner)], cwd=folder, capture_output=True, text=True, timeout=300)
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=120)
    if done.returncode != 0 or code != 130:
        sys.exit(f"curl exited {done.returncode} ({done.stderr[-500:]}), nbtools serve {code}")
    reply = json.loads(done.stdout)
    return {"command": " ".join(["python", "-m", "nbtools", "serve", *args]), "model": reply["model"],
            "reply": reply["choices"][0]["message"]["content"], "exit_code_after_ctrl_c": code}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="runs/demo", help="the folder `make demo` wrote (default: runs/demo)")
    parser.add_argument("--picture", default="data_samples/shapes/images/validation_0004.png")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "served_reply.json"))
    args = parser.parse_args(argv)
    import transformers

    picture = REPO / args.picture
    result = {
        "picture": args.picture, "question": QUESTION, "max_tokens": 128, "temperature": 0,
        "tuned": ask([f"{args.demo}/export"], picture),
        "base": ask([f"{args.demo}/run", "--base"], picture),
        "server": f"transformers {transformers.__version__} serve, CPU", "machine": platform.machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
