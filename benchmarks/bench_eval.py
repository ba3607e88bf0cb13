"""Questions per second of ``robopoint eval``'s two backends, each against its own baseline, in one run.

1. The OpenAI-compatible endpoint backend against a real local ``transformers serve``: ``--concurrency 8`` vs 1
   (target >= 3x). What concurrency buys depends on the server: an engine that batches concurrent requests
   (vLLM, SGLang, ``--continuous-batching``) answers eight at about the cost of one; a server that runs one
   ``generate`` per request only overlaps the HTTP, image decoding and preprocessing.
2. The local runner (``pipeline("robopoint")``): ``--batch-size 8`` vs 1.

Model: the original-format fixture checkpoint (tiny Vicuna + CLIP, 576 image tokens), exported as plain LLaVA for the
server and converted to our format for the local runner; its random answers never stop early, so every answer is
exactly ``--max-new-tokens`` tokens on both sides. The answer files of every setting must be identical (greedy),
which the script checks. Questions: the first ``--questions`` of the Where2Place folder. fp32 on CPU.

    python benchmarks/bench_eval.py [--questions 32] [--max-new-tokens 32] [--continuous-batching]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's server helper: one way to start transformers serve

from openai_server import ORIGINAL, served_checkpoint  # noqa: E402

from robopoint_hf.evaluation.endpoint import EndpointClient, endpoint_answer_fn, request_params  # noqa: E402
from robopoint_hf.evaluation.runner import generation_kwargs, pipeline_answer_fn, run_answers  # noqa: E402
from robopoint_hf.evaluation.where2place import load_questions  # noqa: E402
from robopoint_hf.inference.loading import load_pipeline  # noqa: E402

SHARED_DATA = Path("/work/shared/data/where2place")
FIXTURE_DATA = ROOT / "tests/fixtures/where2place_real"


def timed_run(questions, answer_fn, output: Path, batch_size: int) -> tuple[float, bytes]:
    start = time.perf_counter()
    run_answers(questions, answer_fn, output, model_id="m", batch_size=batch_size)
    return len(questions) / (time.perf_counter() - start), output.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA if SHARED_DATA.is_dir() else FIXTURE_DATA)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--continuous-batching", action="store_true", help="serve with --continuous-batching")
    args = parser.parse_args()
    logging.getLogger("robopoint_hf.inference.serving").setLevel(
        logging.ERROR
    )  # every answer is cut at --max-new-tokens

    questions = load_questions(args.data_dir)[: args.questions]
    extra = ("--continuous-batching",) if args.continuous_batching else ()
    rows, files = [], {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        served_checkpoint(ORIGINAL / "vicuna-mlp2x-full", Path(tmp), extra) as served,
    ):
        with EndpointClient(served.url) as client:
            params = request_params(max_new_tokens=args.max_new_tokens)
            endpoint_answer_fn(client, concurrency=1, **params)(questions[:1])  # warm-up
            for concurrency in (1, args.concurrency):
                answer_fn = endpoint_answer_fn(client, concurrency=concurrency, **params)
                output = Path(tmp) / f"endpoint-{concurrency}.jsonl"
                speed, files[f"endpoint c={concurrency}"] = timed_run(questions, answer_fn, output, concurrency)
                rows.append((f"endpoint, --concurrency {concurrency}", speed))
        pipe = load_pipeline(str(served.local), "cpu", "float32")
        kwargs = generation_kwargs(max_new_tokens=args.max_new_tokens)
        pipeline_answer_fn(pipe, **kwargs)(questions[:1])  # warm-up
        for batch_size in (1, args.batch_size):
            answer_fn = pipeline_answer_fn(pipe, batch_size=batch_size, **kwargs)
            output = Path(tmp) / f"local-{batch_size}.jsonl"
            speed, files[f"local b={batch_size}"] = timed_run(questions, answer_fn, output, batch_size)
            rows.append((f"local, --batch-size {batch_size}", speed))

    same = len(set(files.values())) == 1
    server = "transformers serve" + (" --continuous-batching" if args.continuous_batching else "")
    print(f"{len(questions)} questions of {args.data_dir}, {args.max_new_tokens} new tokens each; server: {server}")
    print(f"{'backend':<28} {'questions/s':>11} {'ratio':>7}")
    for index, (name, speed) in enumerate(rows):
        baseline = rows[index - index % 2][1]
        print(f"{name:<28} {speed:>11.2f} {speed / baseline:>6.2f}x")
    print(f"answer files identical across all four runs: {same}")


if __name__ == "__main__":
    main()
