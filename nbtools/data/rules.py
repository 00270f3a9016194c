"""The validator's rules: is each parsed JSON object a well-formed preference pair, and does the dataset
as a whole hold up (duplicates, train/validation leakage, size, a verbosity bias)?

Each rule family is a small function returning problems, so each can be tested alone. A line's
object is first brought into one canonical shape (``messages`` + ``rejected``) whatever
format it came in, with a :class:`FieldNames` that maps positions back to the user's own
field names (``messages[2].content`` for our format, ``prompt[1].content`` for TRL's).
The dataset-wide rules point at a line where one exists (``line=None`` for dataset-wide findings) and
read only what validation keeps per pair (a 16-byte key, a length ratio); the pairs whose keys match are
confirmed in one pass over the record table, never held all at once.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from nbtools.data.records import IMAGE_TAG, VIDEO_TAG, PreferenceRecord
from nbtools.images import is_remote
from nbtools.media_ref import is_embedded
from nbtools.problems import Problem

ROLES = ("system", "user", "assistant")
ROLE_NAMES = {role: role for role in ROLES}
MEDIA_TAGS = {"images": IMAGE_TAG, "videos": VIDEO_TAG}
MIN_ROWS, MAX_ROWS = 100, 100_000
VERBOSITY_MIN_PAIRS = 10
VERBOSITY_SHARE = 0.8  # chosen longer in at least this share of pairs...
VERBOSITY_RATIO = 1.3  # ...and the median chosen/rejected length ratio at least this
DUPLICATE_FIX = "remove the duplicate, or keep it on purpose to weight this pair double"

MakeProblem = Callable[..., Problem]


@dataclass
class FieldNames:
    """User-facing field names for positions in the canonical messages list."""

    source_format: str  # "messages" or "trl"
    prompt_len: int = 0  # TRL only: messages before the chosen answer

    def message(self, index: int) -> str:
        if self.source_format == "trl":
            return f"prompt[{index}]" if index < self.prompt_len else "chosen[0]"
        return f"messages[{index}]"

    @property
    def rejected(self) -> str:
        return "rejected[0].content" if self.source_format == "trl" else "rejected_response"


@dataclass
class CanonicalPair:
    messages: list[dict]  # {"role", "content": str}; the last one is the chosen answer
    rejected: str
    names: FieldNames


def normalise_ws(text: str) -> str:
    """Collapse runs of whitespace so "A  cat.\n" and "A cat." compare equal."""
    return " ".join(text.split())


# --------------------------------------------------------------------------- format detection

def detect_format(obj: dict) -> Optional[str]:
    if "messages" in obj:
        return "messages"
    if "prompt" in obj and ("chosen" in obj or "rejected" in obj):
        return "trl"
    return None


def canonical_from_messages(obj: dict, problem: MakeProblem) -> tuple[Optional[CanonicalPair], list[Problem]]:
    """Our format: ``messages`` (string contents) + ``rejected_response``."""
    names = FieldNames("messages")
    problems = check_messages_shape(obj.get("messages"), problem, names)
    problems += check_rejected_field(obj, problem)
    messages = obj.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        if isinstance(message, dict):
            problems += check_text(message.get("content"), f"{names.message(i)}.content", problem)
    problems += check_text(obj.get("rejected_response"), names.rejected, problem)
    if problems:
        return None, problems
    # one shared string per role name: a big file holds millions of them
    messages = [{"role": ROLE_NAMES[m["role"]], "content": m["content"]} for m in obj["messages"]]
    return CanonicalPair(messages, obj["rejected_response"], names), []


def canonical_from_trl(obj: dict, problem: MakeProblem) -> tuple[Optional[CanonicalPair], list[Problem]]:
    """TRL's conversational preference format: ``prompt``/``chosen``/``rejected`` message lists.

    Structured content blocks become text with ``<image>``/``<video>`` tags where the blocks
    were. String-only prompts with images get the tags in front of the first user message,
    which is where TRL's ``prepare_multimodal_messages`` puts them.
    """
    problems: list[Problem] = []
    prompt = obj.get("prompt")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        what = "missing" if prompt is None else ("empty" if prompt == [] else f"a {type(prompt).__name__}")
        return None, [problem("prompt", "error", f"prompt is {what}; it must be a non-empty list of messages",
                              'write "prompt": [{"role": "user", "content": "..."}]')]
    answers = {}
    for key in ("chosen", "rejected"):
        value = obj.get(key)
        if isinstance(value, str):
            value = [{"role": "assistant", "content": value}]
        if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
            problems.append(problem(key, "error", f"{key} must be a list holding one assistant message",
                                    f'write "{key}": [{{"role": "assistant", "content": "..."}}]'))
            continue
        answers[key] = value[0]
    messages = []
    all_msgs = [(f"prompt[{i}]", m) for i, m in enumerate(prompt)]
    if "chosen" in answers:
        all_msgs.append(("chosen[0]", answers["chosen"]))
    for field, message in all_msgs:
        if not isinstance(message, dict):
            problems.append(problem(field, "error", "message is not an object",
                                    'each message is {"role": ..., "content": ...}'))
            continue
        content, content_problems = _flatten_content(message.get("content"), field, problem)
        problems += content_problems
        messages.append({"role": message.get("role"), "content": content})
    rejected_text = None
    if "rejected" in answers:
        rejected_text, content_problems = _flatten_content(answers["rejected"].get("content"), "rejected[0]", problem)
        problems += content_problems
        if answers["rejected"].get("role", "assistant") != "assistant":
            problems.append(problem("rejected[0].role", "error", "the rejected message must be from the assistant",
                                    'set "role": "assistant"'))
    if problems:
        return None, problems
    names = FieldNames("trl", prompt_len=len(prompt))
    problems = check_messages_shape(messages, problem, names)
    if rejected_text is None or not rejected_text.strip():
        problems.append(problem(names.rejected, "error", "the rejected answer is empty",
                                "write the worse answer the model should learn to avoid"))
    if problems:
        return None, problems
    _insert_leading_tags(messages, obj)
    return CanonicalPair(messages, rejected_text, names), []


def _flatten_content(content, field: str, problem: MakeProblem) -> tuple[Optional[str], list[Problem]]:
    if isinstance(content, str):
        problems = check_text(content, f"{field}.content", problem)
        return (None if problems else content), problems
    if not isinstance(content, list):
        return None, [problem(f"{field}.content", "error",
                              f"content is a {type(content).__name__}, not a string or a list of content blocks",
                              'write a string or [{"type": "text", "text": "..."}, {"type": "image"}]')]
    parts = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            problems = check_text(block["text"], f"{field}.content[{j}].text", problem)
            if problems:
                return None, problems
            parts.append(block["text"])
        elif kind == "image":
            parts.append(IMAGE_TAG)
        elif kind == "video":
            parts.append(VIDEO_TAG)
        else:
            return None, [problem(f"{field}.content[{j}]", "error",
                                  f"content block {block!r:.60} is not a text, image or video block",
                                  'use {"type": "text", "text": "..."} or {"type": "image"}')]
    return "".join(parts), []


def _insert_leading_tags(messages: list[dict], obj: dict) -> None:
    """Mirror TRL: images of a tag-less string prompt go before the first user message's text."""
    images = obj.get("images")
    if not isinstance(images, list) or not images:
        return
    if any(IMAGE_TAG in m["content"] for m in messages):
        return
    for m in messages:
        if m["role"] == "user":
            m["content"] = IMAGE_TAG * len(images) + m["content"]
            return


