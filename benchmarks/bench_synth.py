"""Benchmark the synthetic data pipeline: generation throughput and the memory of loading RoboPoint JSON.

1. Generation: scenes per minute of ``generate_dataset`` with 1 process (baseline) vs ``--workers`` processes,
   and JPEG (ours) vs PNG images, measured side by side in one run (the output is identical for any worker count).
2. Loading: peak resident memory of ``load_robopoint_dataset`` (streaming into a memory-mapped Arrow file) vs
   the original's ``json.load`` of the same file, on ``--records`` synthetic records, each in a fresh process
   that imports the same modules first.

    python benchmarks/bench_synth.py                       # 2000 scenes, 200k records
    python benchmarks/bench_synth.py --scenes 500 --records 20000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_MEASURE = """
import json, resource, sys, time
from robopoint_hf.training.data import load_robopoint_dataset
import datasets
mode, path, folder, cache = sys.argv[1:5]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "json.load":
    rows = len(json.load(open(path, encoding="utf-8")))
else:
    dataset = load_robopoint_dataset(path, folder, cache_dir=cache)
    rows = len(dataset)
    rows += 0 * len(dataset[rows // 2]["messages"])  # touch a row
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mb": after / 1024, "import_mb": before / 1024}))
"""


def _generation(scenes: int, workers: int, image_format: str) -> tuple[float, float]:
    """Wall-clock scenes per minute of one generate_dataset run (imports excluded) and the CPU seconds it used.

    On a shared machine the wall-clock ratio of 2 vs 1 processes is bounded by the idle cores; the CPU column
    shows whether the work itself grew.
    """
    from robopoint_hf.synthetic import scenes as synth

    original = synth._save_jpeg
    if image_format == "png":
        synth._save_jpeg = lambda image, path, quality: image.save(path.with_suffix(".png"), format="PNG")
    try:
        with tempfile.TemporaryDirectory() as folder:
            start, cpu_start = time.perf_counter(), os.times()
            synth.generate_dataset(folder, scenes, seed=0, workers=workers)
            seconds, cpu_end = time.perf_counter() - start, os.times()
    finally:
        synth._save_jpeg = original
    cpu = sum(cpu_end[:4]) - sum(cpu_start[:4])  # user + system, this process and its workers
    return scenes / seconds * 60, cpu


def _write_records(path: Path, count: int, image_folder: Path) -> None:
    from PIL import Image

    from robopoint_hf.training.data import make_pointing_record, write_robopoint_records

    (image_folder / "images").mkdir(parents=True, exist_ok=True)
    for index in range(16):
        Image.new("RGB", (32, 24), (index * 16, 0, 0)).save(image_folder / "images" / f"{index}.jpg")
    points = [(0.461, 0.527), (0.498, 0.521), (0.481, 0.521), (0.445, 0.529)]
    records = (
        make_pointing_record(f"bench/{i}", f"images/{i % 16}.jpg", f"Point to the free space left of mug {i}.", points)
        for i in range(count)
    )
    write_robopoint_records(records, path)


def _measure(mode: str, path: Path, folder: Path, cache: Path, script: str = _MEASURE) -> dict:
    """Runs `script` in a fresh process and returns the JSON line it prints last."""
    output = subprocess.run(
        [sys.executable, "-c", script, mode, str(path), str(folder), str(cache)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()

    baseline, baseline_cpu = _generation(args.scenes, 1, "jpeg")
    rows = [
        ("1 process, JPEG (baseline)", (baseline, baseline_cpu)),
        (f"{args.workers} processes, JPEG", _generation(args.scenes, args.workers, "jpeg")),
        ("1 process, PNG", _generation(args.scenes, 1, "png")),
    ]
    print(
        f"\nGeneration of {args.scenes} scenes (160x120); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"{'setting':<30} {'scenes/min':>12} {'ratio vs baseline':>18} {'CPU s':>7}")
    for name, (rate, cpu) in rows:
        print(f"{name:<30} {rate:>12,.0f} {rate / baseline:>17.2f}x {cpu:>7.1f}")

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        path = folder / "robopoint_bench.json"
        _write_records(path, args.records, folder)
        size_mb = path.stat().st_size / 2**20
        original = _measure("json.load", path, folder, folder / "cache")
        ours = _measure("load_robopoint_dataset", path, folder, folder / "cache")
        cached = _measure("load_robopoint_dataset", path, folder, folder / "cache")
    print(f"\nLoading {args.records:,} records ({size_mb:.0f} MB of JSON); memory = peak RSS minus RSS after imports")
    print(f"{'loader':<38} {'seconds':>8} {'peak MB':>8} {'+MB':>7} {'+MB ratio':>10}")
    base_growth = original["peak_mb"] - original["import_mb"]
    for name, result in (
        ("json.load (original, baseline)", original),
        ("load_robopoint_dataset (first run)", ours),
        ("load_robopoint_dataset (cached)", cached),
    ):
        growth = result["peak_mb"] - result["import_mb"]
        print(
            f"{name:<38} {result['seconds']:>8.1f} {result['peak_mb']:>8.0f} {growth:>7.0f} "
            f"{growth / base_growth:>9.3f}x"
        )


if __name__ == "__main__":
    main()
