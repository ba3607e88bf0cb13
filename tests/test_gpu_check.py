"""scripts/gpu_check.py --dry-run: the GPU check's own code on CPU with tiny shapes, so that it cannot rot.

One run of the script (a subprocess, as on the GPU machine) for the whole module; the tests read its JSON and
Markdown report. Oracle for the parity rows: the original code's float32 references in tests/fixtures/original.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["environment", "parity", "latency-13b", "lora-7b", "latency-13b-4bit", "latency-7b", "demo-placement"]
OPTIONAL = {"lora-7b": ("trl", "peft", "datasets"), "latency-13b-4bit": ("bitsandbytes",)}

pytestmark = pytest.mark.slow  # runs the whole check as a subprocess (CPU dry run)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, str]:
    output = tmp_path_factory.mktemp("gpu_check")
    command = [sys.executable, str(ROOT / "scripts/gpu_check.py"), "--dry-run", "--output", str(output)]
    # A generous budget: the dry run must exercise every section even on a loaded machine.
    result = subprocess.run(command + ["--budget-s", "600"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((output / "gpu_check.json").read_text())
    return data, (output / "gpu_check.md").read_text()


def _section(data: dict, section_id: str) -> dict:
    return next(section for section in data["sections"] if section["id"] == section_id)


def test_every_section_ran_or_says_why_not(report):
    data, markdown = report
    assert data["schema_version"] == 1 and data["mode"] == "dry-run" and data["device"].startswith("CPU")
    assert [section["id"] for section in data["sections"]] == SECTIONS
    for section in data["sections"]:
        assert set(section) >= {"id", "title", "status", "seconds", "reason", "error", "notes", "rows"}
        missing = [name for name in OPTIONAL.get(section["id"], ()) if importlib.util.find_spec(name) is None]
        if missing:
            assert section["status"] == "skipped" and all(name in section["reason"] for name in missing)
            continue
        assert section["status"] == "ok", (section["id"], section["reason"], section["error"])
        assert section["rows"], section["id"]
        assert f"## {section['title']}" in markdown
    assert markdown.count("|---|") >= len(SECTIONS)


def test_environment_checks_the_requirements(report):
    rows = {row["package"]: row for row in _section(report[0], "environment")["rows"]}
    assert {"torch", "transformers", "accelerate", "peft", "safetensors", "tokenizers", "trl"} <= set(rows)
    assert rows["transformers"]["required"] == "<6,>=5.23" and rows["transformers"]["fits"] is True


def test_parity_rows_pass_against_the_original_references(report):
    rows = _section(report[0], "parity")["rows"]
    fp32 = [row for row in rows if row["dtype"] == "float32"]
    assert {row["checkpoint"] for row in fp32} == {"vicuna-mlp2x-full", "llama2-linear-full", "vicuna-mlp2x-lora"}
    assert {row["dtype"] for row in rows} == {"float32", "bfloat16"}
    assert {"sink", "batch2", "mixed-length batch == single runs", "sink: eager vs sdpa"} <= {r["case"] for r in rows}
    for row in fp32:
        assert row["passed"] is True, row
        if "ids_exact" in row:
            assert row["ids_exact"] is True and row["greedy_equal"] is True
        if "max_logit_diff" in row:
            assert 0 <= row["max_logit_diff"] <= row["tolerance"] <= 2e-4
    eager = next(row for row in fp32 if row["attention"] == "eager")
    assert eager["argmax_agree"] == 1.0 and eager["greedy_steps_checked"] == 12
    for row in rows:
        if row["dtype"] == "bfloat16" and "max_logit_diff" in row:
            # 16-bit rounding is visible, far below a wrong weight (the fixtures' LoRA-less control differs by 33).
            assert 0 < row["max_logit_diff"] <= row["tolerance"] < 33 and row["passed"] is True


@pytest.mark.parametrize("section_id", ["latency-13b", "latency-7b"])
def test_latency_compares_ours_with_native_llava_on_the_same_weights(report, section_id):
    rows = _section(report[0], section_id)["rows"]
    workloads = ["prefill, 1 question", "1 question", "batch of 8 questions", "5 questions, 1 frame"]
    decoding = [
        "pipeline, free decoding",
        "pipeline, constrained decoding, step by step",
        "pipeline, constrained decoding, jump-forward",
        "pipeline, 5 questions, 1 frame (shared prefix)",
    ]
    assert [(row["workload"], row["model"]) for row in rows] == [
        (workload, model) for workload in workloads for model in ("ours", "native LLaVA")
    ] + [(workload, "ours") for workload in decoding]
    for row in rows[: 2 * len(workloads)]:
        assert "peak_gb" in row
        if row["workload"] == "prefill, 1 question":
            assert row["ms"] > 0
            continue
        assert row["new_tokens"] == 6 and row["ms_per_answer"] > 0
        assert row["tokens_per_s"] == pytest.approx(row["new_tokens"] * 1e3 / row["ms_per_answer"])
        if row["model"] == "native LLaVA":
            assert row["same_tokens_as_ours"] is True  # same weights, same tokens: the twin is exact


def test_4bit_and_lora_sections_measure(report):
    data = report[0]
    if importlib.util.find_spec("bitsandbytes") is not None:
        section = _section(data, "latency-13b-4bit")
        assert {row["model"] for row in section["rows"]} == {"ours 4-bit"}
        assert any("NF4 Linear4bit" in note for note in section["notes"])
    if all(importlib.util.find_spec(name) for name in OPTIONAL["lora-7b"]):
        rows = _section(data, "lora-7b")["rows"]
        assert [row["trainer"] for row in rows] == [
            "ours: RoboPointSFTTrainer",
            "TRL SFTTrainer + LlavaForConditionalGeneration",
        ]
        assert all(row["samples_per_s"] > 0 and row["steps_timed"] == 2 for row in rows)
        assert rows[0]["trainable_params_m"] == rows[1]["trainable_params_m"]  # the same LoRA on both


def test_a_failing_section_is_recorded_and_the_run_goes_on(tmp_path):
    """A section that raises becomes a `failed` entry with its traceback; the next section still runs."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))

    report = gpu_check.Report(tmp_path, "dry-run", gpu_check.Device(dry_run=True), gpu_check.Budget(60))

    def broken(section):
        section["rows"].append({"case": "half done"})
        raise RuntimeError("CUDA out of memory")

    report.run("first", "First", broken, needs_s=0)
    report.run("second", "Second", lambda section: section["rows"].append({"passed": False}), needs_s=0)
    report.run("third", "Third", lambda section: None, needs_s=120)
    first, second, third = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert first["status"] == "failed" and "CUDA out of memory" in first["reason"] and "Traceback" in first["error"]
    assert first["rows"] == [{"case": "half done"}]
    assert second["status"] == "failed" and second["reason"] == "1 of 1 rows did not pass"
    assert third["status"] == "skipped" and "time budget" in third["reason"]
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "**failed**" in markdown and "CUDA out of memory" in markdown
