"""RoboPoint-format training data (``robopoint_1432k.json``) <-> `datasets` rows in the transformers chat format.

The original training file is one 1.7 GB JSON *list* of 1.43M records::

    {"id": "...", "image": "relative/path.jpg",            # "image" is absent for text-only records
     "conversations": [{"from": "human", "value": "<image>\\n<question> Your answer should ..."},
                       {"from": "gpt", "value": "[(0.461, 0.527), (0.498, 0.521)]"}, ...]}

The original loaded it with ``json.load`` (tens of GB of Python objects) and found bad records only when the
trainer reached them. Here the list is streamed record by record (a small incremental reader over
:class:`json.JSONDecoder`, no extra dependency), every record is validated up front, and valid rows are written to
an Arrow file that `datasets` memory-maps, so the peak memory is a few MB whatever the file size. Images are
stored as paths and decoded only when a row is accessed.

Rows have three columns, ready for TRL's ``SFTTrainer`` and our collator:

* ``id`` -- the record id, as a string.
* ``images`` -- a list with 0 or 1 image (`datasets.Image`, decoded lazily from its path).
* ``messages`` -- ``[{"role": "user" | "assistant", "content": [{"type": "image", "text": None},
  {"type": "text", "text": ...}]}, ...]``. Arrow needs one struct type per column, so image parts carry
  ``"text": None``.

Like the original's ``preprocess_multimodal``, every message that contains ``<image>`` has all its ``<image>``
tags removed, is stripped, and gets the image at its START; the chat template renders an image part as
``"<image>\\n"``, which reproduces the original's ``"<image>\\n" + text.strip()``. Other messages are kept verbatim.

Validation (each problem is reported with the file, the record id and its index):

=========================  =================================================================================
reason                     meaning
=========================  =================================================================================
``malformed_record``       not an object, or ``conversations`` / a message / a field has the wrong type
``empty_conversation``     no messages
``unknown_role``           a ``from`` other than ``human`` / ``gpt`` (the original raised a ``KeyError``)
``starts_with_gpt``        the first message is from ``gpt``. The original silently dropped that message and
                           trained on the rest; a leading answer with no question means the record was cut
                           or mis-converted, so we flag it instead of guessing.
``not_alternating``        two consecutive messages from the same side (the original asserted)
``ends_with_human``        the last message is a question with no answer: nothing to train on
``image_token_mismatch``   number of ``<image>`` tags differs from the number of images (0 or 1). With too
                           many tags the original crashed mid-training; with a missing tag it fed the
                           image nowhere.
``missing_image_file``     the ``image`` file does not exist under ``image_folder``
=========================  =================================================================================

``on_invalid="error"`` raises a ``ValueError`` at the first problem; ``on_invalid="skip"`` drops the record,
counts it by reason, logs one warning with the counts at the end and returns them in a :class:`LoadReport`.
Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from robopoint_hf.model.points import add_answer_format, format_points
from robopoint_hf.model.templates import IMAGE_PLACEHOLDER

if TYPE_CHECKING:
    import datasets

__all__ = [
    "InvalidRecord",
    "LoadReport",
    "convert_robopoint_json",
    "iter_json_array",
    "load_robopoint_dataset",
    "make_pointing_record",
    "mix_robopoint_data",
    "record_to_row",
    "write_robopoint_records",
]

logger = logging.getLogger(__name__)

ROLE_MAP = {"human": "user", "gpt": "assistant"}
_READ_CHARS = 1 << 20  # 1 Mi characters per read: few syscalls, small buffer
_MAX_RECORD_CHARS = 64 << 20  # a "record" this large means the file is broken, not that the record is big
_ROWS_PER_BATCH = 1000
_EXAMPLE_IDS_PER_REASON = 5
_CACHE_VERSION = "1"


class InvalidRecord(ValueError):
    """A record that breaks the RoboPoint format; ``reason`` is one of the codes in the module docstring."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class LoadReport:
    """What :func:`convert_robopoint_json` kept and skipped.

    Attributes:
        source (`str`): the JSON file read.
        total (`int`): records read.
        kept (`int`): records turned into rows.
        skipped (`dict[str, int]`): skipped records per reason code.
        examples (`dict[str, list[str]]`): up to 5 ``"<id> (index N): <detail>"`` strings per reason.
    """

    source: str
    total: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line for logs: totals and per-reason counts."""
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items()))
        return f"{self.source}: kept {self.kept} of {self.total} records" + (
            f", skipped {self.num_skipped} ({reasons})" if self.skipped else ""
        )


def iter_json_array(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Yield the elements of a top-level JSON array one at a time, reading the file incrementally.

    Memory stays at one read buffer plus one element, so a multi-GB ``robopoint_1432k.json`` can be scanned
    without ``json.load``. Elements are decoded by the stdlib C decoder (``JSONDecoder.raw_decode``).

    Args:
        path (`str` or `os.PathLike`): the JSON file; its top level must be a list.

    Yields:
        `Any`: each element of the list, in order.

    Raises:
        ValueError: if the file is not a JSON list or is malformed; the message names the file, the element
            index and the character offset.
    """
    decoder = json.JSONDecoder()
    whitespace = " \t\n\r"
    with open(path, encoding="utf-8") as handle:
        buffer, offset, eof = "", 0, False  # offset = file position (in characters) of buffer[0]

        def fill(position: int) -> int:
            """Drop consumed text and read more; returns the new position in the buffer."""
            nonlocal buffer, offset, eof
            chunk = handle.read(_READ_CHARS)
            eof = not chunk
            buffer, offset = buffer[position:] + chunk, offset + position
            return 0

        def skip_whitespace(position: int) -> int:
            while True:
                while position < len(buffer) and buffer[position] in whitespace:
                    position += 1
                if position < len(buffer) or eof:
                    return position
                position = fill(position)

        position = skip_whitespace(fill(0))
        if position >= len(buffer) or buffer[position] != "[":
            raise ValueError(f"{path}: expected a JSON list (the RoboPoint format), file starts with {buffer[:40]!r}")
        position = skip_whitespace(position + 1)
        if position < len(buffer) and buffer[position] == "]":
            return
        index = 0
        while True:
            try:
                element, end = decoder.raw_decode(buffer, position)
                # A value that runs to the end of the buffer may be cut (e.g. a number); only trust it with more text.
                complete = end < len(buffer) or eof
            except json.JSONDecodeError as error:
                if eof or len(buffer) - position > _MAX_RECORD_CHARS:
                    raise ValueError(
                        f"{path}: malformed JSON in element {index} at character {offset + error.pos}: {error.msg}"
                    ) from None
                complete = False
            if not complete:
                position = fill(position)
                continue
            yield element
            index += 1
            position = skip_whitespace(end)
            if position >= len(buffer):
                raise ValueError(f"{path}: unexpected end of file after element {index - 1} (missing ']')")
            separator = buffer[position]
            if separator == "]":
                return
            if separator != ",":
                raise ValueError(
                    f"{path}: expected ',' or ']' after element {index - 1} at character {offset + position}, "
                    f"found {separator!r}"
                )
            position = skip_whitespace(position + 1)


