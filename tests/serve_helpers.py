"""A real OpenAI-compatible server for tests: ``transformers serve`` on a free loopback port, as a child process.

``Server(model_folder)`` starts it pinned to that model on the CPU and waits for ``/health``;
``stop()`` ends it (SIGTERM, then SIGKILL after a grace period), ``kill()`` ends it at once (a
crash mid-run). Its output goes to a log file, named in the error when it does not come up.
(nbtools' own ``serve`` command may start the same server; the two can share this later.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``wait=False`` returns at once (start several, then ``wait_ready()`` each: they load side by side)."""

    def __init__(self, model: str, log_dir: Path, threads: int = 1, wait: bool = True):
        self.model = str(model)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = Path(log_dir) / f"serve-{self.port}.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
               "TOKENIZERS_PARALLELISM": "false"}
        code = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); "
                "from transformers.cli.serve import Serve; "
                "Serve(sys.argv[2], host='127.0.0.1', port=int(sys.argv[3]), device='cpu', log_level='error')")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-c", code, str(threads), self.model, str(self.port)],
                                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.process.returncode}; log: {self.log_path}\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"transformers serve did not answer /health within {START_TIMEOUT_S:.0f} s; "
                           f"log: {self.log_path}")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """End the server at once, as a crash would."""
        if self.alive:
            self.process.kill()
        self.process.wait(timeout=30)

    def stop(self, grace_s: float = 5.0) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
