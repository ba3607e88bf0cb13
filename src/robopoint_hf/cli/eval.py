"""``robopoint eval`` -- answer a benchmark with a model, score answer files, and tabulate score files.

Needs the ``eval`` extra for ``--visualize`` (matplotlib): ``pip install "robopoint_hf[eval]"``.

Examples::

    # answer all questions (greedy), print strict and original scores; rerun the same command to resume
    robopoint eval where2place --model ./robopoint-13b --data-dir where2place --output answers/robopoint-13b.jsonl

    # the published protocol: original eval template and unseeded-style sampling, made reproducible by a seed
    robopoint eval where2place --model ./robopoint-13b --data-dir where2place --output answers/r13b-t02.jsonl \\
        --prompt-template llava_v1 --temperature 0.2 --seed 0

    # data-parallel: every process answers a shard into answers.jsonl.rank<r>; the main process merges them
    accelerate launch --num_processes 4 -m robopoint_hf.cli eval where2place --model ./robopoint-13b \\
        --data-dir where2place --output answers/robopoint-13b.jsonl --batch-size 8

    # a model served by any OpenAI-compatible server (vLLM, SGLang, TGI, transformers serve, robopoint serve): 8 at a time
    robopoint eval where2place --endpoint http://127.0.0.1:8000/v1 --endpoint-model robopoint-13b-llava \\
        --data-dir where2place --output answers/r13b-vllm.jsonl --concurrency 8

    # score and compare existing answer files (also those of the original model_vqa.py), with pictures
    robopoint eval score --answers answers/robopoint-13b.jsonl answers/gpt4o.jsonl --data-dir where2place \\
        --protocols strict original micro --visualize plots/

    # another benchmark in its own layout (detected), another model's answer format, published scorers, a leaderboard
    robopoint eval score --answers molmo.jsonl --data-dir RefSpatial-Bench --split placement --answer-format molmo \\
        --protocols strict roborefer lmms_eval --json scores.json --leaderboard board/

    # one leaderboard of models x benchmarks x protocols from the score files of several runs
    robopoint eval leaderboard scores/*.json --output-dir board/

Benchmark folders are read in their published layouts (``robopoint_hf.evaluation.benchmarks``: Where2Place, RoboAfford-Eval,
RefSpatial-Bench, Point-Bench); ``eval run`` is another name for ``eval where2place``. Decoding is greedy by default (deterministic; a resumed
run gives the same file); the original evaluation sampled at temperature 0.2 without a seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field

from robopoint_hf.dtypes import DEFAULT_DTYPES
from robopoint_hf.evaluation.answer_formats import ANSWER_FORMATS
from robopoint_hf.evaluation.benchmarks import BENCHMARKS
from robopoint_hf.evaluation.endpoint import DEFAULT_CONCURRENCY, DEFAULT_MAX_RETRIES, DEFAULT_REQUEST_TIMEOUT
from robopoint_hf.evaluation.leaderboard import ALL_PROTOCOLS as PROTOCOLS
from robopoint_hf.model.points import DEFAULT_MAX_NEW_TOKENS
from robopoint_hf.model.templates import TEMPLATE_NAMES

from .errors import UsageError
from .options import GenerationOptions, OutputDirOptions, add_dataclass_arguments, positive_int
from .predict import DEFAULT_MODEL, add_loading_arguments, quantization_bits
from .quiet import silence_progress_bars

__all__ = [
    "EvalBootstrapArguments",
    "EvalEndpointArguments",
    "EvalRunArguments",
    "EvalScoreArguments",
    "EvalScoringArguments",
    "add_parser",
    "run",
    "run_leaderboard",
    "run_score",
    "run_where2place",
]

DEFAULT_PROTOCOLS = ("strict", "original")


def _question_ids(text: str) -> list[str]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError(f"expected comma-separated question ids, got {text!r}")
    return ids


@dataclass(kw_only=True)
class EvalScoringArguments:
    """How ``eval where2place`` and ``eval score`` read a benchmark and report its scores."""

    data_dir: str = field(metadata={"help": "benchmark folder, in the benchmark's own published layout"})
    benchmark: str | None = field(
        default=None,
        metadata={
            "help": "which benchmark --data-dir holds (default: detected from its layout)",
            "choices": BENCHMARKS,
        },
    )
    split: str | None = field(
        default=None,
        metadata={
            "help": "RefSpatial-Bench: location, placement or unseen (default: all); RoboAfford-Eval: normxy or absxy"
        },
    )
    answer_format: str = field(
        default="robopoint",
        metadata={"help": "how the answers write points (default: %(default)s)", "choices": ANSWER_FORMATS},
    )
    question_file: str = field(
        default="point_questions.jsonl",
        metadata={"help": "question file inside --data-dir (default: %(default)s)"},
    )
    protocols: list[str] = field(
        default_factory=lambda: list(DEFAULT_PROTOCOLS),
        metadata={
            "help": f"scoring protocols to report, of {', '.join(PROTOCOLS)} (default: strict original)",
            "choices": PROTOCOLS,
            "metavar": "PROTOCOL",
        },
    )
    visualize: str | None = field(
        default=None,
        metadata={"help": "write one PNG per question and summary.png here", "metavar": "OUT_DIR"},
    )
    json: str | None = field(
        default=None,
        metadata={
            "help": "write every score (per question too) here",
            "metavar": "FILE",
            "aliases": ("--save-scores",),
        },
    )
    leaderboard: str | None = field(
        default=None,
        metadata={
            "help": "write leaderboard.md/.csv/.json (per category, bootstrap 95%% CI)",
            "metavar": "OUT_DIR",
        },
    )


@dataclass
class EvalBootstrapArguments:
    """The leaderboard's 95 % percentile-bootstrap intervals (``eval where2place``, ``score``, ``leaderboard``)."""

    bootstrap: int = field(
        default=1000, metadata={"help": "bootstrap resamples for the intervals (default: %(default)s)"}
    )
    bootstrap_seed: int = field(default=0, metadata={"help": "seed of the bootstrap (default: 0)"})


