"""Per-token decode cost of ``model.generate`` on the mid-size random config of ``bench_generate.py``.

Greedy, fp32, 2 threads, an answer forced to a fixed length (``min_new_tokens = max_new_tokens``). Variants, side
by side in one run: the linear layers as plain ``nn.Linear`` on transformers' ``DynamicCache`` (the baseline: the
code before `FewRowLinear` and `ChunkedDynamicCache`), `FewRowLinear` on MKL (its narrow layers without packed
weights) on ``DynamicCache`` and on `ChunkedDynamicCache` (which appends in place), the default (`FewRowLinear` on
oneDNN with packed weights, `ChunkedDynamicCache`), the default with ``cache_implementation="static"``, and static
cache with the decode step compiled by transformers' own ``compile_config`` (``torch.compile`` only of the one-token
step; the prefill runs eagerly). A decode step is timed from one call of the logits processors to the next, so the
prefill and the image encoder are left out; the median step is reported. A hand-written loop (model forward +
argmax on a ``DynamicCache``, no ``generate``) is the floor of what trimming ``generate`` can buy. ``--profile``
adds a cProfile breakdown of the default's decode steps: model forward vs logits processing vs the rest of
``generate``'s loop.

    python benchmarks/bench_decode_step.py [--new-tokens 48] [--repeats 3] [--no-compile] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from itertools import pairwise
from pathlib import Path

import torch
from bench_generate import build_models
from PIL import Image
from random_models import QUESTIONS
from transformers import AutoTokenizer, CompileConfig, DynamicCache, LogitsProcessor, LogitsProcessorList

from robopoint_hf import RoboPointImageProcessor, RoboPointProcessor
from robopoint_hf.model.modeling_robopoint import FewRowLinear

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests/fixtures/original/vicuna-mlp2x-full"


class StepClock(LogitsProcessor):
    """Records the time of every call: the logits processors run once per generated token."""

    def __init__(self):
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.stamps.append(time.perf_counter())
        return scores


def timed_answer(model, inputs: dict, generate: dict) -> tuple[list[float], float, torch.Tensor]:
    """Decode-step durations (s), total latency (s) and generated ids of one forced answer."""
    clock = StepClock()
    start = time.perf_counter()
    ids = model.generate(**inputs, **generate, logits_processor=LogitsProcessorList([clock]))
    return [b - a for a, b in pairwise(clock.stamps)], time.perf_counter() - start, ids


def timeit(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bare_decode_steps(model, inputs: dict, steps: int) -> tuple[list[float], list[int]]:
    """Greedy decoding by hand: one model forward per token on the dynamic cache and an argmax, nothing of
    ``generate`` around it. Returns the step durations (s) and the tokens."""
    outputs = model(**inputs, use_cache=True, logits_to_keep=1)
    cache, token, length = outputs.cache, outputs.logits[:, -1].argmax(-1, keepdim=True), inputs["input_ids"].shape[1]
    durations, tokens = [], [token.item()]
    for _ in range(steps - 1):
        start = time.perf_counter()
        position = torch.tensor([[length]])
        outputs = model(input_ids=token, cache=cache, position_ids=position, use_cache=True)
        cache, token, length = outputs.cache, outputs.logits[:, -1].argmax(-1, keepdim=True), length + 1
        durations.append(time.perf_counter() - start)
        tokens.append(token.item())
    return durations, tokens


def profiled(model, inputs: dict, generate: dict, new_tokens: int) -> dict:
    """cProfile's per-function totals for one forced answer of `new_tokens` tokens."""
    profiler = cProfile.Profile()
    profiler.enable()
    model.generate(**inputs, **{**generate, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens})
    profiler.disable()
    return pstats.Stats(profiler).stats


def profile_decode(model, inputs: dict, generate: dict) -> None:
    """cProfile of a short and a long forced answer; their difference is the decode steps alone (prefill and
    image encoder cancel)."""
    short, steps = 2, generate["max_new_tokens"]
    with torch.inference_mode():
        profiled(model, inputs, generate, short)  # warm
        few, many = profiled(model, inputs, generate, short), profiled(model, inputs, generate, short + steps)

    def per_step(name: str, file_part: str, column: int = 3) -> float:
        """Seconds per decode step in the largest function `name` of a file matching `file_part` (column 3:
        cumulative, 2: own time)."""

        def total(stats: dict) -> float:
            return max((v[column] for (f, _, n), v in stats.items() if n == name and file_part in f), default=0.0)

        return (total(many) - total(few)) / steps

    step = per_step("generate", "modeling_robopoint")
    forward = per_step("forward", "modeling_robopoint")
    parts = {
        "model forward": forward,
        "  of which the Llama decoder (LlamaModel.forward)": per_step("forward", "modeling_llama"),
        "  of which the LM head and the rest": forward - per_step("forward", "modeling_llama"),
        "logits processors": per_step("__call__", "generation/logits_process"),
        "prepare_inputs_for_generation": per_step("prepare_inputs_for_generation", "generation/utils"),
        "_update_model_kwargs_for_generation": per_step("_update_model_kwargs_for_generation", "generation/utils"),
    }
    parts["rest of generate's loop"] = step - sum(v for k, v in parts.items() if not k.startswith(" "))
    print(f"\ncProfile of the default, {steps} decode steps (cProfile itself adds to every Python call):")
    print("| part | ms per step | share of the step |\n|---|---|---|")
    for name, seconds in parts.items():
        print(f"| {name} | {1000 * seconds:.2f} | {100 * seconds / step:.0f} % |")
    own = {key: (v[2], v[1]) for key, v in many.items()}
    for key, v in few.items():
        seconds, calls = own.get(key, (0.0, 0))
        own[key] = (seconds - v[2], calls - v[1])
    print("\nlargest own time per decode step (ms, function, calls per step):")
    for (file, line, name), (seconds, calls) in sorted(own.items(), key=lambda item: -item[1][0])[:10]:
        print(f"  {1000 * seconds / steps:.2f}  {Path(file).name}:{line}:{name}  {calls / steps:.0f}")
    text_bytes = sum(
        p.numel() * p.element_size()
        for name, p in model.model.language_model.named_parameters()
        if "embed_tokens" not in name  # a step only indexes the embedding
    )
    head = model.lm_head.weight
    with torch.inference_mode():
        hidden = torch.randn(1, 1, head.shape[1])
        head_ms = 1000 * min(timeit(lambda: torch.nn.functional.linear(hidden, head)) for _ in range(20))
        fast_ms = 1000 * min(timeit(lambda: model.lm_head(hidden)) for _ in range(20))
    head_bytes = head.numel() * head.element_size()
    print(
        f"\nweights read per decode step: {(text_bytes + head_bytes) / 2**20:.0f} MiB (decoder layers "
        f"{text_bytes / 2**20:.0f} MiB, LM head {head_bytes / 2**20:.0f} MiB); the LM head for one row as "
        f"nn.Linear (matrix-vector): {head_ms:.2f} ms = {head_bytes / head_ms / 1e6:.1f} GB/s, as FewRowLinear "
        f"(its kernel for this width): {fast_ms:.2f} ms = {head_bytes / fast_ms / 1e6:.1f} GB/s"
    )


