"""Where2Place scoring speed: ours vs a plain re-implementation of the original summarize_vqa.py loop (written here
from its description), on 100 questions.

Two workloads:

* one answer file (what ``summarize_vqa.py`` does): both sides read the file and decode the 100 JPEG masks, which is
  ~90 % of the time, so the best possible ratio is close to 1 on a busy 2-core machine;
* comparing three models (three answer files): the original is run once per file and decodes every mask again;
  `score_answer_files` decodes them once (in threads) and scores every file, and can add protocols for ~4 ms each.

Uses /work/shared/data/where2place (100 real masks) if present, else synthetic 640x480 JPEG masks. Run:
    python benchmarks/bench_metric.py
"""

import json
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from robopoint_hf.evaluation.where2place import score_answer_files

REAL = Path("/work/shared/data/where2place")
N = 100


def baseline(answer_file: Path, data_dir: Path) -> float:
    """The original loop: answers by position, regex tuples, 640x480 int() scaling, soft mask mean, skip errors."""
    answers = [json.loads(line) for line in answer_file.read_text().splitlines()]
    accuracy = []
    for idx in range(N):
        try:
            points = []
            for match in re.findall(r"\(([-+]?\d+\.?\d*(?:,\s*[-+]?\d+\.?\d*)*?)\)", answers[idx]["text"]):
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
        mask = np.array(Image.open(data_dir / "masks" / f"{idx:02d}.jpg")) / 255
        acc = 0.0
        if points:
            pts = np.array(points)
            inside = (pts[:, 0] >= 0) & (pts[:, 0] < mask.shape[1]) & (pts[:, 1] >= 0) & (pts[:, 1] < mask.shape[0])
            acc = np.concatenate([mask[pts[inside, 1], pts[inside, 0]], np.zeros(len(pts) - inside.sum())]).mean()
        accuracy.append(acc)
    return float(np.mean(accuracy))


def make_data(tmp: Path) -> tuple[Path, str]:
    if (REAL / "masks").is_dir():
        return REAL, "real Where2Place masks"
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (tmp / folder).mkdir()
    lines = []
    for i in range(N):
        m = np.zeros((480, 640), np.uint8)
        x, y = rng.integers(0, 500), rng.integers(0, 350)
        m[y : y + 120, x : x + 130] = 255
        Image.fromarray(m).save(tmp / "masks" / f"{i:02d}.jpg")
        Image.new("RGB", (640, 480)).save(tmp / "images" / f"{i:02d}.jpg")
        lines.append(json.dumps({"question_id": i, "image": f"{i:02d}.jpg", "text": "?"}))
    (tmp / "point_questions.jsonl").write_text("\n".join(lines) + "\n")
    return tmp, "synthetic masks"


def write_answers(path: Path, seed: int) -> Path:
    rnd = random.Random(seed)
    lines = []
    for i in range(N):
        text = "[" + ", ".join(f"({rnd.random():.3f}, {rnd.random():.3f})" for _ in range(rnd.randint(1, 8))) + "]"
        lines.append(json.dumps({"question_id": i, "prompt": "", "text": text, "answer_id": "", "model_id": "m"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def best_of(fn, repeats: int = 5) -> tuple[float, object]:
    value = fn()  # warm-up (file cache)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data, source = make_data(Path(tmp))
        files = [write_answers(Path(tmp) / f"model{k}.jsonl", k) for k in range(3)]
        cases = [
            ("1 file", "baseline loop", lambda: baseline(files[0], data)),
            ("1 file", "ours", lambda: score_answer_files(files[:1], data, protocols=["original"])[0]["original"]),
            ("3 files", "baseline loop x3", lambda: [baseline(f, data) for f in files]),
            (
                "3 files",
                "ours",
                lambda: [r["original"] for r in score_answer_files(files, data, protocols=["original"])],
            ),
            (
                "3 files",
                "ours +strict",
                lambda: [r["original"] for r in score_answer_files(files, data, protocols=["original", "strict"])],
            ),
        ]
        rows = []
        for workload, label, fn in cases:
            seconds, value = best_of(fn)
            values = [
                v if isinstance(v, float) else v.accuracy for v in (value if isinstance(value, list) else [value])
            ]
            rows.append((workload, label, seconds, values))
    print(f"Where2Place scoring (original protocol), {N} questions, {source}, best of 5")
    print(f"{'workload':<9}{'impl':<18}{'seconds':>9}{'ratio':>7}  accuracy")
    base = {}
    for workload, label, seconds, values in rows:
        base.setdefault(workload, seconds)
        shown = ", ".join(f"{v:.6f}" for v in values)
        print(f"{workload:<9}{label:<18}{seconds:>9.4f}{seconds / base[workload]:>7.2f}  {shown}")
    print("'ours +strict' also scores every file under the strict protocol (more work than the baseline does).")


if __name__ == "__main__":
    main()