# --------------------------------------------------------------------------- rule families

def check_text(text, field: str, problem: MakeProblem) -> list[Problem]:
    """Text must be valid Unicode: a lone surrogate (``\\ud800`` is a valid JSON escape but no
    character) passes parsing and then stops training in the tokenizer, so it is an error of its
    row here, before anything downstream (token counts, the record table) sees the row."""
    if not isinstance(text, str) or text.isascii():  # isascii reads a flag: the common case costs nothing
        return []
    try:
        text.encode("utf-8")
        return []
    except UnicodeEncodeError as exc:
        return [problem(field, "error", f"text is not valid Unicode (lone surrogate \\u{ord(text[exc.start]):04x} "
                                        f"at character {exc.start})",
                        "re-encode the text as UTF-8; remove or replace the character")]


def check_messages_shape(messages, problem: MakeProblem, names: FieldNames) -> list[Problem]:
    """``messages`` is a non-empty list of {role, content: str}; roles valid and in order."""
    field = "messages" if names.source_format == "messages" else "prompt"
    if messages is None:
        return [problem(field, "error", "messages is missing",
                        'add "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]'
                        ' (or use TRL\'s "prompt"/"chosen"/"rejected" format)')]
    if not isinstance(messages, list):
        return [problem(field, "error", f"messages is a {type(messages).__name__}, not a list",
                        "make messages a JSON list of {role, content} objects")]
    if not messages:
        return [problem(field, "error", "messages is empty",
                        "add at least a user message and the chosen assistant answer")]
    problems = []
    for i, message in enumerate(messages):
        where = names.message(i)
        if not isinstance(message, dict):
            problems.append(problem(where, "error", f"message is a {type(message).__name__}, not an object",
                                    'write {"role": "user", "content": "..."}'))
            continue
        role = message.get("role")
        if role not in ROLES:
            problems.append(problem(f"{where}.role", "error",
                                    f"role {role!r} is not one of system, user, assistant",
                                    "use system, user or assistant"))
        elif role == "system" and i != 0:
            problems.append(problem(f"{where}.role", "error", "the system message is not the first message",
                                    "move the system message to the start (only one is allowed)"))
        content = message.get("content")
        if not isinstance(content, str):
            what = "missing" if content is None else f"a {type(content).__name__}"
            problems.append(problem(f"{where}.content", "error", f"content is {what}, not a string",
                                    "write the message text as a string; mark images with <image> in it"))
    if problems:
        return problems
    last = len(messages) - 1
    if messages[last]["role"] != "assistant":
        problems.append(problem(f"{names.message(last)}.role", "error",
                                f"the last message is from the {messages[last]['role']}, not the assistant",
                                "end messages with the chosen assistant answer"))
    if not any(m["role"] == "user" for m in messages):
        problems.append(problem(names.message(0) if names.source_format == "trl" else "messages", "error",
                                "there is no user message", "add the user's question before the answer"))
    return problems