@dataclass(kw_only=True)
class EvalRunArguments:
    """The options of ``eval where2place`` alone (model loading, generation and scoring are shared groups)."""

    output: str = field(metadata={"help": "answer file (JSON lines); an existing one is resumed"})
    batch_size: int = field(
        default=1, metadata={"help": "questions per generate call (default: 1)", "type": positive_int}
    )
    temperature: float = field(
        default=0.0, metadata={"help": "0 = greedy (default); the original used 0.2 (sampling)"}
    )
    top_p: float | None = field(default=None, metadata={"help": "nucleus sampling (with --temperature > 0)"})
    num_beams: int = field(default=1, metadata={"help": "beam search width (default: 1)", "type": positive_int})
    seed: int | None = field(
        default=None, metadata={"help": "seed for sampling (each batch: seed + crc32 of its first question id)"}
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "override the checkpoint's prompt template; the published numbers used llava_v1 (default: "
            "checkpoint's)",
            "choices": TEMPLATE_NAMES,
        },
    )
    limit: int | None = field(
        default=None,
        metadata={"help": "answer only the first N questions (in file order)", "type": positive_int, "metavar": "N"},
    )
    question_ids: list[str] | None = field(
        default=None,
        metadata={
            "help": "answer only these questions (comma-separated question_id values)",
            "type": _question_ids,
            "metavar": "ID[,ID...]",
        },
    )
    model_id: str | None = field(
        default=None, metadata={"help": "model_id written into the answer file (default: the model's folder name)"}
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "delete an existing answer file instead of resuming", "action": "store_true"},
    )


