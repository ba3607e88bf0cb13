"""Benchmark the training-data cache: our streaming Arrow writer vs ``datasets.Dataset.from_generator``.

Both read the same RoboPoint JSON with the same validation (``iter_json_array`` + ``record_to_row``) and produce the
same rows; they differ only in how rows reach the memory-mapped Arrow file. Each run is a fresh process that imports
the same modules first; the first run converts, the second finds the cache.

    python benchmarks/bench_data_cache.py                  # 200k records
    python benchmarks/bench_data_cache.py --records 20000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_synth import _measure, _write_records

_MEASURE = """
import json, resource, sys, time
import datasets
from robopoint_hf.training.data import _features, iter_json_array, load_robopoint_dataset, record_to_row
mode, path, folder, cache = sys.argv[1:5]

def rows(path, folder, stamp):
    for index, record in enumerate(iter_json_array(path)):
        row = record_to_row(record, folder)
        row["id"] = row["id"] or f"index:{index}"
        yield row

datasets.disable_progress_bars()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "ours":
    dataset = load_robopoint_dataset(path, folder, cache_dir=cache)
else:
    stat = __import__("os").stat(path)
    kwargs = {"path": path, "folder": folder, "stamp": (stat.st_size, stat.st_mtime_ns)}
    dataset = datasets.Dataset.from_generator(rows, features=_features(), gen_kwargs=kwargs, cache_dir=cache)
count = len(dataset)
middle = dataset[count // 2]
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": count, "row": middle["id"], "seconds": seconds, "peak_mb": after / 1024,
                  "import_mb": before / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        path = folder / "robopoint_bench.json"
        _write_records(path, args.records, folder)
        size_mb = path.stat().st_size / 2**20
        results = {}
        for mode in ("from_generator", "ours"):
            cache = folder / f"cache-{mode}"
            results[mode] = tuple(_measure(mode, path, folder, cache, _MEASURE) for _ in range(2))
    first_base, cached_base = results["from_generator"]
    assert results["ours"][0]["rows"] == first_base["rows"] and results["ours"][0]["row"] == first_base["row"]
    print(f"\nCaching {args.records:,} records ({size_mb:.0f} MB of JSON); memory = peak RSS minus RSS after imports")
    print(f"{'loader':<36} {'first s':>8} {'ratio':>7} {'cached s':>9} {'ratio':>7} {'+MB first':>10}")
    for name, mode in (("datasets.from_generator (baseline)", "from_generator"), ("ours (streaming Arrow)", "ours")):
        first, cached = results[mode]
        print(
            f"{name:<36} {first['seconds']:>8.1f} {first['seconds'] / first_base['seconds']:>6.2f}x "
            f"{cached['seconds']:>9.2f} {cached['seconds'] / cached_base['seconds']:>6.2f}x "
            f"{first['peak_mb'] - first['import_mb']:>10.0f}"
        )


if __name__ == "__main__":
    main()