def check_rejected_field(obj: dict, problem: MakeProblem) -> list[Problem]:
    """``rejected_response`` present and a string (emptiness is checked with the chosen answer)."""
    if "rejected_response" not in obj:
        near = next((k for k in ("rejected", "rejected_answer", "reject_response", "rejected_text") if k in obj), None)
        fix = (f'rename "{near}" to "rejected_response"' if near
               else 'add "rejected_response": "<the worse answer>"')
        return [problem("rejected_response", "error", "rejected_response is missing", fix)]
    value = obj["rejected_response"]
    if not isinstance(value, str):
        return [problem("rejected_response", "error", f"rejected_response is a {type(value).__name__}, not a string",
                        "write the rejected answer as a string")]
    return []


def is_image_contrast(obj: dict) -> bool:
    """The rejected side sees other images: ``rejected_images`` is a list that differs from ``images``."""
    rejected_images = obj.get("rejected_images")
    return isinstance(rejected_images, list) and bool(rejected_images) and rejected_images != (obj.get("images") or [])


def check_answers(pair: CanonicalPair, problem: MakeProblem, obj: Optional[dict] = None) -> list[Problem]:
    """Chosen and rejected are non-blank and differ after whitespace normalisation, unless the pair
    contrasts images (then the same answer on both sides is the point: "fits this picture, not that one")."""
    problems = []
    chosen_field = f"{pair.names.message(len(pair.messages) - 1)}.content"
    chosen = pair.messages[-1]["content"]
    if not chosen.strip():
        problems.append(problem(chosen_field, "error", "the chosen answer (last assistant message) is empty",
                                "write the preferred answer in the last assistant message"))
    if not pair.rejected.strip():
        problems.append(problem(pair.names.rejected, "error", "the rejected answer is empty or only whitespace",
                                "write the worse answer the model should learn to avoid"))
    elif chosen.strip() and normalise_ws(chosen) == normalise_ws(pair.rejected) and not is_image_contrast(obj or {}):
        same_images = isinstance((obj or {}).get("rejected_images"), list)
        problems.append(problem(pair.names.rejected, "error",
                                "the rejected answer is identical to the chosen one (ignoring whitespace)"
                                + (" and rejected_images are the same as images" if same_images else ""),
                                "DPO learns nothing from identical answers: make them differ, give the rejected "
                                "side other images in rejected_images, or drop the pair"))
    return problems


