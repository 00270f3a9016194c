"""Whether a saved weights file can be loaded, decided cheaply before minutes of work depend on it.

A run's adapter, a checkpoint's adapter: export, evaluation and resume check them first, so a
missing, empty or cut file is named with its fix instead of failing later inside peft or torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from nbtools.errors import one_line


def weights_problem(path: Path) -> Optional[str]:
    """Why the weights file ``path`` cannot be loaded (missing, empty, a header that does not read), or None.

    Reading the safetensors header is cheap (no tensor is loaded) and also catches a truncated file."""
    import zipfile

    if not path.is_file():
        return "is missing"
    if path.stat().st_size == 0:
        return "is empty"
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy"):
                pass
        except (OSError, SafetensorError) as exc:
            return f"is damaged ({one_line(exc)[:120]})"
    elif not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut one lacks its directory
        return "is damaged (not a complete PyTorch file)"
    return None
