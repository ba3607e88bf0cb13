"""Where2Place scoring speed: ours (`score_where2place`, protocol="original") vs a plain re-implementation of the
original summarize_vqa.py loop (written here from its description), on 100 answers.

Uses /work/shared/data/where2place (100 real masks) if present, else synthetic 640x480 JPEG masks. Run:
    python benchmarks/bench_metric.py
"""

import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from robopoint_hf.where2place import score_where2place


def baseline(texts, mask_paths):
    """The original loop: regex tuples, 640x480 int() scaling, boxes as pixel grids, soft mask mean, skip errors."""
    accuracy = []
    for idx, path in enumerate(mask_paths):
        try:
            points = []
            for match in re.findall(r"\(([-+]?\d+\.?\d*(?:,\s*[-+]?\d+\.?\d*)*?)\)", texts[idx]):
                nums = [float(v) if "." in v else int(v) for v in match.split(",")]
                if len(nums) == 2:
                    x, y = nums
                    if isinstance(x, float) or isinstance(y, float):
                        x, y = int(x * 640), int(y * 480)
                    points.append((x, y))
                elif len(nums) == 4:
                    x0, y0, x1, y1 = nums
                    if isinstance(x0, float):
                        x0, y0, x1, y1 = int(x0 * 640), int(y0 * 480), int(x1 * 640), int(y1 * 480)
                    grid = np.stack(np.meshgrid(np.arange(640), np.arange(480)), -1)[y0:y1, x0:x1]
                    points.extend(map(tuple, grid.reshape(-1, 2)))
        except Exception:
            continue
        mask = np.array(Image.open(path)) / 255
        acc = 0.0
        if points:
            pts = np.array(points)
            inside = (pts[:, 0] >= 0) & (pts[:, 0] < mask.shape[1]) & (pts[:, 1] >= 0) & (pts[:, 1] < mask.shape[0])
            acc = np.concatenate([mask[pts[inside, 1], pts[inside, 0]], np.zeros(len(pts) - inside.sum())]).mean()
        accuracy.append(acc)
    return float(np.mean(accuracy))


def make_data(tmp: Path):
    real = Path("/work/shared/data/where2place/masks")
    if real.is_dir():
        return sorted(real.glob("*.jpg"))[:100], "real Where2Place masks"
    rng = np.random.default_rng(0)
    paths = []
    for i in range(100):
        m = np.zeros((480, 640), np.uint8)
        x, y = rng.integers(0, 500), rng.integers(0, 350)
        m[y : y + 120, x : x + 130] = 255
        Image.fromarray(m).save(tmp / f"{i:02d}.jpg")
        paths.append(tmp / f"{i:02d}.jpg")
    return paths, "synthetic masks"


def main():
    rnd = random.Random(0)
    texts = [
        "[" + ", ".join(f"({rnd.random():.3f}, {rnd.random():.3f})" for _ in range(rnd.randint(1, 8))) + "]"
        for _ in range(100)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        paths, source = make_data(Path(tmp))
        rows = []
        for label, fn in (
            ("baseline loop", lambda: baseline(texts, paths)),
            ("ours (paths)", lambda: score_where2place(texts, paths, protocol="original").accuracy),
        ):
            fn()  # warm-up (file cache)
            times = []
            for _ in range(5):
                t = time.perf_counter()
                value = fn()
                times.append(time.perf_counter() - t)
            rows.append((label, min(times), value))
    base = rows[0][1]
    print(f"Where2Place scoring, 100 answers, {source}, best of 5")
    print(f"{'impl':<16}{'seconds':>10}{'ratio':>8}  accuracy")
    for label, sec, value in rows:
        print(f"{label:<16}{sec:>10.4f}{sec / base:>8.2f}  {value!r}")


if __name__ == "__main__":
    main()