@dataclass
class EvalEndpointArguments:
    """A served model that ``eval where2place`` asks instead of loading ``--model``."""

    endpoint: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible API base, e.g. http://127.0.0.1:8000/v1", "metavar": "URL"},
    )
    endpoint_model: str | None = field(
        default=None, metadata={"help": "served model name (default: the server's only one)", "metavar": "NAME"}
    )
    concurrency: int = field(
        default=DEFAULT_CONCURRENCY,
        metadata={
            "help": "requests in flight; answers are saved every this many questions (default: %(default)s)",
            "type": positive_int,
        },
    )
    max_retries: int = field(
        default=DEFAULT_MAX_RETRIES,
        metadata={
            "help": "retries of a request that failed transiently (connection, timeout, HTTP 408/429/5xx) "
            "(default: 5)",
            "type": int,
        },
    )
    request_timeout: float = field(
        default=DEFAULT_REQUEST_TIMEOUT,
        metadata={"help": "longest one request may take (default: %(default)s)", "metavar": "SECONDS"},
    )


@dataclass(kw_only=True)
class EvalScoreArguments:
    """The options of ``eval score`` alone (the benchmark and report options are :class:`EvalScoringArguments`)."""

    answers: list[str] = field(metadata={"help": "answer files, one per model", "metavar": "JSONL"})
    labels: list[str] | None = field(default=None, metadata={"help": "a name per answer file (default: file names)"})


def run_questions(args: argparse.Namespace) -> list:
    """The benchmark's questions that this ``eval run`` answers (``--question-ids``, ``--limit``)."""
    from robopoint_hf.evaluation.benchmarks import load_benchmark

    return select_questions(
        load_benchmark(args.data_dir, args.benchmark, split=args.split, question_file=args.question_file), args
    )


def select_questions(questions: list, args: argparse.Namespace) -> list:
    """The questions ``--question-ids`` and ``--limit`` select, in file order (all without them).

    The answer file then holds the subset; rerunning with more questions (or none of the two options) resumes it.
    """
    if args.question_ids is not None:
        by_id = {str(q.question_id): q for q in questions}
        unknown = [i for i in args.question_ids if i not in by_id]
        if unknown:
            raise UsageError(f"--question-ids: {', '.join(unknown)} not in {args.data_dir}")
        wanted = set(args.question_ids)
        questions = [q for q in questions if str(q.question_id) in wanted]
    return questions[: args.limit] if args.limit else questions


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``eval`` (with sub-commands ``where2place`` and ``score``) on the ``robopoint`` command line."""
    parser = subparsers.add_parser(
        "eval",
        help="answer a benchmark with a model, score answer files, or tabulate score files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run, eval_parser=parser)
    verbs = parser.add_subparsers(dest="eval_command", metavar="BENCHMARK")

    answer = verbs.add_parser(
        "where2place",
        aliases=["run"],
        help="answer every question (resumable, data-parallel under accelerate launch), then score",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_loading_arguments(
        answer,
        model_default=None,
        helps={
            "model": "RoboPoint model folder or Hub id"
            + (f" (default: {DEFAULT_MODEL})" if DEFAULT_MODEL else " (required unless --endpoint)"),
            "device": "default: the process's accelerate device",
        },
    )
    add_dataclass_arguments(answer, EvalRunArguments)
    add_dataclass_arguments(answer, EvalScoringArguments)
    add_dataclass_arguments(answer, EvalBootstrapArguments)
    add_dataclass_arguments(
        answer,
        GenerationOptions,
        defaults={"format_instruction": False, "constrained": False, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS},
        helps={
            "max_new_tokens": "longest answer in tokens (default: %(default)s, as predict; the original used 1024)",
            "format_instruction": "append RoboPoint's answer-format sentence to questions lacking it (default: "
            "questions as written, as the published numbers)",
            "constrained": "decode in RoboPoint's answer language, ending at ']' (default: free text, as the "
            "published numbers)",
        },
        deprecated={"format_instruction": ("--add-answer-format",)},
    )
    add_dataclass_arguments(answer.add_argument_group("served model (instead of --model)"), EvalEndpointArguments)

    score = verbs.add_parser(
        "score",
        help="score answer files (ours or the original model_vqa.py's) and compare models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(score, EvalScoreArguments)
    add_dataclass_arguments(score, EvalScoringArguments)
    add_dataclass_arguments(score, EvalBootstrapArguments)

    board = verbs.add_parser(
        "leaderboard",
        help="one leaderboard (Markdown, CSV, JSON) of models x benchmarks x protocols from score files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    board.add_argument(
        "scores", nargs="+", metavar="SCORES.json", help="score files written by `eval score --json` (or eval run's)"
    )
    add_dataclass_arguments(
        board,
        OutputDirOptions,
        defaults={"output_dir": dataclasses.MISSING},
        helps={"output_dir": "leaderboard folder (must not exist or be empty, unless --overwrite)"},
    )
    add_dataclass_arguments(board, EvalBootstrapArguments)
    return parser


def _uses_legacy_report(args: argparse.Namespace, questions) -> bool:
    """RoboPoint answers on a Where2Place folder under RoboPoint's protocols: the original score table."""
    from robopoint_hf.evaluation.where2place import PROTOCOLS

    return (
        args.answer_format == "robopoint"
        and all(p in PROTOCOLS for p in args.protocols)
        and not args.leaderboard
        and all(q.benchmark == "where2place" and not hasattr(q.image, "size") for q in questions)
    )


