"""Questions per second of ``robopoint eval``'s backends, each against its own baseline, side by side in one run.

1. The OpenAI-compatible endpoint backend, ``--concurrency 8`` vs 1 (target >= 3x), against two local servers:
   ``transformers serve`` (one ``generate`` per request; with ``--continuous-batching`` too for an image model: only
   LLMs are batched) and ``robopoint serve`` (concurrent requests answered in one batched pipeline call).
2. The local runner (``pipeline("robopoint")``): ``--batch-size 8`` vs 1.

Models: the original-format fixture checkpoint (tiny Vicuna + CLIP, 576 image tokens), exported as plain LLaVA for
``transformers serve`` and converted to our format for ``robopoint serve`` and the local runner; its random answers
never stop early, so every answer is exactly ``--max-new-tokens`` tokens everywhere. Then the shipped default model
(3.7M parameters, what ``robopoint serve`` serves by default), with ``robopoint serve`` and the local runner only: its
plain-LLaVA export's greedy answers under ``transformers serve`` are not the same bytes. The answer files of every
setting of one model must be identical (greedy), which the script checks. Questions: the first ``--questions`` of the Where2Place
folder. fp32 on CPU, ``--threads 1`` torch intra-op thread per process: on 2 cores shared with other work, torch's
default of 2 OpenMP threads made one batch-1 answer of this model take 1.4 s instead of 43 ms in a main thread
(docs/design/serving.md). Settings are timed in turns (c=1, c=8, c=1, ...) ``--repeats`` times and the median is
shown, so that the load of a shared machine falls on both sides of a ratio; the load average is printed before and
after.

    python benchmarks/bench_eval.py [--questions 32] [--max-new-tokens 32] [--repeats 3] [--threads 1] [--continuous-batching]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's server helpers: one way to start each server

import torch  # noqa: E402
from openai_server import ORIGINAL, robopoint_server, served_checkpoint  # noqa: E402

from robopoint_hf.checkpoints import default_model  # noqa: E402
from robopoint_hf.evaluation.endpoint import EndpointClient, endpoint_answer_fn, request_params  # noqa: E402
from robopoint_hf.evaluation.runner import generation_kwargs, pipeline_answer_fn, run_answers  # noqa: E402
from robopoint_hf.evaluation.where2place import load_questions  # noqa: E402
from robopoint_hf.inference.loading import load_pipeline  # noqa: E402

SHARED_DATA = Path("/work/shared/data/where2place")
FIXTURE_DATA = ROOT / "tests/fixtures/where2place_real"


def timed_run(questions, answer_fn, output: Path, batch_size: int) -> tuple[float, bytes]:
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    run_answers(questions, answer_fn, output, model_id="m", batch_size=batch_size)
    return len(questions) / (time.perf_counter() - start), output.read_bytes()


def compare(name: str, make_fn, sizes: tuple[int, int], questions, folder: Path, repeats: int, files: dict) -> list:
    """Times ``make_fn(size)`` for both sizes in turns; rows ``(label, median q/s)``; answer files into ``files``."""
    make_fn(1)(questions[:1])  # warm-up
    speeds: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeats):
        for size in sizes:
            speed, files[f"{name} {size}"] = timed_run(questions, make_fn(size), folder / f"{name}-{size}.jsonl", size)
            speeds[size].append(speed)
    return [(f"{name} {size}", statistics.median(speeds[size])) for size in sizes]


def served_answers(client: EndpointClient, params: dict):
    return lambda concurrency: endpoint_answer_fn(client, concurrency=concurrency, **params)


def local_answers(pipe, kwargs: dict):
    return lambda batch_size: pipeline_answer_fn(pipe, batch_size=batch_size, **kwargs)


def batch_sizes(log: str) -> str:
    counts = Counter(int(size) for size in re.findall(r"answered (\d+) request\(s\) in one batch", log))
    return ", ".join(f"{size}: {counts[size]}" for size in sorted(counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA if SHARED_DATA.is_dir() else FIXTURE_DATA)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of every process (default: 1)")
    parser.add_argument("--continuous-batching", action="store_true", help="transformers serve --continuous-batching")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the servers inherit it
    torch.set_num_threads(args.threads)
    logging.getLogger("robopoint_hf.inference.serving").setLevel(logging.ERROR)  # answers end at --max-new-tokens

    questions = load_questions(args.data_dir)[: args.questions]
    extra = ("--continuous-batching",) if args.continuous_batching else ()
    params = request_params(max_new_tokens=args.max_new_tokens)
    concurrency = (1, args.concurrency)
    load_before = os.getloadavg()
    rows, files, batches = [], {"fixture": {}, "default": {}}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with served_checkpoint(ORIGINAL / "vicuna-mlp2x-full", folder, extra) as served:
            with EndpointClient(served.url) as client:
                rows += compare(
                    "fixture: transformers serve" + (" --continuous-batching" if extra else "") + ", --concurrency",
                    served_answers(client, params),
                    concurrency, questions, folder, args.repeats, files["fixture"],
                )  # fmt: skip
        for model, local in (("fixture", served.local), ("default", default_model())):
            with robopoint_server(local, "--max-batch-size", str(args.concurrency)) as ours:
                with EndpointClient(ours.url) as client:
                    rows += compare(
                        f"{model}: robopoint serve, --concurrency",
                        served_answers(client, params),
                        concurrency, questions, folder, args.repeats, files[model],
                    )  # fmt: skip
                batches[model] = batch_sizes(ours.log_text())
            pipe = load_pipeline(str(local), "cpu", "float32")
            rows += compare(
                f"{model}: local runner, --batch-size",
                local_answers(pipe, generation_kwargs(max_new_tokens=args.max_new_tokens)),
                (1, args.batch_size), questions, folder, args.repeats, files[model],
            )  # fmt: skip
    load_after = os.getloadavg()

    print(
        f"{len(questions)} questions of {args.data_dir}, {args.max_new_tokens} new tokens each, median of "
        f"{args.repeats} turns; {os.cpu_count()} CPUs, {args.threads} torch thread(s) per process, load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(f"{'backend':<60} {'questions/s':>11} {'ratio':>7}")
    for index, (name, speed) in enumerate(rows):
        baseline = rows[index - index % 2][1]
        print(f"{name:<60} {speed:>11.2f} {speed / baseline:>6.2f}x")
    for model, answers in files.items():
        print(f"{model}: robopoint serve batches (size: count): {batches[model]}")
        print(f"{model}: answer files identical across all {len(answers)} settings: {len(set(answers.values())) == 1}")


if __name__ == "__main__":
    main()