def record_to_row(
    record: Any, image_folder: str | os.PathLike[str] | None, *, check_images: bool = True
) -> dict[str, Any]:
    """Validate one RoboPoint record and turn it into a row (``id``, ``images``, ``messages``).

    Args:
        record (`dict`): one element of the RoboPoint JSON list.
        image_folder (`str` or `os.PathLike`, *optional*): folder the ``image`` paths are relative to
            (``None``: paths are used as written, like the original's ``--image_folder ''``).
        check_images (`bool`, *optional*, defaults to `True`): check that the image file exists.

    Returns:
        `dict`: the row; ``images`` holds the image path (decoded later by `datasets.Image`).

    Raises:
        InvalidRecord: with a reason code and a human-readable detail (no file or id; the caller adds them).
    """
    if not isinstance(record, dict):
        raise InvalidRecord("malformed_record", f"record is a {type(record).__name__}, not an object")
    conversations = record.get("conversations")
    if not isinstance(conversations, list):
        raise InvalidRecord("malformed_record", f"'conversations' must be a list, got {type(conversations).__name__}")
    if not conversations:
        raise InvalidRecord("empty_conversation", "'conversations' is empty")

    image = record.get("image")
    images: list[str] = []
    if image is not None:
        if not isinstance(image, str) or not image:
            raise InvalidRecord("malformed_record", f"'image' must be a non-empty path string, got {image!r}")
        image_path = os.path.join(image_folder, image) if image_folder else image
        if check_images and not os.path.isfile(image_path):
            raise InvalidRecord("missing_image_file", f"image file {image_path!r} does not exist")
        images.append(os.path.abspath(image_path))

    messages = []
    tag_count = 0
    previous = None
    for turn, message in enumerate(conversations):
        if not isinstance(message, dict) or not isinstance(message.get("value"), str):
            raise InvalidRecord("malformed_record", f"message {turn} must be an object with a string 'value'")
        side = message.get("from")
        if side not in ROLE_MAP:
            raise InvalidRecord("unknown_role", f"message {turn} has 'from' = {side!r}; expected 'human' or 'gpt'")
        if turn == 0 and side == "gpt":
            raise InvalidRecord("starts_with_gpt", "message 0 is from 'gpt'; conversations must start with 'human'")
        if side == previous:
            raise InvalidRecord("not_alternating", f"messages {turn - 1} and {turn} are both from {side!r}")
        previous = side
        text = message["value"]
        count = text.count(IMAGE_PLACEHOLDER)
        tag_count += count
        if count:
            # The original's preprocess_multimodal: drop every tag, strip, put the image first.
            text = text.replace(IMAGE_PLACEHOLDER, "").strip()
            content = [{"type": "image", "text": None}] + ([{"type": "text", "text": text}] if text else [])
        else:
            content = [{"type": "text", "text": text}]
        messages.append({"role": ROLE_MAP[side], "content": content})
    if previous == "human":
        raise InvalidRecord("ends_with_human", f"last message ({len(conversations) - 1}) is a question with no answer")
    if tag_count != len(images):
        raise InvalidRecord(
            "image_token_mismatch",
            f"{tag_count} '<image>' tag(s) in the text but {len(images)} image(s) in the record",
        )
    record_id = record.get("id")
    return {"id": "" if record_id is None else str(record_id), "images": images, "messages": messages}