def fresh(extra: dict) -> dict:
    """The variant's generate arguments with a new cache object where it names a cache class."""
    return {key: value() if key == "cache" else value for key, value in extra.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--profile", action="store_true", help="cProfile breakdown of the default's decode steps")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, _ = build_models()
    processor = RoboPointProcessor(RoboPointImageProcessor(), AutoTokenizer.from_pretrained(TOKENIZER))
    image = Image.open(ROOT / "tests/fixtures/original/images/sink.jpg")
    inputs = processor(images=image, text=QUESTIONS[0], return_tensors="pt")
    generate = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    fast_rows = FewRowLinear.max_rows
    variants = {  # name: (FewRowLinear.max_rows, pack_narrow_weights, generate arguments); 0 = plain nn.Linear
        "nn.Linear layers, transformers' DynamicCache (before)": (0, True, dict(cache=DynamicCache)),
        "FewRowLinear on MKL (no packed weights), transformers' DynamicCache": (
            fast_rows,
            False,
            dict(cache=DynamicCache),
        ),
        "FewRowLinear on MKL (no packed weights), ChunkedDynamicCache": (fast_rows, False, {}),
        "default: FewRowLinear (oneDNN, packed weights), ChunkedDynamicCache": (fast_rows, True, {}),
        'default + cache_implementation="static"': (fast_rows, True, dict(cache_implementation="static")),
    }
    if not args.no_compile:
        compile_config = CompileConfig(mode="default", fullgraph=False)
        compile_config._compile_all_devices = True  # transformers auto-compiles on accelerators only
        variants["default + static + compiled decode step"] = (
            fast_rows,
            True,
            dict(cache_implementation="static", compile_config=compile_config),
        )

    first_call, steps, totals, ids = {}, {}, {}, {}
    with torch.inference_mode():
        for name, (rows, pack, extra) in variants.items():
            FewRowLinear.max_rows, FewRowLinear.pack_narrow_weights = rows, pack
            start = time.perf_counter()
            model.generate(**inputs, **{**generate, "max_new_tokens": 3, "min_new_tokens": 3}, **fresh(extra))
            first_call[name] = time.perf_counter() - start
        # Rounds over the variants, so that other jobs on the shared machine slow all of them alike.
        for _ in range(args.repeats):
            for name, (rows, pack, extra) in variants.items():
                FewRowLinear.max_rows, FewRowLinear.pack_narrow_weights = rows, pack
                durations, total, ids[name] = timed_answer(model, inputs, {**generate, **fresh(extra)})
                steps.setdefault(name, []).extend(durations)
                totals[name] = min(totals.get(name, float("inf")), total)
        FewRowLinear.max_rows, FewRowLinear.pack_narrow_weights = fast_rows, True

    print(f"mid-size random model, fp32 CPU, 2 threads, {args.new_tokens} forced new tokens, {args.repeats} rounds")
    print(
        "| variant | ms per token (median step) | ratio vs before | best answer latency (s) | identical tokens "
        "| first call, 3 tokens (s) |"
    )
    print("|---|---|---|---|---|---|")
    default = next(iter(variants))
    base_step = statistics.median(steps[default])
    for name in variants:
        step = statistics.median(steps[name])
        same = "yes" if torch.equal(ids[name], ids[default]) else "NO"
        print(
            f"| {name} | {1000 * step:.2f} | {base_step / step:.2f}x | {totals[name]:.3f} | {same} "
            f"| {first_call[name]:.1f} |"
        )
    bare_steps, bare_tokens = [], []
    with torch.inference_mode():
        for _ in range(args.repeats):
            durations, bare_tokens = bare_decode_steps(model, inputs, args.new_tokens)
            bare_steps += durations
    answer = ids[default][0, inputs["input_ids"].shape[1] :].tolist()
    bare = statistics.median(bare_steps)
    same = "yes" if bare_tokens == answer else "NO"
    print(
        f"| floor: bare forward + argmax loop, no generate (FewRowLinear) | {1000 * bare:.2f} | {base_step / bare:.2f}x "
        f"| - | {same} | - |"
    )
    if args.profile:
        profile_decode(model, inputs, generate)


if __name__ == "__main__":
    main()
