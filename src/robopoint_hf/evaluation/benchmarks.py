"""Pointing benchmarks read in their own published layouts, as one record type.

Every benchmark ships its questions differently; users should not have to convert them. `load_benchmark` reads a
folder as downloaded and returns `BenchmarkRecord`s (question id, image, instruction, mask, category):

=================  ========================================================================================
benchmark          layouts read (as published)
=================  ========================================================================================
``where2place``    RoboPoint's ``point_questions.jsonl`` + ``images/`` + ``masks/NN.jpg`` (by line), or the
                   Hugging Face dataset ``FlagEval/Where2Place`` that lmms-eval uses (``data/test-*.parquet``:
                   ``question_id, question, question_type, image, mask``)
``roboafford``     RoboAfford-Eval: ``annotations_normxy.json`` / ``annotations_absxy.json`` (a JSON array of
                   ``category, question, answer, img, mask``), ``images/``, ``masks/`` (named PNG and JPG files)
``refspatial``     RefSpatial-Bench raw files (``Location/ Placement/ Unseen/``, each ``question.json`` +
                   ``image/`` + ``mask/``) or its parquet (``data/{location,placement,unseen}-*.parquet``)
``pointbench``     PointArena's Point-Bench: ``data.json`` (``image_filename, user_input, category, count,
                   mask_filename``) with ``selected_images.zip`` + ``selected_masks.zip`` (the Hugging Face
                   dataset ``PointArena/pointarena-data``), or ``images/<category>/`` + ``masks/`` folders
=================  ========================================================================================

A benchmark without question ids (RoboAfford-Eval, Point-Bench) numbers its questions by position in its own
annotation file, as lmms-eval does. Bad files fail with the file and record named.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

BENCHMARKS: tuple[str, ...] = ("where2place", "roboafford", "refspatial", "pointbench")
REFSPATIAL_SPLITS: tuple[str, ...] = ("location", "placement", "unseen")
ROBOAFFORD_ANNOTATIONS = {"normxy": "annotations_normxy.json", "absxy": "annotations_absxy.json"}
"""RoboAfford-Eval's two question files: same questions, asking for normalized or pixel answers."""

ImageRef = Path | Image.Image


@dataclass(frozen=True)
class BenchmarkRecord:
    """One question of a pointing benchmark.

    Args:
        question_id: the benchmark's id (its position in the annotation file where it has none).
        image (`Path` or `PIL.Image.Image`): the image file, or the decoded image for parquet/zip layouts.
        instruction (`str`): the question as the benchmark writes it.
        mask (`Path`, `PIL.Image.Image` or `None`): the reference region, in its stored form (scorers differ in how
            they read RGB, palette and JPEG masks, so it is not converted here).
        category (`str`, *optional*): the benchmark's category (or split) of the question.
        benchmark (`str`): which benchmark it belongs to.
        extra (`dict`): other fields a scorer or prompt needs (Point-Bench ``count``, RefSpatial ``object``,
            ``prompt``, ``suffix``, ``step``, RoboAfford ``answer``).
    """

    question_id: Any
    image: ImageRef
    instruction: str
    mask: ImageRef | None
    category: str | None = None
    benchmark: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The instruction (the name the answer files and the runner use)."""
        return self.instruction

    def open_image(self) -> Image.Image:
        """The image, decoded."""
        if isinstance(self.image, Image.Image):
            return self.image
        with Image.open(self.image) as image:
            image.load()
            return image

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the image."""
        if isinstance(self.image, Image.Image):
            return self.image.size
        with Image.open(self.image) as image:
            return image.size

    @property
    def image_name(self) -> str:
        """A file-like name of the image (for plots and logs)."""
        if isinstance(self.image, Path):
            return self.image.name
        return str(self.extra.get("image_name", self.question_id))


# ---------------------------------------------------------------------------------------------- detection