def _features() -> datasets.Features:
    import datasets

    content = datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")})
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "images": datasets.List(datasets.Image()),
            "messages": datasets.List({"role": datasets.Value("string"), "content": content}),
        }
    )


def convert_robopoint_json(
    json_path: str | os.PathLike[str],
    image_folder: str | os.PathLike[str] | None,
    arrow_path: str | os.PathLike[str],
    *,
    on_invalid: Literal["error", "skip"] = "error",
    check_images: bool = True,
) -> LoadReport:
    """Stream a RoboPoint JSON list into an Arrow file of validated rows (see the module docstring).

    Args:
        json_path (`str` or `os.PathLike`): the RoboPoint JSON list.
        image_folder (`str` or `os.PathLike`, *optional*): folder the records' ``image`` paths are relative to.
        arrow_path (`str` or `os.PathLike`): output Arrow stream file (written atomically).
        on_invalid (`str`, *optional*, defaults to `"error"`): ``"error"`` raises at the first invalid record;
            ``"skip"`` drops it and counts it in the report.
        check_images (`bool`, *optional*, defaults to `True`): check every image file exists (one ``stat`` per
            record; turn off only if the folder is known to be complete and slow to list).

    Returns:
        [`LoadReport`]: records read, kept and skipped per reason.

    Raises:
        ValueError: on an invalid record with ``on_invalid="error"`` (naming file, record id, index and reason),
            on malformed JSON, or on an unknown ``on_invalid``.
    """
    import pyarrow as pa

    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    features = _features()
    schema = features.arrow_schema
    report = LoadReport(source=str(json_path))
    skipped: Counter[str] = Counter()
    arrow_path = Path(arrow_path)
    arrow_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=arrow_path.parent, prefix=arrow_path.name, suffix=".tmp")
    os.close(descriptor)
    try:
        with pa.OSFile(temporary, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            batch: list[dict[str, Any]] = []
            for index, record in enumerate(iter_json_array(json_path)):
                report.total += 1
                try:
                    row = record_to_row(record, image_folder, check_images=check_images)
                except InvalidRecord as error:
                    record_id = record.get("id") if isinstance(record, dict) else None
                    where = f"record {record_id!r} (index {index})"
                    if on_invalid == "error":
                        raise ValueError(f"{json_path}: {where}: {error.reason}: {error.detail}") from None
                    skipped[error.reason] += 1
                    examples = report.examples.setdefault(error.reason, [])
                    if len(examples) < _EXAMPLE_IDS_PER_REASON:
                        examples.append(f"{where}: {error.detail}")
                    continue
                if not row["id"]:
                    row["id"] = f"index:{index}"  # the original never used ids; keep rows addressable anyway
                # Already in Arrow's shape: an Image is stored as {"path", "bytes"}; skipping the generic
                # `features.encode_example` makes the conversion ~3x faster.
                row["images"] = [{"bytes": None, "path": image_path} for image_path in row["images"]]
                batch.append(row)
                if len(batch) == _ROWS_PER_BATCH:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch.clear()
                report.kept += 1
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        os.replace(temporary, arrow_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    report.skipped = dict(sorted(skipped.items()))
    return report


def _cache_key(json_path: Path, image_folder: Any, on_invalid: str, check_images: bool) -> str:
    """Fingerprint of the source file and options: a changed file or option means a fresh conversion."""
    stat = json_path.stat()
    parts = [_CACHE_VERSION, str(json_path.resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
    parts += [str(Path(image_folder).resolve()) if image_folder else "", on_invalid, str(check_images)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def load_robopoint_dataset(
    json_path: str | os.PathLike[str],
    image_folder: str | os.PathLike[str] | None = None,
    *,
    on_invalid: Literal["error", "skip"] = "error",
    check_images: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    return_report: bool = False,
) -> datasets.Dataset | tuple[datasets.Dataset, LoadReport]:
    """Load RoboPoint-format training data as a memory-mapped `datasets.Dataset` with lazily decoded images.

    The first call streams the JSON into ``<cache_dir>/<fingerprint>.arrow`` (plus the report next to it); later
    calls with the same file (same size and modification time) and options reuse it.

    Args:
        json_path (`str` or `os.PathLike`): the RoboPoint JSON list (e.g. ``robopoint_1432k.json``).
        image_folder (`str` or `os.PathLike`, *optional*): folder the ``image`` paths are relative to; ``None``
            uses them as written.
        on_invalid (`str`, *optional*, defaults to `"error"`): ``"error"`` or ``"skip"`` (see module docstring).
        check_images (`bool`, *optional*, defaults to `True`): check each image file exists.
        cache_dir (`str` or `os.PathLike`, *optional*): where the Arrow file goes; defaults to
            ``$HF_DATASETS_CACHE/robopoint_hf`` (``~/.cache/huggingface/datasets/robopoint_hf``).
        return_report (`bool`, *optional*, defaults to `False`): also return the [`LoadReport`].

    Returns:
        `datasets.Dataset` with columns ``id``, ``images``, ``messages`` (or ``(dataset, report)``).

    Raises:
        ValueError: see [`convert_robopoint_json`].

    Example:

    ```python
    >>> dataset, report = load_robopoint_dataset("robopoint_1432k.json", "images", on_invalid="skip",
    ...                                          return_report=True)  # doctest: +SKIP
    >>> dataset[0]["messages"][0]["content"][1]["text"]  # doctest: +SKIP
    'Find a few spots within the vacant area on the rightmost white plate. Your answer should be ...'
    ```
    """
    import datasets

    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"RoboPoint data file {str(json_path)!r} does not exist")
    if image_folder is not None and check_images and not Path(image_folder).is_dir():
        raise FileNotFoundError(f"image folder {str(image_folder)!r} does not exist")
    if cache_dir is None:
        cache_dir = Path(datasets.config.HF_DATASETS_CACHE) / "robopoint_hf"
    key = _cache_key(json_path, image_folder, on_invalid, check_images)
    arrow_path = Path(cache_dir) / f"{json_path.stem}-{key}.arrow"
    report_path = arrow_path.with_suffix(".report.json")
    if arrow_path.is_file() and report_path.is_file():
        report = LoadReport(**json.loads(report_path.read_text(encoding="utf-8")))
    else:
        report = convert_robopoint_json(
            json_path, image_folder, arrow_path, on_invalid=on_invalid, check_images=check_images
        )
        report_path.write_text(json.dumps(asdict(report), indent=1), encoding="utf-8")
    if report.skipped:
        examples = "; ".join(example for values in report.examples.values() for example in values[:1])
        logger.warning("%s. First example per reason: %s", report.summary(), examples)
    dataset = datasets.Dataset.from_file(str(arrow_path))
    return (dataset, report) if return_report else dataset


def write_robopoint_records(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write records as a RoboPoint JSON list, one record per line, streaming (never building the whole list).

    The output is valid JSON that the original ``json.load`` reads, and is byte-identical for identical input.
    The file is written to a temporary name and renamed, so readers never see half a file.

    Args:
        records (iterable of `dict`): RoboPoint records (``id``, optional ``image``, ``conversations``).
        path (`str` or `os.PathLike`): output file.

    Returns:
        `int`: the number of records written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    count = 0
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write("[")
        for record in records:
            handle.write(",\n" if count else "\n")
            handle.write(json.dumps(record, ensure_ascii=False))
            count += 1
        handle.write("\n]\n" if count else "]\n")
    os.replace(temporary, path)
    return count


def mix_robopoint_data(
    sources: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str] | None]], path: str | os.PathLike[str]
) -> list[int]:
    """Concatenate RoboPoint JSON lists into one training list: a data mixture.

    LLaVA and RoboPoint train on a mixture written out as ONE list (``robopoint_1432k.json`` is LLaVA's 665k
    instructions plus RoboPoint's own data) rather than sampling several files at run time; the trainer shuffles
    the rows. Records are copied unchanged (ids included: an error still names the file, the id and the index)
    except their ``image``, rewritten relative to the output file's folder so that the mixture trains with
    ``image_folder`` = that folder and no image is copied. Records are not validated here: the loader does that,
    naming the mixed file and the index.

    Args:
        sources (sequence of `(json_path, image_folder)`): the lists, in order, each with the folder its ``image``
            paths are relative to (``None``: relative to the working directory).
        path (`str` or `os.PathLike`): the mixed list to write.

    Returns:
        `list[int]`: the number of records taken from each source.
    """
    out_folder = Path(path).resolve().parent
    counts = [0] * len(sources)

    def records() -> Iterator[Any]:
        for index, (json_path, image_folder) in enumerate(sources):
            for record in iter_json_array(json_path):
                counts[index] += 1
                image = record.get("image") if isinstance(record, dict) else None
                if isinstance(image, str) and image:
                    located = Path(image_folder, image) if image_folder else Path(image)
                    record = {**record, "image": os.path.relpath(located.resolve(), out_folder)}
                yield record

    write_robopoint_records(records(), path)
    return counts


def make_pointing_record(
    record_id: str,
    image: str | None,
    question: str,
    points: Sequence[tuple[float, float]],
    *,
    decimals: int = 3,
) -> dict[str, Any]:
    """Build a single-turn RoboPoint pointing record, formatted exactly like the released training data.

    Args:
        record_id (`str`): the record id.
        image (`str`, *optional*): image path relative to the image folder; ``None`` for a text-only record.
        question (`str`): the instruction, without the answer-format sentence (it is appended here).
        points (sequence of `(x, y)`): answer points normalized to the image (0-1).
        decimals (`int`, *optional*, defaults to `3`): decimals per coordinate, as in RoboPoint's data.

    Returns:
        `dict`: ``{"id", "image", "conversations": [human, gpt]}``, human value
        ``"<image>\\n" + question + " " + ANSWER_FORMAT_SUFFIX``.
    """
    prompt = add_answer_format(question)
    record: dict[str, Any] = {"id": record_id}
    if image is not None:
        record["image"] = image
        prompt = f"{IMAGE_PLACEHOLDER}\n{prompt}"
    record["conversations"] = [
        {"from": "human", "value": prompt},
        {"from": "gpt", "value": format_points(points, decimals)},
    ]
    return record
