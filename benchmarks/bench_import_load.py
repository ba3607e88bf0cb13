"""Import time and load time: ours against transformers' own LLaVA, side by side, each in fresh processes.

The original RoboPoint code (a LLaVA fork pinned to transformers 4.43) cannot be installed next to transformers 5;
its cost is transformers' own: importing the LLaVA classes and loading a folder with ``from_pretrained``. So the
baseline here is transformers' ``LlavaForConditionalGeneration`` on the same weights (the mid-size shape of
``bench_generate.py``, exported to plain LLaVA), and ours is ``import robopoint_hf`` + our class on the converted
folder. Every measurement is a new Python process (nothing warm in ``sys.modules``), repeated; the median is shown.

    python benchmarks/bench_import_load.py              # 5 processes per row
    python benchmarks/bench_import_load.py --repeats 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

IMPORT_OURS = "import robopoint_hf\nfrom robopoint_hf import RoboPointForConditionalGeneration"
IMPORT_BASELINE = "from transformers import LlavaForConditionalGeneration"
LOAD_OURS = "model = RoboPointForConditionalGeneration.from_pretrained({folder!r})"
LOAD_BASELINE = "model = LlavaForConditionalGeneration.from_pretrained({folder!r})"


def timed_process(imports: str, work: str) -> tuple[float, float]:
    """(seconds of `imports`, seconds of `work` after them), in a new interpreter."""
    probe = (
        f"import json, time\n_start = time.perf_counter()\n{imports}\n_mid = time.perf_counter()\n{work}\n"
        "print(json.dumps([_mid - _start, time.perf_counter() - _mid]))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    first, second = json.loads(result.stdout.strip().splitlines()[-1])
    return first, second


def build_folders(root: Path) -> tuple[Path, Path]:
    """The mid-size random model saved by us (RoboPoint folder) and exported to plain LLaVA (same weights)."""
    from bench_generate import TEXT, TOKENIZER, VISION
    from random_models import random_robopoint

    from robopoint_hf.original.convert import convert_checkpoint
    from robopoint_hf.training.components import processor_from_components

    model = random_robopoint(VISION, TEXT, projector_type="mlp2x_gelu")
    ours = root / "robopoint"
    model.save_pretrained(ours)
    processor_from_components(str(TOKENIZER), model.config).save_pretrained(ours)
    llava = root / "llava"
    convert_checkpoint(ours, llava, target="llava")
    return ours, llava


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours_folder, llava_folder = build_folders(Path(tmp))
        baseline = (IMPORT_BASELINE, LOAD_BASELINE.format(folder=str(llava_folder)))
        ours = (IMPORT_OURS, LOAD_OURS.format(folder=str(ours_folder)))
        base_times, our_times = [], []
        for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
            base_times.append(timed_process(*baseline))
            our_times.append(timed_process(*ours))
    print(f"{'':<20}{'transformers LLaVA':>20}{'robopoint_hf':>16}{'ratio':>8}   (median of {args.repeats} processes)")
    for column, label in ((0, "import"), (1, "load (after import)")):
        base = statistics.median(times[column] for times in base_times)
        mine = statistics.median(times[column] for times in our_times)
        print(f"{label:<20}{base:>19.3f}s{mine:>15.3f}s{mine / base:>7.2f}x")


if __name__ == "__main__":
    main()
