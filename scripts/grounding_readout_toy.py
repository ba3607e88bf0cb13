"""Can the tiny model's language model learn to read a position out of image tokens? A two-minute experiment.

An experiment behind the tiny model's learning rate and image size (``docs/design/tiny_model.md``, where its
results are). It takes the vision tower out of the question: the "image" is ``slots`` ready-made tokens (a colour
vector plus a 2-D sin-cos position code, background tokens noisy), the question names one of ``objects`` colours,
and the tiny model's Llama (``scripts/tiny_model.py: TEXT_CONFIG``, random init) must answer the column bin of the
named object from the last position, with the tiny recipe's AdamW settings. It prints held-out accuracy every 100
steps (chance is ~0.25 with 16 slots = 4 columns, ~0.13 with 64 slots = 8 columns).

    python scripts/grounding_readout_toy.py --slots 16 --objects 3 --lr 2e-4 --steps 1000
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_model import TEXT_CONFIG, sincos_position_table

COLOURS = 8
FIRST_COLOUR_WORD = 10  # token ids of the colour words; bins are predicted over ids BIN_TOKEN ... BIN_TOKEN + grid
BIN_TOKEN = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=16, help="image tokens (a square number)")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--position-scale", type=float, default=1.0, help="position code strength vs content")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    grid = math.isqrt(args.slots)
    if grid * grid != args.slots or not 1 <= args.objects <= min(COLOURS, args.slots):
        parser.error("--slots must be a square number and 1 <= --objects <= min(8, slots)")
    torch.manual_seed(args.seed)
    config = LlamaConfig(**{key: value for key, value in TEXT_CONFIG.items() if key != "model_type"}, vocab_size=64)
    model = LlamaForCausalLM(config)
    width = config.hidden_size
    colours = torch.randn(COLOURS + 1, width)  # the last one is the background
    positions = sincos_position_table(grid, width) * args.position_scale
    words = model.get_input_embeddings()

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        sequences, targets = [], []
        for _ in range(size):
            slots = torch.randperm(args.slots)[: args.objects]
            kinds = torch.randperm(COLOURS)[: args.objects]
            content = colours[COLOURS].repeat(args.slots, 1) + 0.3 * torch.randn(args.slots, width)
            content[slots] = colours[kinds]
            target = int(torch.randint(args.objects, (1,)))
            # image first (as RoboPoint's template), then BOS-like, colour word, two fillers, "[(" -like token
            question = words.weight[[1, FIRST_COLOUR_WORD + int(kinds[target]), 3, 4, 5]]
            sequences.append(torch.cat([content + positions, question]))
            targets.append(int(slots[target]) % grid)
        return torch.stack(sequences), torch.tensor(targets)

    def bin_logits(inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs_embeds=inputs).logits[:, -1, BIN_TOKEN : BIN_TOKEN + grid]

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    for step in range(args.steps + 1):
        inputs, targets = batch(args.batch_size)
        loss = torch.nn.functional.cross_entropy(bin_logits(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0:
            with torch.no_grad():
                inputs, targets = batch(256)
                accuracy = (bin_logits(inputs).argmax(-1) == targets).float().mean().item()
            print(f"step {step:5d}  loss {loss.item():.3f}  held-out accuracy {accuracy:.3f}", flush=True)


if __name__ == "__main__":
    main()
