"""GPU check of the demo's column placement (``@cuda:N``, ``@auto``): run on a machine with at least one GPU.

Loads the shipped tiny model as demo columns on ``cpu``, on every visible GPU (``@cuda:N``) and spread with
``@auto``, asks each the same question, and checks that every weight is where the placement says and that greedy
answers agree with the CPU column (same text; points equal). Exits non-zero on any mismatch.

    python scripts/gpu_check_demo_placement.py
"""

from __future__ import annotations

import sys

import torch
from PIL import Image

from robopoint_hf.checkpoints import DEFAULT_MODEL_DIR
from robopoint_hf.demo.app import EXAMPLES_DIR, answer_all, load_models


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device visible: nothing to check")
        return 1
    sources = {"cpu": f"{DEFAULT_MODEL_DIR}@cpu", "auto": f"{DEFAULT_MODEL_DIR}@auto"}
    sources |= {f"cuda:{i}": f"{DEFAULT_MODEL_DIR}@cuda:{i}" for i in range(torch.cuda.device_count())}
    columns = load_models(sources, dtype="float32")
    failures = []
    for name, pipe in columns.items():
        devices = {str(parameter.device) for parameter in pipe.model.parameters()}
        expected = {"cpu"} if name == "cpu" else ({name} if name.startswith("cuda:") else None)
        print(f"{name:>7}: weights on {sorted(devices)}")
        if expected is not None and devices != expected:
            failures.append(f"{name}: weights on {sorted(devices)}")
        if name == "auto" and devices == {"cpu"}:
            failures.append("auto: nothing on a GPU")
    image = Image.open(EXAMPLES_DIR / "sink.jpg")
    answers = {a.name: a for a in answer_all(columns, image, "Find a few spots on the rightmost white plate.")}
    reference = answers["cpu"].result
    for name, answer in answers.items():
        same = answer.error is None and answer.result["text"] == reference["text"]
        print(f"{name:>7}: {answer.status()}; {answer.result['text']!r}; same as cpu: {same}")
        if not same:
            failures.append(f"{name}: {answer.error or answer.result['text']!r} differs from cpu")
    print("OK" if not failures else "FAILED:\n  " + "\n  ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
