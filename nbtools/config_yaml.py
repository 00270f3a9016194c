"""A run config as a YAML file: written with each field's help as a comment above it (through a temporary
name), read back refusing what YAML would silently accept (a key set twice, non-UTF-8 bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Union

from nbtools.config_coerce import ConfigError


def write_config_yaml(path: Union[str, Path], rows: Iterable[tuple[str, str, str, Any]]) -> Path:
    """Write ``(group, help, name, value)`` rows, a ``# --- group ---`` line where the group changes."""
    import yaml

    from nbtools.atomic import write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# nbtools RunConfig: python -m nbtools train THIS_FILE"]
    group = None
    for row_group, help_text, name, value in rows:
        if row_group != group:
            group = row_group
            lines.append(f"\n# --- {group} ---")
        lines.append(f"# {help_text}")
        if isinstance(value, list):  # short lists read best inline: loss_type: [sigmoid, sft]
            dumped = f"{name}: " + yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
        else:
            dumped = yaml.safe_dump({name: value}, default_flow_style=False, width=1000).rstrip("\n")
        lines.append(dumped)
    write_text(path, "\n".join(lines) + "\n")  # temporary name + rename: never half a config
    return path


def read_config_yaml(path: Union[str, Path]) -> Any:
    """The YAML document in ``path`` (a mapping, if it is a config); a ConfigError naming the line otherwise."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("config", f"file not found: {path}", "check the path to the config YAML", str(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError("config", f"not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r} at offset "
                          f"{exc.start})", "save the file as UTF-8 (most editors: Save with encoding UTF-8)",
                          f"{path}:{line}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # safe_load's loader, refusing repeated keys
    except _DuplicateKey as exc:
        raise ConfigError(exc.key, f"set twice (first on line {exc.first_line}); YAML would silently keep "
                          "the last value", "delete one of the two lines", f"{path}:{exc.line}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError("config", f"not valid YAML ({getattr(exc, 'problem', exc)})",
                          "fix the YAML syntax on that line", where) from None
    except RecursionError:
        raise ConfigError("config", "nested too deeply to be a config", "write one 'name: value' per line",
                          str(path)) from None


class _DuplicateKey(Exception):
    def __init__(self, key, line, first_line):
        super().__init__(key)
        self.key, self.line, self.first_line = str(key), line, first_line


def _unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    break
                if first is not None:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1, first)
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


class _LazyLoader:
    """The loader class, built on first use (yaml is imported lazily: importing the config stays fast)."""

    _cls = None

    def __call__(self, stream):
        if _LazyLoader._cls is None:
            _LazyLoader._cls = _unique_key_loader()
        return _LazyLoader._cls(stream)


_UniqueKeyLoader = _LazyLoader()