def _report_any(args: argparse.Namespace, labels, answer_files, records) -> int:
    """Score on any benchmark under any protocol: leaderboard table, JSON, pictures."""
    from robopoint_hf.evaluation.leaderboard import (
        align_answers,
        format_markdown,
        leaderboard_rows,
        mask_array,
        question_fields,
        score_records,
        write_leaderboard,
    )
    from robopoint_hf.evaluation.where2place import load_answers

    benchmark = records[0].benchmark if records else "?"
    needs_masks = any(
        p not in ("lmms_eval", "lmms_eval_json", "roboafford_eval", "roborefer", "embodied_r1") for p in args.protocols
    )
    masks = [mask_array(r.mask, name=f"question {r.question_id!r}") for r in records] if needs_masks else None
    rows, scores, texts_by_model = [], {}, []
    for label, answer_file in zip(labels, answer_files, strict=True):
        answers = load_answers(answer_file)
        scores[label] = {
            "answer_file": str(answer_file),
            "answer_format": args.answer_format,
            **question_fields(records),
        }
        for protocol in args.protocols:
            try:
                texts = align_answers(records, answers, by_position=protocol == "original")
            except ValueError as e:
                raise ValueError(f"{answer_file}: {e}") from e
            result = score_records(records, texts, protocol, answer_format=args.answer_format, masks=masks)
            scores[label][protocol] = result.to_dict()
            rows += leaderboard_rows(
                label,
                benchmark,
                protocol,
                result,
                [r.category for r in records],
                num_samples=args.bootstrap,
                seed=args.bootstrap_seed,
            )
            if protocol == args.protocols[0]:
                texts_by_model.append((texts, result))
    print(format_markdown(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(scores, f, indent=1)
        print(f"scores: {args.json}")
    if args.leaderboard:
        written = write_leaderboard(rows, args.leaderboard)
        print(f"leaderboard: {', '.join(str(p) for p in written)}")
    if args.visualize:
        from robopoint_hf.evaluation.plots import save_question_plots

        written = save_question_plots(
            records,
            labels,
            [t for t, _ in texts_by_model],
            [r for _, r in texts_by_model],
            args.visualize,
            score_name=args.protocols[0],
            answer_format=args.answer_format,
        )
        print(f"pictures: {len(written)} questions in {args.visualize}")
    return 0


def _drop_category_mean_without_categories(args: argparse.Namespace, questions) -> None:
    """``category_mean`` needs every question's category; without them it is skipped (one message), not fatal."""
    if "category_mean" not in args.protocols:
        return
    missing = sum(getattr(q, "category", None) is None for q in questions)
    if not missing:
        return
    args.protocols = [p for p in args.protocols if p != "category_mean"]
    if not args.protocols:
        raise UsageError(f"category_mean needs a category per question; {missing} of {len(questions)} have none")
    print(
        f"robopoint eval: skipping category_mean: {missing} of {len(questions)} questions have no category",
        file=sys.stderr,
    )


def _report(args: argparse.Namespace, labels, answer_files, questions) -> int:
    """Score the answer files, print the table, and write the optional JSON and pictures."""
    _drop_category_mean_without_categories(args, questions)
    if not _uses_legacy_report(args, questions):
        return _report_any(args, labels, answer_files, questions)
    from robopoint_hf.evaluation.runner import format_score_table, scores_to_dict
    from robopoint_hf.evaluation.where2place import align_answers, load_answers, score_answer_files

    results = score_answer_files(answer_files, args.data_dir, protocols=args.protocols, questions=questions)
    print(format_score_table(labels, results, args.protocols))
    if args.json:
        from robopoint_hf.evaluation.leaderboard import question_fields

        scores = scores_to_dict(labels, answer_files, results)
        for entry in scores.values():
            entry.update(answer_format=args.answer_format, **question_fields(questions))
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(scores, f, indent=1)
        print(f"scores: {args.json}")
    if args.visualize:
        from robopoint_hf.evaluation.plots import save_question_plots, save_summary_chart

        protocol = args.protocols[0]
        texts = [align_answers(questions, load_answers(f), protocol=protocol) for f in answer_files]
        written = save_question_plots(
            questions, labels, texts, [r[protocol] for r in results], args.visualize, score_name=protocol
        )
        summary = save_summary_chart(labels, results, args.protocols, f"{args.visualize}/summary.png")
        print(f"pictures: {len(written)} questions and {summary} in {args.visualize}")
    return 0


def run_score(args: argparse.Namespace) -> int:
    """``robopoint eval score``: bad files become a one-line error naming them."""
    from robopoint_hf.evaluation.benchmarks import load_benchmark
    from robopoint_hf.evaluation.runner import default_labels

    labels = args.labels or default_labels(args.answers)
    if len(labels) != len(args.answers):
        raise UsageError(f"got {len(args.answers)} answer files but {len(labels)} --labels")
    questions = load_benchmark(args.data_dir, args.benchmark, split=args.split, question_file=args.question_file)
    return _report(args, labels, args.answers, questions)


def run_leaderboard(args: argparse.Namespace) -> int:
    """``robopoint eval leaderboard``: score files -> one table; a bad file is a one-line error naming it."""
    from robopoint_hf.evaluation.leaderboard import format_markdown, leaderboard_from_score_files, write_leaderboard

    folder = args.output_dir
    if os.path.isdir(folder) and os.listdir(folder) and not args.overwrite:
        raise UsageError(f"--output-dir {folder} exists and is not empty; pass --overwrite to write into it")
    rows = leaderboard_from_score_files(args.scores, num_samples=args.bootstrap, seed=args.bootstrap_seed)
    print(format_markdown(rows))
    written = write_leaderboard(rows, folder)
    print(f"leaderboard: {', '.join(str(p) for p in written)}")
    return 0


def _run_endpoint(args: argparse.Namespace) -> int:
    """``robopoint eval where2place --endpoint``: answer through the served model (resumable), then score."""
    from robopoint_hf.evaluation.endpoint import EndpointClient, endpoint_answer_fn, request_params
    from robopoint_hf.evaluation.runner import model_id_from_path, run_answers

    local_only = {
        "--model": args.model,
        "--prompt-template": args.prompt_template,
        "--device": args.device,
        "--dtype": args.dtype,
        "--num-beams": args.num_beams if args.num_beams != 1 else None,
        "--load-in-4bit": args.load_in_4bit or None,
        "--load-in-8bit": args.load_in_8bit or None,
    }
    given = [flag for flag, value in local_only.items() if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be used with --endpoint (the server decides)")
    questions = run_questions(args)
    params = request_params(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    with EndpointClient(
        args.endpoint, args.endpoint_model, max_retries=args.max_retries, request_timeout=args.request_timeout
    ) as client:
        model_id = args.model_id or model_id_from_path(client.model)
        answer_fn = endpoint_answer_fn(
            client,
            concurrency=args.concurrency,
            answer_format=args.answer_format,
            add_answer_format=args.format_instruction,
            seed=args.seed,
            **params,
        )
        records = run_answers(
            questions,
            answer_fn,
            args.output,
            model_id=model_id,
            batch_size=args.concurrency,
            overwrite=args.overwrite,
            progress=lambda done, total: print(f"{done}/{total} answered", file=sys.stderr, flush=True),
        )
    print(f"answers: {args.output} ({len(records)} questions, model_id {model_id!r})")
    return _report(args, [model_id], [args.output], questions)


def run_where2place(args: argparse.Namespace) -> int:
    """``robopoint eval where2place``: answer (resumably, sharded), merge, score."""
    if args.endpoint is not None:
        return _run_endpoint(args)
    endpoint_only = [flag for flag in ("endpoint_model",) if getattr(args, flag) is not None]
    if endpoint_only:
        raise UsageError("--endpoint-model needs --endpoint")
    args.model = args.model or DEFAULT_MODEL
    if args.model is None:
        raise UsageError("--model is required (this build ships no default model)")
    import torch
    from accelerate import PartialState

    from robopoint_hf.evaluation.runner import generation_kwargs, model_id_from_path, pipeline_answer_fn, run_answers
    from robopoint_hf.hub_checkpoint import resolve_pretrained
    from robopoint_hf.inference.loading import load_pipeline
    from robopoint_hf.model.templates import get_chat_template

    questions = run_questions(args)  # before the model: a typo fails fast
    generate_kwargs = generation_kwargs(
        temperature=args.temperature,
        top_p=args.top_p,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
    )
    resolve_pretrained(os.path.expanduser(args.model))
    # cpu=True lets `torchrun`/`accelerate launch` shard over CPU processes (gloo); GPUs need no flag.
    on_cpu = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cpu"
    state = PartialState(cpu=on_cpu)
    device = args.device or str(state.device)  # under accelerate launch: this process's GPU
    silence_progress_bars()
    dtype = args.dtype or DEFAULT_DTYPES.get(device.split(":")[0], "float32")
    pipe = load_pipeline(os.path.expanduser(args.model), device, dtype, quantization_bits(args))
    if args.prompt_template:
        pipe.processor.chat_template = get_chat_template(args.prompt_template)
        pipe.processor.prompt_template = args.prompt_template
    answer_fn = pipeline_answer_fn(
        pipe,
        batch_size=args.batch_size,
        seed=args.seed,
        answer_format=args.format_instruction,
        constrained=args.constrained,
        **generate_kwargs,
    )
    model_id = args.model_id or model_id_from_path(args.model)

    def progress(done: int, total: int) -> None:
        print(f"[rank {state.process_index}] {done}/{total} answered", file=sys.stderr, flush=True)

    records = run_answers(
        questions,
        answer_fn,
        args.output,
        model_id=model_id,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        state=state,
        progress=progress,
    )
    if records is None:  # not the main process: scoring is printed once
        return 0
    print(f"answers: {args.output} ({len(records)} questions, model_id {model_id!r})")
    return _report(args, [model_id], [args.output], questions)


def run(args: argparse.Namespace) -> int:
    """Runs the sub-command; ``robopoint eval`` alone prints the help."""
    verbs = {
        "where2place": run_where2place,
        "run": run_where2place,
        "score": run_score,
        "leaderboard": run_leaderboard,
    }
    if args.eval_command is None:
        args.eval_parser.print_help()
        return 2
    _prepare_score_file(getattr(args, "json", None))
    return verbs[args.eval_command](args)


def _prepare_score_file(path: str | None) -> None:
    """Makes the folder of the ``--json`` file before anything runs: the file is written last, and a path that
    cannot be written should fail in a second, not after the answers of a whole benchmark."""
    if path is None:
        return
    if os.path.isdir(path):
        raise UsageError(f"--json {path} is a folder; give the name of the file to write")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
