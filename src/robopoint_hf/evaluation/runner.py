"""Resumable, data-parallel answer generation on Where2Place-layout benchmarks, and score tables.

The original evaluation is two scripts: ``model_vqa.py`` writes one JSON line per question (``question_id, prompt,
text, answer_id, model_id, category``) and ``summarize_vqa.py`` scores the file. This module keeps that answer-file
format (so files from either side score with either scorer) and fixes what made long runs fragile:

* **Resumable.** Every answer line is written with one ``os.write`` and ``fsync``-ed before the next batch starts,
  so a killed run loses at most the batch in flight. Rerunning skips the question ids already in the file; a torn
  last line (killed mid-write) is cut off and its question asked again. The finished file is rewritten in question
  order, so an interrupted and resumed run ends with the same bytes as an uninterrupted one (under greedy decoding).
* **Data-parallel.** Under ``accelerate launch`` every process answers one contiguous shard of the questions into
  ``<output>.rank<r>``; the main process merges the shards into ``<output>`` in question order and deletes them.
  Shards are cut from ALL questions by position, never from "what is left", so processes need no shared view of
  the progress to agree on who answers what; a resume with another number of processes still skips everything
  already answered in any shard file.
* **Deterministic ids.** ``answer_id`` is a hash of model, question and answer instead of the original's random
  ``shortuuid``, which is what makes a resumed file identical to an uninterrupted one.
* **Any benchmark layout.** Questions are the records of `robopoint_hf.evaluation.benchmarks.load_benchmark` (Where2Place,
  RoboAfford-Eval, RefSpatial-Bench, Point-Bench in their own layouts) or `robopoint_hf.evaluation.where2place.load_questions`;
  ``category`` is optional (written as ``null`` when absent).

Generation goes through `RoboPointPipeline` (see `pipeline_answer_fn`); the runner itself only needs a function
from a batch of questions to answer texts, so other models (or canned answers in tests) plug in the same way.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from robopoint_hf.model.points import DEFAULT_MAX_NEW_TOKENS
from robopoint_hf.model.templates import IMAGE_PLACEHOLDER

from .where2place import PROTOCOLS, Where2PlaceQuestion, Where2PlaceResult

ANSWER_FIELDS = ("question_id", "prompt", "text", "answer_id", "model_id", "category")
"""Fields of an answer line, in the original ``model_vqa.py`` order."""

AnswerFn = Callable[[Sequence[Where2PlaceQuestion]], Sequence[str]]
"""Answers a batch of questions: one answer text per question, in order."""


class ProcessState(Protocol):
    """What the runner needs from `accelerate.PartialState` (tests pass a simulated one)."""

    process_index: int
    num_processes: int
    is_main_process: bool

    def wait_for_everyone(self) -> None: ...


# ------------------------------------------------------------------------------------------------- records


def recorded_prompt(text: str) -> str:
    """The ``prompt`` field the original wrote: the question, or what follows the first line if it has ``<image>``."""
    if IMAGE_PLACEHOLDER in text:
        return text.split("\n", 1)[1] if "\n" in text else text.replace(IMAGE_PLACEHOLDER, "").strip()
    return text


def make_answer_id(model_id: str, question_id: Any, prompt: str, text: str) -> str:
    """22 hex characters (the length of the original's ``shortuuid``), a function of what the line says.

    Deterministic so that reruns write identical lines; still unique per (model, question, answer).
    """
    key = json.dumps([model_id, question_id, prompt, text], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:22]


def make_record(question: Where2PlaceQuestion, text: str, model_id: str) -> dict[str, Any]:
    """One answer line in the original format."""
    prompt = recorded_prompt(question.text)
    return {
        "question_id": question.question_id,
        "prompt": prompt,
        "text": text,
        "answer_id": make_answer_id(model_id, question.question_id, prompt, text),
        "model_id": model_id,
        "category": question.category,
    }


def model_id_from_path(model: str | os.PathLike) -> str:
    """``model_id`` of an answer file: the folder or Hub name, with its parent for ``checkpoint-*`` folders."""
    path = Path(str(model).rstrip("/\\"))
    if path.name.startswith("checkpoint-") and path.parent.name:
        return f"{path.parent.name}_{path.name}"
    return path.name


# ------------------------------------------------------------------------------------------------ answer files


def read_answer_lines(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """Complete answer lines of a file that a killed run may have left behind.

    A last line without its newline, or that is not valid JSON, was torn by a kill mid-write: it is dropped and,
    with ``repair=True``, cut off the file (which is then ready to be appended to). Any other invalid line is
    corruption the runner did not cause and raises.

    Raises:
        ValueError: an invalid line before the last one, or a line that is not an answer object (names the line).
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")  # every line the runner wrote ends with "\n"; `tail` is a torn fragment
    keep = len(data) - len(tail)
    records: list[dict[str, Any]] = []
    offset = 0
    for number, raw in enumerate(complete, start=1):
        if raw.strip():
            try:
                record = json.loads(raw)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                if number == len(complete) and not tail.strip():
                    keep = offset  # torn last line
                    break
                raise ValueError(f"{path}, line {number}: not valid JSON ({e}); the file is corrupt") from e
            if not isinstance(record, dict) or "question_id" not in record or "text" not in record:
                raise ValueError(
                    f"{path}, line {number}: not an answer (needs 'question_id' and 'text'): {raw[:80]!r}"
                )
            records.append(record)
        offset += len(raw) + 1
    if repair and keep < len(data):
        with path.open("r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return records


class AnswerWriter:
    """Appends answer lines, each in a single ``os.write`` followed by ``fsync``, so a kill cannot lose a written one.

    Example:

    ```python
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "answers.jsonl")
    >>> with AnswerWriter(path) as writer:
    ...     writer.write({"question_id": 0, "text": "[(0.5, 0.5)]"})
    >>> open(path).read()
    '{"question_id": 0, "text": "[(0.5, 0.5)]"}\\n'
    ```
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> AnswerWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)  # the original crashed on bare file names; we create
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self

    def write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            raise RuntimeError("AnswerWriter.write outside of its `with` block")
        data = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def shard_bounds(num_items: int, num_processes: int, process_index: int) -> tuple[int, int]:
    """``[start, end)`` of process ``process_index``'s contiguous shard; sizes differ by at most one.

    Contiguous (not strided) so that questions about one image stay together and share its vision features inside
    a batch. Unlike the original ``get_chunk``, more processes than questions simply leaves some shards empty.
    """
    if num_processes < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"process_index must be in [0, {num_processes}), got {process_index}")
    base, extra = divmod(num_items, num_processes)
    start = process_index * base + min(process_index, extra)
    return start, start + base + (process_index < extra)


def shard_path(output: str | os.PathLike, process_index: int, num_processes: int) -> Path:
    """Where one process appends its answers: the output itself for a single process, else ``<output>.rank<r>``."""
    output = Path(output)
    return output if num_processes == 1 else output.with_name(f"{output.name}.rank{process_index}")


def answer_files_of(output: str | os.PathLike) -> list[Path]:
    """The output and every shard file of it that exists (shards of any earlier number of processes included)."""
    output = Path(output)
    prefix = f"{output.name}.rank"
    shards = []
    if output.parent.is_dir():
        for path in output.parent.iterdir():  # not glob: the output name may hold glob characters
            rank = path.name[len(prefix) :]
            if path.name.startswith(prefix) and rank.isdigit() and path.is_file():
                shards.append((int(rank), path))
    return ([output] if output.is_file() else []) + [path for _, path in sorted(shards)]


def _questions_by_id(questions: Sequence[Where2PlaceQuestion]) -> dict[Any, int]:
    positions: dict[Any, int] = {}
    for position, question in enumerate(questions):
        key = _id_key(question.question_id)
        if key in positions:
            raise ValueError(
                f"question_id {question.question_id!r} appears twice in the question file (positions "
                f"{positions[key]} and {position}); answers are matched by question_id, so ids must be unique"
            )
        positions[key] = position
    return positions


def _id_key(question_id: Any) -> str:
    # JSON round-trips ids as they were; the key keeps 1 and "1" apart and makes lists/dicts hashable.
    return json.dumps(question_id, sort_keys=True)


def question_seed(seed: int, question_id: Any) -> int:
    """``seed + crc32(question id)``: a sampling seed per question, the same whatever the order, batch or resume."""
    return seed + zlib.crc32(_id_key(question_id).encode("utf-8"))


def collect_answers(
    questions: Sequence[Where2PlaceQuestion],
    output: str | os.PathLike,
    *,
    model_id: str | None = None,
    repair: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Answers already written for ``output`` (the file and its shards), by question-id key.

    Args:
        repair (`Path`, *optional*): the one file this process owns and may cut a torn last line from.

    Raises:
        ValueError: an answer for an unknown question, of another model, or two different answers to one question.
    """
    known = _questions_by_id(questions)
    found: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    for path in answer_files_of(output):
        for record in read_answer_lines(path, repair=path == repair):
            key = _id_key(record["question_id"])
            if key not in known:
                raise ValueError(
                    f"{path} holds an answer to question_id {record['question_id']!r}, which is not in the question "
                    "file: it belongs to another benchmark; choose another --output"
                )
            if model_id is not None and record.get("model_id") != model_id:
                raise ValueError(
                    f"{path} holds answers of model {record.get('model_id')!r}, not {model_id!r}; resuming would mix "
                    "two models in one file. Choose another --output, or --overwrite to start over"
                )
            if key in found and found[key] != record:
                raise ValueError(
                    f"question_id {record['question_id']!r} has two different answers, in {origin[key]} and {path}"
                )
            found.setdefault(key, record)
            origin.setdefault(key, path)
    return found


def image_key(image: Any) -> Any:
    """What `image_batches` groups by: the resolved path of an image file, the content of a decoded image."""
    if isinstance(image, (str, os.PathLike)):
        return str(Path(image).resolve())
    if hasattr(image, "tobytes"):
        digest = hashlib.blake2b(image.tobytes(), digest_size=16).digest()
        return (getattr(image, "mode", None), getattr(image, "shape", None) or getattr(image, "size", None), digest)
    return id(image)


def image_batches(
    questions: Sequence[Where2PlaceQuestion], batch_size: int
) -> Iterator[Sequence[Where2PlaceQuestion]]:
    """``questions`` in order, in batches of at most ``batch_size``, a run of questions about one image in batches of
    its own: a batch that shows one image is decoded on one copy of its prefix (``generate(share_prefix=True)``),
    where a batch mixing images runs every row on its own prompt."""
    pending: list[Where2PlaceQuestion] = []
    for _, run in itertools.groupby(questions, key=lambda question: image_key(question.image)):
        run = list(run)
        if len(run) == 1:
            pending += run
            if len(pending) == batch_size:
                yield pending
                pending = []
            continue
        if pending:
            yield pending
            pending = []
        for first in range(0, len(run), batch_size):
            yield run[first : first + batch_size]
    if pending:
        yield pending


def generate_answers(
    questions: Sequence[Where2PlaceQuestion],
    answer_fn: AnswerFn,
    output: str | os.PathLike,
    *,
    model_id: str,
    batch_size: int = 1,
    process_index: int = 0,
    num_processes: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Answer this process's shard of ``questions`` that no answer file of ``output`` answers yet.

    Safe to kill at any time and to call again (see the module docstring). Does not merge: see `merge_answers`.

    Args:
        questions (`Sequence[Where2PlaceQuestion]`): all questions, in file order (every process passes the same).
        answer_fn (`AnswerFn`): batch of questions -> answer texts, e.g. `pipeline_answer_fn`.
        output (`str` or `os.PathLike`): the answer file.
        model_id (`str`): written into every line; answers of another model_id in the file are refused.
        batch_size (`int`, *optional*, defaults to 1): questions per `answer_fn` call (and per fsync).
        process_index, num_processes (`int`, *optional*): this process's rank and the world size.
        progress (`Callable[[int, int], None]`, *optional*): called with (answered, to answer) after each batch.

    Returns:
        `int`: the number of answers written by this call.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    own = shard_path(output, process_index, num_processes)
    done = collect_answers(questions, output, model_id=model_id, repair=own)
    start, end = shard_bounds(len(questions), num_processes, process_index)
    todo = [q for q in questions[start:end] if _id_key(q.question_id) not in done]
    if not todo:
        return 0
    written = 0
    with AnswerWriter(own) as writer:
        for batch in image_batches(todo, batch_size):
            texts = list(answer_fn(batch))
            if len(texts) != len(batch):
                raise ValueError(f"answer_fn returned {len(texts)} answers for {len(batch)} questions")
            for question, text in zip(batch, texts, strict=True):
                if not isinstance(text, str):
                    raise TypeError(
                        f"question {question.question_id!r}: answer must be a str, got {type(text).__name__}"
                    )
                writer.write(make_record(question, text, model_id))
            written += len(batch)
            if progress is not None:
                progress(written, len(todo))
    return written


def merge_answers(questions: Sequence[Where2PlaceQuestion], output: str | os.PathLike) -> list[dict[str, Any]]:
    """Write ``output`` with one answer per question in question order, from the file and its shards; drop shards.

    The new file replaces the old one atomically (``os.replace`` of an fsync-ed temporary file), and shards are
    deleted only afterwards: a kill at any point leaves answers that a rerun merges again (duplicates between the
    output and a shard are identical lines, kept once).

    Raises:
        ValueError: some questions have no answer (names them; rerun to resume).
    """
    output = Path(output)
    found = collect_answers(questions, output)
    missing = [q.question_id for q in questions if _id_key(q.question_id) not in found]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(questions)} questions have no answer in {output} or its shards "
            f"(first: {missing[:10]}); rerun the same command to answer them"
        )
    records = [found[_id_key(q.question_id)] for q in questions]
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    shards = [p for p in answer_files_of(output) if p != output]
    if not shards and output.is_file() and output.read_bytes() == payload:
        return records
    temporary = output.with_name(f"{output.name}.merging")
    with temporary.open("wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, output)
    for shard in shards:
        shard.unlink()
    return records


def remove_answers(output: str | os.PathLike) -> None:
    """Delete the output and its shard files (``--overwrite``)."""
    for path in answer_files_of(output):
        path.unlink()


def run_answers(
    questions: Sequence[Where2PlaceQuestion],
    answer_fn: AnswerFn,
    output: str | os.PathLike,
    *,
    model_id: str,
    batch_size: int = 1,
    overwrite: bool = False,
    state: ProcessState | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]] | None:
    """`generate_answers` on every process, then `merge_answers` on the main one.

    Args:
        state (`ProcessState`, *optional*): defaults to `accelerate.PartialState()` (one process without a launcher).

    Returns:
        the merged records on the main process, `None` on the others.
    """
    if state is None:
        from accelerate import PartialState

        state = PartialState()
    if overwrite and state.is_main_process:
        remove_answers(output)
    state.wait_for_everyone()
    generate_answers(
        questions,
        answer_fn,
        output,
        model_id=model_id,
        batch_size=batch_size,
        process_index=state.process_index,
        num_processes=state.num_processes,
        progress=progress,
    )
    state.wait_for_everyone()
    records = merge_answers(questions, output) if state.is_main_process else None
    state.wait_for_everyone()
    return records


# ----------------------------------------------------------------------------------------------- generation


def instruction_of(text: str) -> str:
    """The instruction to give the pipeline for a question text.

    ``model_vqa.py`` put a question into the prompt template whether or not it started with ``<image>\\n``; the
    pipeline uses text containing ``<image>`` verbatim as a complete prompt. Dropping a leading ``<image>\\n`` makes
    both render the same prompt; ``<image>`` elsewhere is left for the pipeline to use verbatim.
    """
    head = IMAGE_PLACEHOLDER + "\n"
    return text[len(head) :] if text.startswith(head) else text


def generation_kwargs(
    *,
    temperature: float = 0.0,
    top_p: float | None = None,
    num_beams: int = 1,
    max_new_tokens: int | None = DEFAULT_MAX_NEW_TOKENS,
) -> dict[str, Any]:
    """``generate`` arguments from the command-line decoding options.

    ``temperature=0`` is greedy (our default: deterministic and resumable to identical bytes). The original
    evaluation sampled unseeded with ``temperature=0.2`` (and HF's default top-k 50, no top-p) and hard-coded
    ``max_new_tokens=1024``; ``temperature=0.2`` plus a seed reproduces that style, reproducibly. The default
    length is `~robopoint_hf.model.points.DEFAULT_MAX_NEW_TOKENS`, the pipeline's.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    kwargs: dict[str, Any] = {"do_sample": temperature > 0, "num_beams": num_beams}
    if temperature > 0:
        kwargs["temperature"] = temperature
        if top_p is not None:
            kwargs["top_p"] = top_p
    elif top_p is not None:
        raise ValueError("top_p only applies to sampling; give --temperature > 0 as well")
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    return kwargs


def pipeline_answer_fn(
    pipe: Any,
    *,
    batch_size: int = 1,
    seed: int | None = None,
    answer_format: bool = False,
    constrained: bool = False,
    **generate_kwargs: Any,
) -> AnswerFn:
    """An `AnswerFn` that asks a `RoboPointPipeline`.

    Args:
        pipe (`RoboPointPipeline`): the pipeline (its processor's prompt template is used).
        batch_size (`int`, *optional*, defaults to 1): rows per ``generate`` call.
        seed (`int`, *optional*): when sampling, each batch is seeded with ``seed + crc32(first question id)``, so
            with ``batch_size=1`` a question's sampled answer does not depend on resumes or the number of processes.
        answer_format (`bool`, *optional*, defaults to `False`): append RoboPoint's answer-format sentence. Off
            because benchmark questions are used as written (as ``model_vqa.py`` did); Where2Place questions
            already end with it, and the pipeline never adds it twice.
        constrained (`bool`, *optional*, defaults to `False`): decode in the answer language and end at the closing
            ``]`` (the pipeline's default). Off so that published numbers reproduce: free text, to ``max_new_tokens``.
            Rows of one batch that ask about the same image share its prefix either way.
        **generate_kwargs: passed to the pipeline call (see `generation_kwargs`).
    """

    def answer(questions: Sequence[Where2PlaceQuestion]) -> list[str]:
        if seed is not None:
            from transformers import set_seed

            set_seed(question_seed(seed, questions[0].question_id))
        outputs = pipe(
            [q.image if hasattr(q.image, "size") else str(q.image) for q in questions],  # decoded (parquet/zip)
            [instruction_of(q.text) for q in questions],
            batch_size=batch_size,
            answer_format=answer_format,
            constrained=constrained,
            stop_at_answer_end=constrained,
            **generate_kwargs,
        )
        return [output["text"] for output in outputs]

    return answer


# ------------------------------------------------------------------------------------------------ score tables


def default_labels(answer_files: Sequence[str | os.PathLike]) -> list[str]:
    """One label per answer file: its stem, or more of its path when stems collide."""
    stems = [Path(f).stem for f in answer_files]
    if len(set(stems)) == len(stems):
        return stems
    return [str(f) for f in answer_files]


def format_score_table(
    labels: Sequence[str], results: Sequence[dict[str, Where2PlaceResult]], protocols: Sequence[str]
) -> str:
    """Accuracy (%) of every model under every protocol, with the answer counts behind them.

    ``unparsed`` are answers with no readable tuple (0 under ``strict``, left out of the mean under ``original``),
    ``empty`` readable answers with no point, ``skipped`` the questions ``original`` left out.
    """
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    width = max([len("model"), *(len(label) for label in labels)])
    columns = [f"{p:>{max(9, len(p))}}" for p in protocols]
    header = f"{'model':<{width}}  {'n':>4}  " + "  ".join(columns) + f"  {'unparsed':>8}  {'empty':>5}"
    if "original" in protocols:
        header += f"  {'skipped':>7}"
    lines = [header, "-" * len(header)]
    for label, by_protocol in zip(labels, results, strict=True):
        first = by_protocol[protocols[0]]
        cells = [f"{100 * by_protocol[p].accuracy:>{max(9, len(p))}.2f}" for p in protocols]
        line = f"{label:<{width}}  {first.num_questions:>4}  " + "  ".join(cells)
        line += f"  {first.num_failed:>8}  {first.num_empty:>5}"
        if "original" in protocols:
            line += f"  {by_protocol['original'].num_skipped:>7}"
        lines.append(line)
    categories = sorted({c for r in results for p in protocols for c in r[p].per_category})
    if categories:
        lines += ["", "per category (%):"]
        lines.append(f"{'model':<{width}}  {'protocol':<13}  " + "  ".join(f"{c:>9}" for c in categories))
        for label, by_protocol in zip(labels, results, strict=True):
            for p in protocols:
                cells = [by_protocol[p].per_category.get(c, math.nan) for c in categories]
                lines.append(f"{label:<{width}}  {p:<13}  " + "  ".join(f"{100 * v:>9.2f}" for v in cells))
    lines.append("")
    lines.append("accuracy = mean over questions of the fraction of predicted points inside the free-space mask")
    lines.append(f"unparsed/empty: answers as read by the {protocols[0]!r} protocol's grammar")
    if "original" in protocols:
        lines.append(
            "original: the original scorer's rules, which read every answer on a 640x480 image whatever its size"
        )
    return "\n".join(lines)


def scores_to_dict(
    labels: Sequence[str], answer_files: Sequence[str | os.PathLike], results: Sequence[dict[str, Where2PlaceResult]]
) -> dict[str, Any]:
    """JSON-ready ``{label: {"answer_file", protocol: Where2PlaceResult.to_dict()}}``."""
    return {
        label: {"answer_file": str(path), **{p: r.to_dict() for p, r in by_protocol.items()}}
        for label, path, by_protocol in zip(labels, answer_files, results, strict=True)
    }


__all__ = [
    "ANSWER_FIELDS",
    "AnswerFn",
    "AnswerWriter",
    "ProcessState",
    "answer_files_of",
    "collect_answers",
    "default_labels",
    "format_score_table",
    "generate_answers",
    "generation_kwargs",
    "instruction_of",
    "make_answer_id",
    "make_record",
    "merge_answers",
    "model_id_from_path",
    "pipeline_answer_fn",
    "question_seed",
    "read_answer_lines",
    "recorded_prompt",
    "remove_answers",
    "run_answers",
    "scores_to_dict",
    "shard_bounds",
    "shard_path",
]