def check_media_lists(obj: dict, problem: MakeProblem) -> list[Problem]:
    """``images``/``videos``/``rejected_images`` are lists of non-empty strings when present."""
    problems = []
    for key in ("images", "videos", "rejected_images"):
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(value, str) and key != "rejected_images":
            problems.append(problem(key, "error", f"{key} is a string, not a list",
                                    f'write "{key}": ["{value[:40]}"]'))
            continue
        if not isinstance(value, list):
            problems.append(problem(key, "error", f"{key} is a {type(value).__name__}, not a list of paths",
                                    f'write "{key}": ["path/or/url", ...]'))
            continue
        for i, item in enumerate(value):
            if not isinstance(item, str):
                problems.append(problem(f"{key}[{i}]", "error", f"{key}[{i}] is a {type(item).__name__}, not a path",
                                        "write each entry as a path or URL string"))
            elif not item.strip():
                problems.append(problem(f"{key}[{i}]", "error", f"{key}[{i}] is an empty path",
                                        "write the file path or URL, or remove the entry"))
            elif "\x00" in item:
                problems.append(problem(f"{key}[{i}]", "error", f"{key}[{i}] contains a NUL character (\\u0000), "
                                        "which no file name can hold", "remove the \\u0000 from the path"))
            elif not _encodable(item):
                problems.append(problem(f"{key}[{i}]", "error", f"{key}[{i}] contains a lone surrogate escape "
                                        f"({item.encode('utf-8', 'backslashreplace').decode()[:80]}), which is "
                                        "no character", "write the path as plain UTF-8 text"))
    return problems


def _encodable(path: str) -> bool:
    """A lone surrogate from a JSON escape (``\\ud800``) makes no file name; undecodable bytes
    of a real file name (``surrogateescape``) still do."""
    try:
        os.fsencode(path)
        return True
    except UnicodeError:
        return False


def check_tags(pair: CanonicalPair, obj: dict, problem: MakeProblem) -> list[Problem]:
    """``<image>``/``<video>`` only in user content (never in either answer), and as many
    tags as list entries."""
    problems = []
    for tag in MEDIA_TAGS.values():
        if tag in pair.rejected:
            problems.append(problem(pair.names.rejected, "error",
                                    f"{tag} appears in the rejected answer; tags belong in user content",
                                    f"remove {tag} from the answer (write the words, e.g. 'image', without brackets)"))
    for key, tag in MEDIA_TAGS.items():
        in_user = 0
        for i, message in enumerate(pair.messages):
            count = message["content"].count(tag)
            if message["role"] == "user":
                in_user += count
            elif count:
                problems.append(problem(f"{pair.names.message(i)}.content", "error",
                                        f"{tag} appears in {'an' if message['role'] == 'assistant' else 'a'} "
                                        f"{message['role']} message; tags belong in user content",
                                        f"move {tag} into the user message that shows the {key[:-1]}"))
        listed = obj.get(key) or []
        if in_user != len(listed):
            problems.append(problem(key, "error",
                                    f"{in_user} {tag} tag(s) in user messages but {len(listed)} entr"
                                    f"{'y' if len(listed) == 1 else 'ies'} in {key}",
                                    f"put one {tag} in the user text per entry of {key}, in the same order"))
    rejected_images = obj.get("rejected_images")
    if isinstance(rejected_images, list):
        tags = sum(m["content"].count(IMAGE_TAG) for m in pair.messages if m["role"] == "user")
        if len(rejected_images) != tags:
            problems.append(problem("rejected_images", "error",
                                    f"rejected_images has {len(rejected_images)} entries but the prompt has "
                                    f"{tags} {IMAGE_TAG} tag(s)",
                                    "give one rejected image per <image> tag, in the same order"))
    return problems


# --------------------------------------------------------------------------- object -> record

def resolve_media_path(path: str, base_dir: str) -> str:
    """Absolute, ``~``-relative or data-file-relative path; URLs and embedded media are kept as they are."""
    if is_embedded(path):
        return path
    return _resolve_path(path, base_dir)


@functools.lru_cache(maxsize=65536)  # datasets name the same pictures over and over
def _resolve_path(path: str, base_dir: str) -> str:
    if path.startswith("file://"):
        path = path[len("file://"):]
    if is_remote(path):
        return path
    path = os.path.expanduser(path)
    if not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    return os.path.normpath(path)


