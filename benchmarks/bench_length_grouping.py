"""Length-grouped micro-batches vs the original batching: padding and training speed of the tiny model.

RoboPoint's answers hold 1-8 points, so rows of the tiny recipe's last stage (the synthetic full mix, 3-8 points per
answer, plus a quarter as many one-point questions replayed from stage 2) range from ~40 to ~90 tokens, and a
random micro-batch pads every row to its longest. The tiny model's steps are bound by the language model's tokens, so
padding is time. Compares ``length_group_size=1`` (the original LLaVA batching: one micro-batch per megabatch) with
``--group`` (megabatches sorted by length together, see ``modality_length_grouped_indices``), measured side by side
in one run: padded / real tokens over one epoch of the sampler, and steps/s of ``tiny_model.train`` (each configuration
in its own process, same data, model and seed).

    python benchmarks/bench_length_grouping.py                     # 2,000 + 500 scenes, 200 steps each
    python benchmarks/bench_length_grouping.py --scenes 500 --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # the tiny model's recipe, `tiny_model.py`


def signed_lengths(root: Path) -> list[int]:
    """Exact token length of every training row (image positions included), as the trainer's sampler gets them."""
    from robopoint_hf.model.processing_robopoint import RoboPointProcessor
    from robopoint_hf.training.trainer import ScriptArguments, prepare_dataset

    processor = RoboPointProcessor.from_pretrained(root / "init")
    script = ScriptArguments(data=str(root / "data/train.json"), image_folder=str(root / "data"))
    return prepare_dataset(script, processor, max_length=None)[1]


def padding_ratio(signed: list[int], group: int, batch_size: int) -> float:
    """Padded / real tokens over one epoch of the sampler's order."""
    import torch

    from robopoint_hf.training.collator import modality_length_grouped_indices

    order = modality_length_grouped_indices(signed, batch_size, 1, torch.Generator().manual_seed(0), group)
    lengths = [abs(length) for length in signed]
    real = padded = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[index] for index in order[start : start + batch_size]]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return padded / real


def run_one(root: Path, group: int, steps: int) -> dict:
    from tiny_model import train

    out = train(
        root / "data",
        root / "init",
        root / f"out-{group}",
        num_threads=int(os.environ.get("BENCH_THREADS", "2")),
        max_steps=steps,
        length_group_size=group,
        disable_tqdm=True,
    )
    summary = json.loads((out / "train_summary.json").read_text())
    return {"steps_per_s": summary["steps"] / (60 * summary["train_minutes"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--group", type=int, default=50, help="length_group_size compared with 1")
    parser.add_argument("--one", nargs=2, metavar=("ROOT", "GROUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), int(args.one[1]), args.steps)))
        return

    from tiny_model import RECIPE, build
    from tiny_model import main as tiny_main

    batch_size = RECIPE["per_device_train_batch_size"]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        synth = [sys.executable, "-m", "robopoint_hf.cli", "synth", "--workers", os.environ.get("BENCH_THREADS", "2")]
        subprocess.run(
            [*synth, "--n", str(args.scenes), "--output-dir", str(root / "full"), "--seed", "0"], check=True
        )
        replay = ["--objects", "2-3", "--families", "object_attribute,object_highlight", "--answer", "centre"]
        subprocess.run(
            [*synth, "--n", str(args.scenes // 4), "--output-dir", str(root / "replay"), "--seed", "2", *replay],
            check=True,
        )
        tiny_main(["mix", "--data", str(root / "full"), str(root / "replay"), "--out", str(root / "data")])
        build(root / "data", root / "init", seed=0)
        signed = signed_lengths(root)
        rows = []
        for group in (1, args.group):
            command = [sys.executable, __file__, "--steps", str(args.steps), "--one", str(root), str(group)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            rows.append({"group": group, "padding": padding_ratio(signed, group, batch_size)})
            rows[-1].update(json.loads(output.strip().splitlines()[-1]))
    print(f"\n{args.scenes} + {args.scenes // 4} scenes (stage 3's mix), batch {batch_size}, {args.steps} steps each")
    print(f"{'length_group_size':<18} {'padded/real tokens':>19} {'steps/s':>8}")
    for row in rows:
        print(f"{row['group']:<18} {row['padding']:>19.3f} {row['steps_per_s']:>8.2f}")
    base, ours = rows
    print(f"\nspeed-up {ours['steps_per_s'] / base['steps_per_s']:.2f}x (length_group_size={args.group} vs 1)")


if __name__ == "__main__":
    main()
