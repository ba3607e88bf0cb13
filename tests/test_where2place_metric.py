"""The Where2Place `evaluate` metric: self-contained loading, its documented example, and copy freshness."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robopoint_hf.hub_files import METRIC_COPIES, METRIC_DIR, PACKAGE_DIR, stale_metric_files

FIXTURES = Path(__file__).parent / "fixtures"

# Run in a fresh interpreter where robopoint_hf and torch cannot be imported: proves the Space needs only
# evaluate, numpy and pillow. Every meta-path finder (the standard one and the editable-install one) is wrapped so
# the blocked packages look "not installed": find_spec() is None and importing them raises ModuleNotFoundError.
_ISOLATED = r"""
import json, sys
BLOCKED = ("robopoint_hf", "torch", "transformers")
class Hide:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED or not hasattr(self.finder, "find_spec"):
            return None
        return self.finder.find_spec(name, path, target)
    def find_distributions(self, *args, **kwargs):
        return getattr(self.finder, "find_distributions", lambda *a, **k: [])(*args, **kwargs)
    def invalidate_caches(self):
        getattr(self.finder, "invalidate_caches", lambda: None)()
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
sys.path = [p for p in sys.path if not p.rstrip("/").endswith("src")]
import evaluate
metric = evaluate.load(sys.argv[1])
assert "robopoint_hf" not in {m.split(".")[0] for m, v in sys.modules.items() if v is not None}
data = json.loads(sys.argv[2])
from PIL import Image
masks = [Image.open(p) for p in data["masks"]]
result = metric.compute(predictions=data["texts"], references=masks, protocol="original")
print(json.dumps(result))
"""


@pytest.mark.slow
def test_metric_loads_without_robopoint_hf_or_torch(tmp_path):
    data = FIXTURES / "where2place"
    texts = [json.loads(line)["text"] for line in (data / "answers/answers_boxes.jsonl").read_text().splitlines()]
    payload = json.dumps({"texts": texts, "masks": [str(data / f"masks/{i:02d}.jpg") for i in range(6)]})
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_EVALUATE_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _ISOLATED, str(METRIC_DIR), payload],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    reference = json.loads((FIXTURES / "where2place_results.json").read_text())["datasets"]["where2place"]
    assert result["accuracy"] == reference["answers_boxes.jsonl"]["printed_accuracy"] == 0.08671445236397045
    assert result["num_skipped"] == 1


def test_metric_docstring_example_runs(monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    import doctest

    monkeypatch.setenv("WHERE2PLACE_METRIC", str(METRIC_DIR))
    metric = evaluate.load(str(METRIC_DIR))
    module = sys.modules[type(metric).__module__]
    examples = doctest.DocTestParser().get_doctest(module._KWARGS_DESCRIPTION, {}, "kwargs", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(examples)
    assert runner.failures == 0 and runner.tries == 5


def test_metric_accepts_parsed_points_and_list_masks():
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(str(METRIC_DIR))
    mask = [[0, 0, 255, 255]] * 4
    result = metric.compute(predictions=[[[0.6, 0.5], [0.1, 0.5]], []], references=[mask, mask], protocol="strict")
    assert result["per_question"] == [0.5, 0.0] and result["num_empty"] == 1 and result["accuracy"] == 0.25


def test_metric_folder_copies_match_their_sources():
    assert stale_metric_files() == [], "run `python -m robopoint_hf.hub_files` to refresh the metric Space copies"
    for source, copy in METRIC_COPIES.items():
        original = (PACKAGE_DIR / source).read_text().splitlines()
        copied = (METRIC_DIR / copy).read_text().splitlines()
        changed = [(a, b) for a, b in zip(original, copied, strict=True) if a != b]
        # Only the package import of the answer grammar differs: the Space has no robopoint_hf package.
        assert all(a.startswith("from robopoint_hf.model.points import") for a, _ in changed)
        assert all(b.startswith("from .points import") for _, b in changed)


def test_space_files_present_and_app_compiles():
    for name in ("where2place.py", "README.md", "app.py", "requirements.txt"):
        assert (METRIC_DIR / name).is_file()
    compile((METRIC_DIR / "app.py").read_text(), "app.py", "exec")
    card = (METRIC_DIR / "README.md").read_text()
    assert card.startswith("---\ntitle: Where2Place\n") and "app_file: app.py" in card and "46.77 ± 0.45" in card
    assert (METRIC_DIR / "requirements.txt").read_text().split() == ["evaluate>=0.4.6", "numpy", "pillow"]