def parse_pair(obj, file: str, line: int, base_dir: str) -> tuple[Optional[PreferenceRecord], list[Problem]]:
    """One JSON value -> a record (when its structure is sound) and the problems found in it.

    A record is returned even with answer or tag errors; callers keep only rows without
    errors for training (``ValidationReport.valid_records``)."""

    def problem(field, severity, message, fix):
        return Problem(file, line, field, severity, message, fix)

    if not isinstance(obj, dict):
        return None, [problem("line", "error", f"the line holds a JSON {_json_type(obj)}, not an object",
                              "write one {...} object per line")]
    kind = detect_format(obj)
    if kind == "trl":
        pair, problems = canonical_from_trl(obj, problem)
    else:
        pair, problems = canonical_from_messages(obj, problem)
    problems += check_media_lists(obj, problem)
    if pair is None or problems:
        return None, problems
    # The pair's shape is sound: build the record even when the answers or tags are wrong, so
    # its media files still get checked (the user sees all of a line's problems at once).
    problems += check_answers(pair, problem, obj)
    problems += check_tags(pair, obj, problem)
    record = PreferenceRecord(
        file=file,
        line=line,
        prompt=pair.messages[:-1],
        chosen=pair.messages[-1]["content"],
        rejected=pair.rejected,
        images=[resolve_media_path(p, base_dir) for p in obj.get("images") or []],
        videos=[resolve_media_path(p, base_dir) for p in obj.get("videos") or []],
        rejected_images=(None if obj.get("rejected_images") is None
                         else [resolve_media_path(p, base_dir) for p in obj["rejected_images"]]),
        source_format=pair.names.source_format,
    )
    return record, problems


def _json_type(value) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


# --------------------------------------------------------------------------- rules over the whole dataset

def _media_identity(refs) -> tuple:
    """Pictures by path, or by content when embedded in the data (their labels name rows, not pictures)."""
    return tuple(hashlib.blake2b(m.data, digest_size=16).hexdigest() if is_embedded(m) else str(m) for m in refs)


def pair_key(record: PreferenceRecord) -> tuple:
    """Identity of a pair: prompt text, images, videos, chosen and rejected, whitespace-normalised."""
    prompt = tuple((m["role"], normalise_ws(m["content"])) for m in record.prompt)
    return (prompt, _media_identity(record.images), _media_identity(record.videos), normalise_ws(record.chosen),
            normalise_ws(record.rejected))


def pair_key_hash(record: PreferenceRecord) -> bytes:
    """16 bytes standing for :func:`pair_key`, the same in every process (Python's ``hash`` is not);
    matches are confirmed on the full key, so even a collision cannot report a false duplicate."""
    # every part length-prefixed: no text can imitate a boundary between parts
    parts = [f"{len(record.prompt)}|{len(record.images)}|{len(record.videos)}"]
    for message in record.prompt:
        text = normalise_ws(message["content"])
        parts.append(f"{len(message['role'])}:{message['role']}{len(text)}:{text}")
    for ref in (*_media_identity(record.images), "", *_media_identity(record.videos)):
        parts.append(f"{len(ref)}:{ref}")
    chosen, rejected = normalise_ws(record.chosen), normalise_ws(record.rejected)
    parts.append(f"{len(chosen)}:{chosen}{len(rejected)}:{rejected}")
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def keys_array(records: list[PreferenceRecord]) -> np.ndarray:
    """(n, 2) uint64: the records' :func:`pair_key_hash` values."""
    raw = b"".join(pair_key_hash(r) for r in records)
    return np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2).copy() if raw else np.zeros((0, 2), np.uint64)