def detect_benchmark(data_dir: str | os.PathLike) -> str:
    """The benchmark whose published layout ``data_dir`` has (see the module table).

    Raises:
        ValueError: no known layout (names what was looked for).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark folder {root} does not exist")
    if (root / "point_questions.jsonl").is_file() or list((root / "data").glob("test-*.parquet")):
        return "where2place"
    if any((root / name).is_file() for name in ROBOAFFORD_ANNOTATIONS.values()):
        return "roboafford"
    if (root / "question.json").is_file() or any(
        (root / split.capitalize() / "question.json").is_file() for split in REFSPATIAL_SPLITS
    ):
        return "refspatial"
    if any(list((root / "data").glob(f"{split}-*.parquet")) for split in REFSPATIAL_SPLITS):
        return "refspatial"
    if (root / "data.json").is_file():
        return "pointbench"
    raise ValueError(
        f"{root}: not a known benchmark layout (looked for point_questions.jsonl, data/test-*.parquet, "
        "annotations_normxy.json, question.json, Location/question.json, data/location-*.parquet, data.json); "
        f"pass --benchmark with one of {', '.join(BENCHMARKS)}"
    )


def load_benchmark(
    data_dir: str | os.PathLike,
    benchmark: str | None = None,
    *,
    split: str | None = None,
    question_file: str = "point_questions.jsonl",
) -> list[BenchmarkRecord]:
    """Read a benchmark folder in its own layout.

    Args:
        data_dir (`str` or `os.PathLike`): the folder as downloaded.
        benchmark (`str`, *optional*): one of `BENCHMARKS`; detected from the layout when omitted.
        split (`str`, *optional*): RefSpatial-Bench: ``location``, ``placement`` or ``unseen`` (default: all, ids
            ``"<split>/<id>"``); RoboAfford-Eval: ``normxy`` (default) or ``absxy``.
        question_file (`str`, *optional*): Where2Place's question file.
    """
    benchmark = benchmark or detect_benchmark(data_dir)
    root = Path(data_dir)
    if benchmark == "where2place":
        if (root / question_file).is_file():
            return _where2place(root, question_file)
        return _where2place_parquet(root)
    if benchmark == "roboafford":
        return _roboafford(root, split or "normxy")
    if benchmark == "refspatial":
        return _refspatial(root, split)
    if benchmark == "pointbench":
        return _pointbench(root)
    raise ValueError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {benchmark!r}")


# ------------------------------------------------------------------------------------------------ readers


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from e


def _read_question_array(path: Path) -> list:
    """The JSON array of questions in ``path`` (RoboAfford-Eval, RefSpatial-Bench, Point-Bench annotations)."""
    data = _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of questions")
    return data


def _fields(record: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in keys:
        if key not in record:
            raise ValueError(f"{where}: missing field {key!r}")


def _existing(path: Path, what: str, where: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {what} {path} is missing")
    return path


def _where2place(root: Path, question_file: str) -> list[BenchmarkRecord]:
    from .where2place import load_questions

    return [
        BenchmarkRecord(q.question_id, q.image, q.text, q.mask, q.category, "where2place")
        for q in load_questions(root, question_file)
    ]


def _parquet_rows(paths: list[Path]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for path in sorted(paths):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def _hf_image(value: Any, where: str) -> Image.Image:
    """A `datasets.Image` cell (``{"bytes", "path"}``) decoded."""
    if not isinstance(value, dict) or not value.get("bytes"):
        raise ValueError(f"{where}: expected an image cell with bytes, got {type(value).__name__}")
    with Image.open(io.BytesIO(value["bytes"])) as image:
        image.load()
        return image


def _where2place_parquet(root: Path) -> list[BenchmarkRecord]:
    paths = list((root / "data").glob("test-*.parquet"))
    if not paths:
        raise FileNotFoundError(f"{root}: neither point_questions.jsonl nor data/test-*.parquet")
    records = []
    for position, row in enumerate(_parquet_rows(paths)):
        where = f"{root / 'data'} row {position}"
        _fields(row, ("question_id", "question", "image", "mask"), where)
        records.append(
            BenchmarkRecord(
                question_id=row["question_id"],
                image=_hf_image(row["image"], f"{where} image"),
                instruction=row["question"],
                mask=_hf_image(row["mask"], f"{where} mask"),
                category=row.get("question_type"),
                benchmark="where2place",
            )
        )
    return records


def _roboafford(root: Path, split: str) -> list[BenchmarkRecord]:
    if split not in ROBOAFFORD_ANNOTATIONS:
        raise ValueError(f"RoboAfford-Eval split must be one of {', '.join(ROBOAFFORD_ANNOTATIONS)}, got {split!r}")
    path = root / ROBOAFFORD_ANNOTATIONS[split]
    data = _read_question_array(path)
    records = []
    for position, item in enumerate(data):
        where = f"{path}, question {position}"
        _fields(item, ("question", "img", "mask"), where)
        records.append(
            BenchmarkRecord(
                question_id=position,
                image=_existing(_first_file(root, ("images", ""), item["img"]), "image", where),
                instruction=item["question"],
                mask=_existing(_first_file(root, ("masks", ""), item["mask"]), "mask", where),
                category=item.get("category"),
                benchmark="roboafford",
                extra={"answer": item.get("answer")},
            )
        )
    return records


def _first_file(root: Path, folders: tuple[str, ...], name: str) -> Path:
    # RoboAfford's evaluation.py joins names to one --data_dir; its repository keeps images/ and masks/ apart.
    candidates = [root / folder / name for folder in folders]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _refspatial(root: Path, split: str | None) -> list[BenchmarkRecord]:
    if split is not None and split.lower() not in REFSPATIAL_SPLITS:
        raise ValueError(f"RefSpatial-Bench split must be one of {', '.join(REFSPATIAL_SPLITS)}, got {split!r}")
    if (root / "question.json").is_file():  # one split's folder
        return _refspatial_raw(root, root.name.lower(), prefix=False)
    splits = [split.lower()] if split else list(REFSPATIAL_SPLITS)
    prefix = len(splits) > 1
    records: list[BenchmarkRecord] = []
    for name in splits:
        folder = root / name.capitalize()
        if (folder / "question.json").is_file():
            records += _refspatial_raw(folder, name, prefix)
        elif list((root / "data").glob(f"{name}-*.parquet")):
            records += _refspatial_parquet(root, name, prefix)
        elif split is not None:
            raise FileNotFoundError(f"{root}: no {name.capitalize()}/question.json nor data/{name}-*.parquet")
    if not records:
        raise FileNotFoundError(f"{root}: no RefSpatial-Bench split found")
    return records


def _refspatial_instruction(item: dict[str, Any]) -> str:
    # What RoboRefer's test_benchmark.py asks RoboPoint-style models: the prompt, then the answer-format suffix.
    return f"{item['prompt']} {item['suffix']}"


def _refspatial_raw(folder: Path, split: str, prefix: bool) -> list[BenchmarkRecord]:
    path = folder / "question.json"
    data = _read_question_array(path)
    records = []
    for position, item in enumerate(data):
        where = f"{path}, question {position}"
        _fields(item, ("id", "prompt", "suffix", "rgb_path", "mask_path"), where)
        records.append(
            BenchmarkRecord(
                question_id=f"{split}/{item['id']}" if prefix else item["id"],
                image=_existing(folder / item["rgb_path"], "image", where),
                instruction=_refspatial_instruction(item),
                mask=_existing(folder / item["mask_path"], "mask", where),
                category=item.get("category", split),
                benchmark="refspatial",
                extra={k: item.get(k) for k in ("object", "prompt", "suffix", "step")} | {"split": split},
            )
        )
    return records


def _refspatial_parquet(root: Path, split: str, prefix: bool) -> list[BenchmarkRecord]:
    records = []
    for position, row in enumerate(_parquet_rows(list((root / "data").glob(f"{split}-*.parquet")))):
        where = f"{root / 'data'} {split} row {position}"
        _fields(row, ("id", "image", "mask", "prompt", "suffix"), where)
        records.append(
            BenchmarkRecord(
                question_id=f"{split}/{row['id']}" if prefix else row["id"],
                image=_hf_image(row["image"], f"{where} image"),
                instruction=_refspatial_instruction(row),
                mask=_hf_image(row["mask"], f"{where} mask"),
                category=split,
                benchmark="refspatial",
                extra={k: row.get(k) for k in ("object", "prompt", "suffix", "step")} | {"split": split},
            )
        )
    return records


def _zip_member(archive: zipfile.ZipFile, name: str) -> Image.Image | None:
    by_base = {info.filename.rsplit("/", 1)[-1]: info.filename for info in archive.infolist()}
    member = by_base.get(name)
    if member is None:
        return None
    with archive.open(member) as stream, Image.open(io.BytesIO(stream.read())) as image:
        image.load()
        return image


def _pointbench(root: Path) -> list[BenchmarkRecord]:
    path = root / "data.json"
    data = _read_question_array(path)
    zipped = (root / "selected_images.zip").is_file()
    images = zipfile.ZipFile(root / "selected_images.zip") if zipped else None
    masks = zipfile.ZipFile(root / "selected_masks.zip") if (root / "selected_masks.zip").is_file() else None
    try:
        records = []
        for position, item in enumerate(data):
            where = f"{path}, question {position}"
            _fields(item, ("image_filename", "user_input"), where)
            category = item.get("category")
            if images is not None:
                image: ImageRef | None = _zip_member(images, item["image_filename"])
                if image is None:
                    raise FileNotFoundError(f"{where}: {item['image_filename']} is not in selected_images.zip")
            else:
                image = _existing(root / "images" / (category or "") / item["image_filename"], "image", where)
            mask_name = item.get("mask_filename")
            if masks is not None:
                mask = _zip_member(masks, mask_name) if mask_name else None
            else:
                mask = root / "masks" / mask_name if mask_name and (root / "masks" / mask_name).is_file() else None
            records.append(
                BenchmarkRecord(
                    question_id=position,
                    image=image,
                    instruction=item["user_input"],
                    mask=mask,
                    category=category,
                    benchmark="pointbench",
                    extra={"count": item.get("count"), "image_name": item["image_filename"]},
                )
            )
        return records
    finally:
        for archive in (images, masks):
            if archive is not None:
                archive.close()


__all__ = ["BENCHMARKS", "REFSPATIAL_SPLITS", "BenchmarkRecord", "detect_benchmark", "load_benchmark"]
