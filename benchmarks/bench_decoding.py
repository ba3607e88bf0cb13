"""Point decoding on the mid-size random config of ``bench_generate.py``: grammar cost, answer end, shared prefix.

Each comparison runs ours and the baseline side by side in one process (fp32, CPU, 2 threads):

1. an 8-point answer, free vs constrained (grammar mask + end at ``]``) and vs constrained with jump-forward
   (`jump_forward_generate`): model forwards per answer, latency, and what the mask and the answer end cost per
   step. The random model is steered to the same answer in every run by a bias on the answer's next token
   (`SteerToAnswer`), so outputs are equal and only the decoding machinery differs;
2. five questions about one image: five independent ``generate`` calls vs one call with ``share_prefix=True``
   (the questions packed on one copy of the prefix; identical tokens asserted), and one question with and without
   ``share_prefix``. What a packed step costs over a one-row step is mostly the linear layers' product on five
   rows instead of one, whose kernel depends on the layers' width: ``--wide`` repeats it on decoder layers of the
   7B's width (hidden 4096, MLP 11008, the LM head 32000 x 4096), one by default; ``--wide-layers 4`` gives the
   decoder layers a larger share of a step beside the LM head, nearer the 7B's 32 layers.

    python benchmarks/bench_decoding.py [--repeats 3] [--wide] [--wide-layers 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList, StoppingCriteriaList

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import QUESTIONS, ROOT, TEXT, TOKENIZER, VISION, build_models  # noqa: E402
from random_models import random_robopoint  # noqa: E402

from robopoint_hf import RoboPointImageProcessor, RoboPointProcessor  # noqa: E402
from robopoint_hf.model.decoding import (  # noqa: E402
    AnswerEndCriteria,
    AnswerGrammar,
    AnswerLogitsProcessor,
    answer_decoding_kwargs,
)
from robopoint_hf.model.points import add_answer_format, format_points  # noqa: E402


def interleaved(*functions, repeats: int) -> tuple[list[float], list]:
    """Best time and last result of each function, runs alternating (the machine is shared: load drifts over a
    block of repeats, so each ratio compares runs made side by side)."""
    best, results = [float("inf")] * len(functions), [None] * len(functions)
    for _ in range(repeats):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            results[index] = function()
            best[index] = min(best[index], time.perf_counter() - start)
    return best, results


class SteerToAnswer(LogitsProcessor):
    """Adds a large bias to the next token of a fixed answer (then EOS), so a random model writes that answer."""

    def __init__(self, answer_ids: list[int], eos: int, prompt_length: int):
        self.ids, self.eos, self.prompt_length = answer_ids, eos, prompt_length

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        target = self.ids[step] if step < len(self.ids) else self.eos
        scores = scores.clone()
        scores[:, target] += 1e4
        return scores


def shared_prefix_times(model, processor, image, new_tokens: int, repeats: int) -> tuple[float, float, float, float]:
    """Five questions about one image: five ``generate`` calls vs one with ``share_prefix=True`` (identical tokens
    asserted), and one question without and with ``share_prefix``; best times (s)."""
    generate = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    singles = [processor(images=image, text=question, return_tensors="pt") for question in QUESTIONS[:5]]
    batch = processor(images=[image] * 5, text=QUESTIONS[:5], return_tensors="pt")
    with torch.inference_mode():
        (t_five, t_shared), (alone, shared) = interleaved(
            lambda: [model.generate(**one, **generate) for one in singles],
            lambda: model.generate(**batch, **generate, share_prefix=True),
            repeats=repeats,
        )
        for row, ids in enumerate(alone):
            assert shared[row, -new_tokens:].tolist() == ids[0, -new_tokens:].tolist()
        (t_one, t_one_shared), (one, one_shared) = interleaved(
            lambda: model.generate(**singles[0], **generate),
            lambda: model.generate(**singles[0], **generate, share_prefix=True),
            repeats=repeats,
        )
        assert torch.equal(one, one_shared)
    return t_five, t_shared, t_one, t_one_shared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=48, help="answer length in the prefix-sharing runs")
    parser.add_argument(
        "--wide",
        action="store_true",
        help="prefix sharing also on decoder layers of the 7B's width (hidden 4096, MLP 11008), whose linear "
        "layers have the real model's shapes",
    )
    parser.add_argument(
        "--wide-layers",
        type=int,
        default=1,
        help="number of decoder layers of the --wide model (the 7B has 32; each adds ~0.8 GB and ~20 s a repeat)",
    )
    args = parser.parse_args()
    if args.wide_layers < 1:
        parser.error(f"--wide-layers must be at least 1, got {args.wide_layers}")
    torch.set_num_threads(2)
    model, _ = build_models()
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    processor = RoboPointProcessor(RoboPointImageProcessor(), tokenizer)
    image = Image.open(ROOT / "tests/fixtures/original/images/sink.jpg")
    vocab = model.config.text_config.vocab_size

    # 1. free vs constrained on the same 8-point answer
    rng = random.Random(0)
    answer = format_points([(rng.random(), rng.random()) for _ in range(8)])
    prompt = tokenizer("ASSISTANT:", add_special_tokens=False).input_ids
    answer_ids = tokenizer("ASSISTANT: " + answer, add_special_tokens=False).input_ids[len(prompt) :]
    inputs = processor(images=image, text=add_answer_format(QUESTIONS[0]), return_tensors="pt")
    width = inputs["input_ids"].shape[1]
    AnswerGrammar.for_tokenizer(tokenizer, vocab_size=vocab)  # compiled once per process, as in a server

    forwards = [0]
    model.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))

    def decode(constrained: bool, jump_forward: bool = False):
        steer = SteerToAnswer(answer_ids, tokenizer.eos_token_id, width)
        kwargs = {"logits_processor": [steer], "max_new_tokens": 256, "do_sample": False}
        if constrained:
            kwargs = answer_decoding_kwargs(
                tokenizer, width, vocab_size=vocab, jump_forward=jump_forward, generate_kwargs=kwargs
            )
        forwards[0] = 0
        return model.generate(**inputs, **kwargs)[0, width:], forwards[0]

    with torch.inference_mode():
        # One baseline for both comparisons: free, constrained and jump-forward take turns.
        (t_free, t_con, t_jump), ((free, steps_free), (con, steps_con), (jumped, steps_jump)) = interleaved(
            lambda: decode(False), lambda: decode(True), lambda: decode(True, jump_forward=True), repeats=args.repeats
        )
        assert tokenizer.decode(free, skip_special_tokens=True) == answer == tokenizer.decode(con)
        assert torch.equal(con, jumped)
        # What constraining adds to a step, alone: the mask and the answer end, called as generate calls them
        # (through its processor and criteria lists), on logits of the model's width.
        grammar_steps = AnswerLogitsProcessor(AnswerGrammar.for_tokenizer(tokenizer, vocab_size=vocab), width)
        processors = LogitsProcessorList([grammar_steps])
        criteria = StoppingCriteriaList([AnswerEndCriteria(tokenizer, width)])
        scores = torch.zeros(1, vocab)
        full = torch.cat([inputs["input_ids"][0], con]).unsqueeze(0)
        start = time.perf_counter()
        for _ in range(args.repeats):
            grammar_steps._states = {(): grammar_steps.grammar.initial_state}  # cold memo: every state computed
            for step in range(len(con)):
                processors(full[:, : width + step], scores)
                criteria(full[:, : width + step + 1], scores)
        t_mask = (time.perf_counter() - start) / (args.repeats * len(con))

    # 2. shared prefix
    sharing = {"mid-size": shared_prefix_times(model, processor, image, args.new_tokens, args.repeats)}
    if args.wide:
        text = {**TEXT, "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32}
        text.update(num_key_value_heads=32, num_hidden_layers=args.wide_layers)
        wide = random_robopoint(VISION, text, projector_type="mlp2x_gelu")
        name = f"7B width, {args.wide_layers} layer{'s' if args.wide_layers > 1 else ''}"
        sharing[name] = shared_prefix_times(wide, processor, image, args.new_tokens, args.repeats)
        del wide

    print(f"mid-size random model (bench_generate.py), fp32 CPU, 2 threads, best of {args.repeats}; shared machine")
    print(f"8-point answer: {answer[:40]}... ({len(answer_ids)} tokens)")
    print("| comparison | baseline | ours | ratio | target |\n|---|---|---|---|---|")
    print(
        f"| model forwards per answer: free / constrained | {steps_free} | {steps_con} | {steps_free / steps_con:.2f}x | - |"
    )
    print(
        f"| model forwards per answer: free / jump-forward | {steps_free} | {steps_jump} | {steps_free / steps_jump:.2f}x | - |"
    )
    print(
        f"| 8-point answer latency (s): free / constrained | {t_free:.3f} | {t_con:.3f} | {t_free / t_con:.2f}x | - |"
    )
    print(
        f"| 8-point answer latency (s): free / jump-forward | {t_free:.3f} | {t_jump:.3f} | {t_free / t_jump:.2f}x | >= 1.3x |"
    )
    step_free = t_free / steps_free
    print(
        f"| constraint per step: mask + answer end (ms) / free step (ms) | {1e3 * step_free:.2f} | {1e3 * t_mask:.3f} | {100 * t_mask / step_free:.1f} % | < 5 % |"
    )
    for name, (t_five, t_shared, t_one, t_one_shared) in sharing.items():
        print(
            f"| {name}: 5 questions, 1 image (s): 5 calls / shared prefix | {t_five:.3f} | {t_shared:.3f} "
            f"| {t_five / t_shared:.2f}x | >= 4x |"
        )
        print(
            f"| {name}: 1 question (s): plain / share_prefix | {t_one:.3f} | {t_one_shared:.3f} "
            f"| {t_one_shared / t_one:.3f} | <= 1.03 |"
        )


if __name__ == "__main__":
    main()