def shared_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, groups): the pairs whose 128-bit key another pair shares, in ascending position, and
    a group number per key (one int per pair, whatever the size of a group)."""
    if len(keys) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    ordered = keys[order]
    starts = np.empty(len(order), dtype=bool)
    starts[0] = True
    np.any(ordered[1:] != ordered[:-1], axis=1, out=starts[1:])
    del ordered
    group = np.cumsum(starts) - 1
    shared = np.bincount(group)[group] > 1
    positions, group = order[shared], group[shared]
    by_position = np.argsort(positions, kind="stable")
    return positions[by_position], group[by_position]


def _place(record: PreferenceRecord) -> str:
    return f"row {record.row} of {os.path.basename(record.file)}" if record.row is not None else f"line {record.line}"


ReadBack = Callable[[np.ndarray], Iterator[tuple[int, PreferenceRecord]]]  # ascending positions -> (position, record)


def _keyed(rows: Iterator[tuple[int, PreferenceRecord]]) -> Iterator[tuple[int, PreferenceRecord, tuple]]:
    """(position, record, pair_key): rows read back alike share their parts (see ``table.read_rows``),
    so the key of a run of them is computed once."""
    last, key = None, None
    for position, record in rows:
        if not (last is not None and record.prompt is last.prompt and record.chosen is last.chosen
                and record.rejected is last.rejected and record.images is last.images
                and record.videos is last.videos):
            last, key = record, pair_key(record)
        yield position, record, key


def check_duplicates(keys: np.ndarray, read_back: ReadBack) -> list[Problem]:
    """A pair seen before in the same data: it weighs double in training.

    Pairs are matched by their 128-bit keys (16 bytes each, whatever the dataset's size); every
    match is confirmed on the full pairs, read back in one pass over the table (``read_back``).
    What this keeps is bounded by the keys still awaiting a copy, not by the copies: a file of one line
    repeated a million times holds one full key, and its findings share one message string."""
    positions, groups = shared_keys(keys)
    left = np.bincount(groups) if len(groups) else np.zeros(0, np.int64)  # copies of each key not read yet
    open_groups: dict[int, dict[tuple, str]] = {}  # group -> full key -> message naming its first pair
    files: dict[str, str] = {}  # one file-name string for all findings
    problems = []
    for group, (_position, record, key) in zip(groups, _keyed(read_back(positions)), strict=True):
        group = int(group)
        firsts = open_groups.setdefault(group, {})  # two full keys in one group: a hash collision
        message = firsts.get(key)
        if message is None:
            firsts[key] = f"duplicate pair: same prompt, images and answers as {_place(record)}"
        else:
            problems.append(Problem(files.setdefault(record.file, record.file), record.line, "messages", "warning",
                                    message, DUPLICATE_FIX, record.row))
        left[group] -= 1
        if not left[group]:
            del open_groups[group]
    return problems


def check_leakage(keys: np.ndarray, validation: dict[bytes, PreferenceRecord], read_back: ReadBack) -> list[Problem]:
    """A training pair that is also in the validation data inflates the validation metrics
    (``validation``: key -> its first validation record; the training pairs are read back in one pass)."""
    if not validation or not len(keys):
        return []
    wanted = np.frombuffer(b"".join(validation), dtype=np.uint64).reshape(-1, 2)
    as_void = np.dtype((np.void, 16))
    hits = np.flatnonzero(np.isin(np.ascontiguousarray(keys).view(as_void).ravel(),
                                  np.ascontiguousarray(wanted).view(as_void).ravel()))
    seen: dict[bytes, tuple[tuple, str]] = {}  # key -> (validation pair's full key, message): one string per pair
    files: dict[str, str] = {}
    problems = []
    for position, record, key in _keyed(read_back(hits)):
        hashed = keys[position].tobytes()
        if hashed not in seen:
            other = validation[hashed]
            where = f"row {other.row}" if other.row is not None else f"line {other.line}"
            seen[hashed] = (pair_key(other), f"leakage: the same pair is in the validation file {other.file} at {where}")
        other_key, message = seen[hashed]
        if other_key != key:
            continue
        problems.append(Problem(files.setdefault(record.file, record.file), record.line, "messages", "warning",
                                message, "remove it from one of the two files so validation measures unseen pairs",
                                record.row))
    return problems


def check_size(file: str, valid_rows: int) -> list[Problem]:
    """DPO guidance: a few hundred to tens of thousands of pairs."""
    if valid_rows < MIN_ROWS:
        return [Problem(file, None, "dataset", "warning",
                        f"only {valid_rows} valid pairs; DPO usually needs at least {MIN_ROWS}",
                        "add more pairs, or expect noisy results (fine for a smoke test)")]
    if valid_rows > MAX_ROWS:
        return [Problem(file, None, "dataset", "warning",
                        f"{valid_rows} valid pairs is above {MAX_ROWS:,}; gains flatten while cost grows",
                        "train on a sample first (and consider fewer epochs)")]
    return []


def check_verbosity(file: str, pairs: int, share_longer: float, median: float) -> list[Problem]:
    """Chosen answers systematically longer than rejected ones teach length, not quality."""
    if pairs < VERBOSITY_MIN_PAIRS:
        return []
    if share_longer >= VERBOSITY_SHARE and median >= VERBOSITY_RATIO:
        return [Problem(file, None, "dataset", "warning",
                        f"chosen is longer than rejected in {share_longer:.0%} of pairs (median length ratio "
                        f"{median:.2f}); DPO then learns to be verbose",
                        "balance lengths (shorter chosen or longer rejected answers), or watch output length")]
    return []
