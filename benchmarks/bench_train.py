"""Training throughput on CPU: samples/s, peak RSS and the share of time spent on data (fetch + collate).

Runs full fine-tuning and LoRA, with and without gradient checkpointing, on a "tiny-mid" RoboPoint (Llama 4 x 256,
32000-token vocab, CLIP 2 x 128 on 112-px images = 64 image positions) and generated pointing data, each in its own
process so that peak RSS is per configuration. Target: data + collate < 5 % of the step time.

    python benchmarks/bench_train.py            # 4 configurations x 10 steps
    python benchmarks/bench_train.py --steps 20 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_workspace(root: Path, rows: int) -> None:
    import torch
    from PIL import Image
    from transformers import AutoTokenizer

    from robopoint_hf import (
        RoboPointConfig,
        RoboPointForConditionalGeneration,
        RoboPointImageProcessor,
        RoboPointProcessor,
    )
    from robopoint_hf.training.data import make_pointing_record, write_robopoint_records

    (root / "images").mkdir(parents=True)
    records = []
    for index in range(rows):
        Image.new("RGB", (160 + index % 50, 120), (index * 7 % 255, 90, 160)).save(root / "images" / f"{index}.png")
        points = [((index * 13 % 97) / 100, (index * 29 % 89) / 100), (0.5, 0.25)]
        records.append(make_pointing_record(f"b/{index}", f"{index}.png", "Point to the free space.", points))
    write_robopoint_records(records, root / "data.json")
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=112,
        patch_size=14,
    )
    text = dict(
        model_type="llama",
        vocab_size=32000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    config = RoboPointConfig(vision_config=vision, text_config=text, image_seq_length=64)
    RoboPointForConditionalGeneration(config).save_pretrained(root / "base")
    tokenizer_folder = Path(__file__).resolve().parents[1] / "tests/fixtures/original/vicuna-mlp2x-full"
    processor = RoboPointProcessor(
        RoboPointImageProcessor(size=112), AutoTokenizer.from_pretrained(tokenizer_folder), image_seq_length=64
    )
    processor.save_pretrained(root / "base")


def run_one(root: Path, mode: str, checkpointing: bool, steps: int, batch_size: int) -> dict:
    import torch

    from robopoint_hf.training.trainer import ModelArguments, RoboPointSFTConfig, ScriptArguments, build_trainer

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    script = ScriptArguments(
        data=str(root / "data.json"), image_folder=str(root / "images"), dataset_cache_dir=str(root / "cache")
    )
    config = RoboPointSFTConfig(
        output_dir=str(root / f"out-{mode}-{checkpointing}"),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        gradient_checkpointing=checkpointing,
        save_strategy="no",
        report_to="none",
        logging_steps=1000,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    trainer = build_trainer(script, config, ModelArguments(model=str(root / "base"), lora=mode == "lora"))
    data_time = [0.0]
    collate, dataset = trainer.data_collator, trainer.train_dataset

    def timed_collate(examples):
        start = time.perf_counter()
        try:
            return collate(examples)
        finally:
            data_time[0] += time.perf_counter() - start

    getitem = type(dataset).__getitem__

    def timed_getitem(self, key):
        start = time.perf_counter()
        try:
            return getitem(self, key)
        finally:
            data_time[0] += time.perf_counter() - start

    type(dataset).__getitem__ = timed_getitem
    trainer.data_collator = timed_collate
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    return {
        "mode": mode,
        "checkpointing": checkpointing,
        "samples_per_s": steps * batch_size / total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "data_share": data_time[0] / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--one", nargs=3, metavar=("ROOT", "MODE", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        root, mode, checkpointing = args.one
        print(json.dumps(run_one(Path(root), mode, checkpointing == "1", args.steps, args.batch_size)))
        return
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build_workspace(root, rows=max(64, args.steps * args.batch_size))
        results = []
        for mode in ("full", "lora"):
            for checkpointing in ("0", "1"):
                command = [
                    sys.executable,
                    __file__,
                    "--steps",
                    str(args.steps),
                    "--batch-size",
                    str(args.batch_size),
                    "--one",
                    str(root),
                    mode,
                    checkpointing,
                ]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                results.append(json.loads(output.strip().splitlines()[-1]))
    print(f"\n{'mode':<6} {'grad ckpt':<10} {'samples/s':>10} {'peak RSS MB':>12} {'data+collate share':>19}")
    for row in results:
        print(
            f"{row['mode']:<6} {'on' if row['checkpointing'] else 'off':<10} {row['samples_per_s']:>10.2f} "
            f"{row['peak_rss_mb']:>12.0f} {row['data_share']:>18.1%}"
        )
    worst = max(row["data_share"] for row in results)
    print(f"\nworst data share {worst:.1%} (target < 5%): {'OK' if worst < 0.05 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
