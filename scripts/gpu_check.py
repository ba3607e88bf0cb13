"""One prepared GPU check: CUDA parity with the original's references, real-size latency and a LoRA step.

    python scripts/gpu_check.py --output OUT             # one CUDA GPU, no network: < 8 minutes on an H100
    python scripts/gpu_check.py --dry-run --output OUT   # the same code on CPU with tiny shapes (the test suite)

Writes ``OUT/gpu_check.md`` and ``OUT/gpu_check.json``, rewritten after every section so that a run cut short
still leaves a report. Every section records its own failure (traceback tail) and the run goes on; a global time
budget (``--budget-s``) skips the sections, or the workloads inside one, that no longer fit, and says so.

1. ``environment``: installed versions against pyproject's requirements; ``pip install --no-deps -e .`` of this
   tree (no network needed); missing optional packages (trl, bitsandbytes, ...) skip their sections.
2. ``parity``: the fixture checkpoints of ``tests/fixtures/original`` in float32 / bfloat16 / float16 against the
   original code's float32 references: processor ids and pixels exact, logits within the dtype's tolerance
   (``LOGIT_TOLERANCE``), greedy tokens equal (in 16 bits up to the first step whose reference top-1/top-2 margin
   is within twice the tolerance, where rounding may legitimately pick the other token); eager attention against
   the same references and against SDPA; a left-padded mixed-length batch equal to single runs.
3. ``latency-13b`` / ``latency-7b``: random weights in the published shapes (Vicuna-13B / -7B + CLIP
   ViT-L/14-336, bf16), ours and transformers' ``LlavaForConditionalGeneration`` sharing the same weights, side
   by side: prefill of one Where2Place-like question, one answer of 8 points (length forced), a batch of 8
   questions, five questions about one frame; plus the pipeline with free vs grammar-constrained decoding (step
   by step and with jump-forward) and five questions sharing one frame's prefix. Milliseconds per answer,
   tokens/s, peak GPU memory.
4. ``latency-13b-4bit``: the same model with its language model in 4-bit NF4 (bitsandbytes), if installed.
5. ``lora-7b``: LoRA training steps on the 7B shape: our trainer vs plain TRL ``SFTTrainer`` on the native class
   with the same weights and data, samples/s and peak memory, if TRL is installed.
6. ``demo-placement``: the demo's column placements (``@cpu``, ``@cuda:N``, ``@auto``) load where they say and
   answer as the CPU column does.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]  # this tree, even where the install step fails

import torch  # noqa: E402

FIXTURES = ROOT / "tests/fixtures/original"
TOKENIZER = FIXTURES / "vicuna-mlp2x-full"
FRAME = FIXTURES / "images/sink.jpg"  # 640 x 480, like Where2Place
SCHEMA_VERSION = 1
VOCAB = 32000

# Largest |logit difference| to the original's float32 references (logits are of order 10), over the last
# position, the reference rows and every position's max and logsumexp. float32 is the test suite's tolerance
# (exactness is asserted there). The 16-bit ones are about 1.5x the largest difference the same fixtures give on
# CPU (bf16 1.3, fp16 0.12: the logits themselves are 16-bit, a bf16 ulp at 8-16 is 0.0625): they catch a wrong
# weight or feature path (differences of 10 and more), not rounding.
LOGIT_TOLERANCE = {"float32": 1e-4, "bfloat16": 2.0, "float16": 0.25}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# (checkpoint, model_base, prompt template of its references)
PARITY_CHECKPOINTS = [
    ("vicuna-mlp2x-full", None, "llava_v1"),
    ("llama2-linear-full", None, "llava_llama_2"),
    ("vicuna-mlp2x-lora", "vicuna-base", "llava_v1"),
]
PARITY_IMAGES = {"sink": "images/sink.jpg", "synthetic_500x300": "images/synthetic_500x300.png"}

CLIP_L_336 = dict(
    model_type="clip_vision_model",
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
LLAMA = dict(model_type="llama", vocab_size=VOCAB, max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=0)
VICUNA_13B = dict(LLAMA, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40)
VICUNA_7B = dict(LLAMA, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)
TINY_VISION = dict(
    model_type="clip_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=28,
    patch_size=14,
)
# hidden 64: bitsandbytes' 4-bit blocks are 64 wide.
TINY_TEXT = dict(LLAMA, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
SHAPES = {
    "13b": ("Vicuna-13B + CLIP ViT-L/14-336", CLIP_L_336, VICUNA_13B),
    "7b": ("Vicuna-7B + CLIP ViT-L/14-336", CLIP_L_336, VICUNA_7B),
    "tiny": ("tiny (dry run)", TINY_VISION, TINY_TEXT),
}
ANSWER_POINTS = 8


class Budget:
    """Seconds left of the run's time budget."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


class Device:
    """The device under test: CUDA, or the CPU in a dry run (no memory statistics there)."""

    def __init__(self, dry_run: bool):
        self.type = "cpu" if dry_run else "cuda"
        self.torch_device = torch.device(self.type)

    @property
    def cuda(self) -> bool:
        return self.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def describe(self) -> str:
        if not self.cuda:
            return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores; dry run)"
        props = torch.cuda.get_device_properties(0)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor})"


def timed(device: Device, function: Callable, repeats: int = 1) -> tuple[float, object]:
    """Best wall time of `repeats` calls (the device synchronised around each) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        device.sync()
        start = time.perf_counter()
        result = function()
        device.sync()
        best = min(best, time.perf_counter() - start)
    return best, result


class SectionSkipped(Exception):
    """Raised inside a section whose prerequisite is missing; the report says why."""


class Report:
    """Sections, each with a status, rows of measurements and notes, written as JSON and Markdown."""

    def __init__(self, output: Path, mode: str, device: Device, budget: Budget):
        self.output = output
        self.budget = budget
        self.data = {
            "schema_version": SCHEMA_VERSION,
            "mode": mode,
            "device": device.describe() if mode == "dry-run" or torch.cuda.is_available() else "no CUDA device",
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "budget_s": budget.seconds,
            "elapsed_s": 0.0,
            "sections": [],
        }

    def run(self, section_id: str, title: str, function: Callable[[dict], None], needs_s: float) -> dict:
        """Runs one section; a failure is recorded, never raised. `needs_s`: least time worth starting with."""
        section = {"id": section_id, "title": title, "status": "ok", "seconds": 0.0, "reason": None}
        section.update({"error": None, "notes": [], "rows": []})
        self.data["sections"].append(section)
        left = self.budget.left()
        start = time.perf_counter()
        if left < needs_s:
            section["status"] = "skipped"
            section["reason"] = f"time budget spent ({left:.0f} s left, the section needs about {needs_s:.0f} s)"
        else:
            try:
                function(section)
                failed = [row for row in section["rows"] if row.get("passed") is False]
                if failed:
                    section["status"] = "failed"
                    section["reason"] = f"{len(failed)} of {len(section['rows'])} rows did not pass"
            except SectionSkipped as skip:
                section["status"], section["reason"] = "skipped", str(skip)
            except Exception as error:  # noqa: BLE001 -- every failure is a result to report
                section["status"] = "failed"
                section["reason"] = f"{type(error).__name__}: {error}"[:500]
                section["error"] = traceback.format_exc()[-4000:]
        section["seconds"] = round(time.perf_counter() - start, 2)
        print(f"[gpu_check] {section_id}: {section['status']} in {section['seconds']} s", flush=True)
        self.write()
        return section

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.budget.elapsed(), 2)
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / "gpu_check.json").write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        (self.output / "gpu_check.md").write_text(render_markdown(self.data))


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 100:
            return f"{value:.3g}"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2e}"
    return str(value).replace("|", "\\|")


def render_markdown(data: dict) -> str:
    lines = [
        "# GPU check",
        "",
        f"- device: {data['device']}",
        f"- mode: {data['mode']}; started {data['started']}; {data['elapsed_s']:.0f} s of a {data['budget_s']:.0f} s "
        "budget",
        "",
    ]
    for section in data["sections"]:
        lines += [f"## {section['title']}", "", f"**{section['status']}** in {section['seconds']:.1f} s"]
        if section["reason"]:
            lines[-1] += f": {section['reason']}"
        lines.append("")
        lines += [f"- {note}" for note in section["notes"]]
        if section["notes"]:
            lines.append("")
        rows = section["rows"]
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row))
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "---|" * len(columns))
            lines += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in rows]
            lines.append("")
        if section["error"]:
            lines += ["```", section["error"].rstrip(), "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# 1. environment
# ---------------------------------------------------------------------------------------------------------------

OPTIONAL_FOR = {"trl": "lora-7b", "datasets": "lora-7b", "bitsandbytes": "latency-13b-4bit", "flash_attn": None}


def _requirements() -> list[tuple[str, str]]:
    """(distribution, specifier) of the core dependencies and the training extra, from pyproject.toml."""
    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["train"]
    return [(requirement.name, str(requirement.specifier)) for requirement in map(Requirement, listed)]


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def detect_features() -> dict[str, bool]:
    """Optional accelerators of this machine the report records."""
    return {"flash_attention_2": importlib.util.find_spec("flash_attn") is not None}


def environment(section: dict, args, device: Device) -> None:
    from packaging.specifiers import SpecifierSet

    section["notes"].append(f"python {sys.version.split()[0]}, {platform.platform()}")
    if device.cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device; run with --dry-run on a CPU machine")
        section["notes"].append(
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
            f"bf16 supported: {torch.cuda.is_bf16_supported()}"
        )
    for name, specifier in [("torch", ""), *_requirements()]:
        version = _installed(name)
        fits = version is not None and (not specifier or SpecifierSet(specifier).contains(version, prereleases=True))
        row = {"package": name, "required": specifier or "any", "installed": version, "fits": fits}
        section["rows"].append(row)
    for name in ("flash_attn",):
        section["rows"].append(
            {"package": name, "required": "optional", "installed": _installed(name.replace("_", "-"))}
        )
    if args.dry_run or args.no_install:
        section["notes"].append("install: skipped (dry run or --no-install); this tree is imported through sys.path")
    else:
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(ROOT)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=240)
        outcome = "ok" if result.returncode == 0 else f"failed (rc {result.returncode}): {result.stderr[-300:]}"
        section["notes"].append(f"`pip install --no-deps --no-build-isolation -e .`: {outcome}")
    import robopoint_hf

    section["notes"].append(
        f"robopoint_hf {robopoint_hf.__version__} imported from {Path(robopoint_hf.__file__).parent}"
    )
    features = detect_features()
    section["notes"].append("features: " + ", ".join(f"{name}={value}" for name, value in features.items()))


# ---------------------------------------------------------------------------------------------------------------
# 2. parity with the original's references
# ---------------------------------------------------------------------------------------------------------------


def _expanded(ids: list[int], length: int = 576) -> list[int]:
    """Original ids (one -200 per image) -> ours (`length` placeholder ids per image)."""
    return [token for i in ids for token in ([VOCAB] * length if i == -200 else [i])]


def _reference(checkpoint: str, template: str, stem: str) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    folder = FIXTURES / "refs" / checkpoint / template
    return json.loads((folder / f"{stem}.json").read_text()), load_file(folder / f"{stem}.safetensors")


def _greedy_steps_checked(margins: list[float] | None, tolerance: float, steps: int) -> int:
    """Leading greedy steps whose reference top-1/top-2 margin exceeds what the dtype's rounding can flip."""
    if margins is None:
        return steps
    return next((step for step, margin in enumerate(margins) if margin <= 2 * tolerance), steps)


def _greedy_row(generated: list[int], expected: list[int], checked: int) -> dict:
    return {
        "greedy_equal": generated == expected,
        "greedy_steps_checked": checked,
        "greedy_ok": generated[:checked] == expected[:checked],
    }


@torch.no_grad()
def parity(section: dict, device: Device, dtypes: list[str], dry_run: bool) -> None:
    """Every checkpoint x image x dtype; eager attention, ``batch2`` and the mixed-length batch on the first
    checkpoint. A dry run keeps the sink image, and bfloat16 for the first checkpoint only (CPU time)."""
    from PIL import Image
    from safetensors.torch import load_file

    from robopoint_hf import RoboPointForConditionalGeneration, RoboPointProcessor

    section["notes"].append(
        "tolerances (max |logit difference| to the float32 references): "
        + ", ".join(f"{name} {LOGIT_TOLERANCE[name]:g}" for name in dtypes)
        + "; TF32 off for float32"
    )
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    images = {stem: Image.open(FIXTURES / path).convert("RGB") for stem, path in PARITY_IMAGES.items()}
    stems = ["sink"] if dry_run else list(images)
    try:
        processors = {}
        for checkpoint, base, _ in PARITY_CHECKPOINTS:
            base_folder = str(FIXTURES / base) if base else None
            processors[checkpoint] = RoboPointProcessor.from_pretrained(FIXTURES / checkpoint, model_base=base_folder)
        for dtype_name in dtypes:
            dtype, tolerance = DTYPES[dtype_name], LOGIT_TOLERANCE[dtype_name]
            for checkpoint, base, template in PARITY_CHECKPOINTS:
                first = checkpoint == PARITY_CHECKPOINTS[0][0]
                if dry_run and dtype_name != "float32" and not first:
                    continue
                model = RoboPointForConditionalGeneration.from_pretrained(
                    FIXTURES / checkpoint, model_base=str(FIXTURES / base) if base else None, dtype=dtype
                )
                model.to(device.torch_device).eval()
                processor = processors[checkpoint]
                common = {"checkpoint": checkpoint, "template": template, "dtype": dtype_name, "tolerance": tolerance}
                for stem in stems:
                    image = images[stem]
                    meta, ref = _reference(checkpoint, template, stem)
                    inputs = processor(images=image, text=meta["prompt"], return_tensors="pt")
                    pixels = load_file(FIXTURES / "refs/inputs" / f"{stem}.safetensors")["pixel_values"]
                    ids_exact = inputs["input_ids"][0].tolist() == _expanded(ref["input_ids"].tolist())
                    ids_exact = ids_exact and torch.equal(inputs["pixel_values"][0], pixels)
                    inputs = inputs.to(device.torch_device)
                    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
                    attentions = ["sdpa", "eager"] if first else ["sdpa"]
                    logits_by_attention = {}
                    for attention in attentions:
                        model.set_attn_implementation(attention)
                        logits = model(**inputs).logits[0, :, :VOCAB].float().cpu()
                        logits_by_attention[attention] = logits
                        difference = max(
                            (logits[-1] - ref["logits_last"]).abs().max().item(),
                            (logits[ref["logits_rows_positions"]] - ref["logits_rows"]).abs().max().item(),
                            (logits.max(-1).values - ref["logits_max"]).abs().max().item(),
                            (logits.logsumexp(-1) - ref["logits_logsumexp"]).abs().max().item(),
                        )
                        argmax_agree = (logits.argmax(-1) == ref["logits_argmax"]).float().mean().item()
                        generated = model.generate(**inputs, max_new_tokens=12, do_sample=False)
                        generated = generated[0, inputs["input_ids"].shape[1] :].tolist()
                        margins = meta.get("generate_step_top1_minus_top2")
                        checked = _greedy_steps_checked(margins, tolerance, len(meta["generated_ids"]))
                        row = {**common, "case": stem, "attention": attention, "ids_exact": ids_exact}
                        row.update({"max_logit_diff": difference, "argmax_agree": argmax_agree})
                        row.update(_greedy_row(generated, meta["generated_ids"], checked))
                        row["passed"] = ids_exact and difference <= tolerance and row["greedy_ok"]
                        if dtype_name == "float32":
                            row["passed"] = row["passed"] and row["greedy_equal"] and argmax_agree == 1.0
                        section["rows"].append(row)
                    model.set_attn_implementation("sdpa")
                    if "eager" in logits_by_attention:
                        difference = (logits_by_attention["eager"] - logits_by_attention["sdpa"]).abs().max().item()
                        row = {**common, "case": f"{stem}: eager vs sdpa", "attention": "both"}
                        # Each is within `tolerance` of the reference, so within twice that of the other.
                        row.update({"max_logit_diff": difference, "tolerance": 2 * tolerance})
                        row["passed"] = difference <= 2 * tolerance
                        section["rows"].append(row)
                if first and not (dry_run and dtype_name != "float32"):
                    section["rows"].append(_batch_row(model, processor, images, checkpoint, template, common, device))
                    section["rows"].append(_mixed_batch_row(model, processor, common, device))
                del model
                device.free()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _batch_row(model, processor, images, checkpoint, template, common, device) -> dict:
    """The `batch2` reference: both images with the same prompt in one batch."""
    from safetensors.torch import load_file

    ref = load_file(FIXTURES / "refs" / checkpoint / template / "batch2.safetensors")
    prompt = _reference(checkpoint, template, "sink")[0]["prompt"]
    inputs = processor(images=list(images.values()), text=[prompt, prompt], return_tensors="pt")
    ids_exact = inputs["input_ids"].tolist() == [_expanded(row) for row in ref["input_ids"].tolist()]
    inputs = inputs.to(device.torch_device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    logits = model(**inputs).logits[:, :, :VOCAB].float().cpu()
    difference = (logits[:, -1] - ref["logits_last"]).abs().max().item()
    generated = model.generate(**inputs, max_new_tokens=12, do_sample=False)[:, inputs["input_ids"].shape[1] :]
    margins = [
        _reference(checkpoint, template, stem)[0].get("generate_step_top1_minus_top2") for stem in PARITY_IMAGES
    ]
    checked = min(_greedy_steps_checked(margin, common["tolerance"], 12) for margin in margins)
    row = {**common, "case": "batch2", "attention": "sdpa", "ids_exact": ids_exact, "max_logit_diff": difference}
    row.update(_greedy_row(generated.tolist(), ref["generated_ids"].tolist(), checked))
    row["passed"] = ids_exact and difference <= common["tolerance"] and row["greedy_ok"]
    if common["dtype"] == "float32":
        row["passed"] = row["passed"] and row["greedy_equal"]
    return row


def _mixed_batch_row(model, processor, common, device) -> dict:
    """A left-padded batch of two prompts of different lengths gives each row its single-run tokens.

    Exact in float32; in 16 bits the padded batch runs other kernels, so a difference is reported, not failed.
    """
    meta = json.loads((FIXTURES / "refs/vicuna-mlp2x-full/llava_v1/batch_mixed_lengths.json").read_text())
    from PIL import Image

    images = [Image.open(FIXTURES / path).convert("RGB") for path in meta["images"]]

    def run(inputs):
        inputs = inputs.to(device.torch_device)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        return model.generate(**inputs, max_new_tokens=8, do_sample=False)[:, inputs["input_ids"].shape[1] :].tolist()

    batched = run(processor(images=images, text=meta["questions"], return_tensors="pt"))
    singles = [
        run(processor(images=image, text=q, return_tensors="pt"))[0]
        for image, q in zip(images, meta["questions"], strict=True)
    ]
    equal = batched == singles
    row = {**common, "case": "mixed-length batch == single runs", "attention": "sdpa", "greedy_equal": equal}
    row["passed"] = equal if common["dtype"] == "float32" else None
    return row


# ---------------------------------------------------------------------------------------------------------------
# 3./4. real-size latency
# ---------------------------------------------------------------------------------------------------------------


def _processor(vision: dict):
    from transformers import AutoTokenizer

    from robopoint_hf import RoboPointImageProcessor, RoboPointProcessor

    size = vision["image_size"]
    seq = (size // vision["patch_size"]) ** 2
    return RoboPointProcessor(
        RoboPointImageProcessor(size=size), AutoTokenizer.from_pretrained(TOKENIZER), image_seq_length=seq
    )


def answer_length(processor) -> int:
    """Tokens of a RoboPoint answer of `ANSWER_POINTS` points, its `</s>` included."""
    from robopoint_hf.model.points import format_points

    points = [(0.1 + 0.097 * i, 0.85 - 0.083 * i) for i in range(ANSWER_POINTS)]
    return len(processor.tokenizer(format_points(points), add_special_tokens=False).input_ids) + 1


def quantize_language_model_4bit_(model, compute_dtype: torch.dtype) -> int:
    """Replaces every Linear of the language model with a bitsandbytes NF4 ``Linear4bit`` (double quantization),
    in place, as ``quantization_config(4)`` loads it: the vision tower, projector and LM head stay in 16 bits.

    Returns the number of layers replaced.
    """
    import bitsandbytes as bnb

    count = 0
    for parent in list(model.model.language_model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=compute_dtype,
                compress_statistics=True,
                quant_type="nf4",
                device="meta",
            )
            weight = bnb.nn.Params4bit(
                child.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4", module=layer
            )
            layer.weight = weight.to(child.weight.device)  # quantizes
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, layer)
            count += 1
    return count


def latency(section: dict, args, device: Device, budget: Budget, shape: str, *, bits: int | None = None) -> None:
    from PIL import Image
    from random_models import QUESTIONS, native_twin, random_robopoint

    from robopoint_hf.model.points import add_answer_format

    if bits == 4 and importlib.util.find_spec("bitsandbytes") is None:
        raise SectionSkipped("bitsandbytes is not installed")
    label, vision, text = SHAPES["tiny" if args.dry_run else shape]
    dtype = torch.bfloat16
    processor = _processor(vision)
    new_tokens = args.new_tokens or answer_length(processor)
    start = time.perf_counter()
    ours = random_robopoint(
        vision, text, dtype=dtype, device=device.torch_device, image_seq_length=processor.image_seq_length
    )
    device.sync()
    parameters = sum(p.numel() for p in ours.parameters())
    size = f"{parameters / 1e9:.2f} B" if parameters > 1e8 else f"{parameters / 1e6:.1f} M"
    answer = f"an {ANSWER_POINTS}-point answer + </s>" if not args.new_tokens else "--new-tokens"
    section["notes"].append(
        f"{label}, bf16, random weights ({size} parameters), built on the device in "
        f"{time.perf_counter() - start:.1f} s; answers forced to {new_tokens} new tokens ({answer}); best of "
        f"{args.repeats} after a warm-up; peak memory counts the weights (shared by ours and native LLaVA)"
    )
    models = {"ours": ours}
    if bits == 4:
        replaced = quantize_language_model_4bit_(ours, dtype)
        device.free()
        section["notes"].append(f"language model quantized in place: {replaced} Linear layers -> NF4 Linear4bit")
        models = {"ours 4-bit": ours}
    elif not args.no_native:
        models["native LLaVA"] = native_twin(ours)
    frame = Image.open(FRAME).convert("RGB")
    prompts = [add_answer_format(question) for question in QUESTIONS]
    one = processor(images=frame, text=prompts[0], return_tensors="pt").to(device.torch_device)
    eight = processor(images=[frame] * 8, text=prompts, return_tensors="pt").to(device.torch_device)
    five = processor(images=[frame] * 5, text=prompts[:5], return_tensors="pt").to(device.torch_device)
    for inputs in (one, eight, five):
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    forced = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    section["notes"].append(
        f"prompt: {one['input_ids'].shape[1]} tokens ({processor.image_seq_length} image positions); "
        "5 questions on 1 frame: ours encodes the frame once (`encode_images` + `image_features=`), native LLaVA "
        "runs the 5 rows with the frame each"
    )

    def generate(model, inputs, **kwargs):
        extra = {"suppress_tokens": [VOCAB]} if model is not ours else {}
        return model.generate(**inputs, **forced, **extra, **kwargs)

    def five_questions(model):
        if model is not ours:
            return generate(model, five)
        features = ours.encode_images(five["pixel_values"][:1])
        text_only = {key: value for key, value in five.items() if key != "pixel_values"}
        return ours.generate(**text_only, image_features=features.expand(5, -1, -1), **forced)

    workloads = [
        ("prefill, 1 question", 1, lambda model: model(**one, logits_to_keep=1), False),
        ("1 question", 1, lambda model: generate(model, one), True),
        ("batch of 8 questions", 8, lambda model: generate(model, eight), True),
        ("5 questions, 1 frame", 5, five_questions, True),
    ]
    estimates: dict[str, float] = {}  # seconds the last model took for a workload, warm-up included
    ours_tokens: dict[str, torch.Tensor] = {}
    for workload, answers, function, generates in workloads:
        for name, model in models.items():
            if budget.left() < estimates.get(workload, 0.0) + 5:
                section["rows"].append({"workload": workload, "model": name, "skipped": "time budget spent"})
                continue
            with torch.inference_mode():
                if generates:  # warm-up: same shapes, few tokens
                    model.generate(**_inputs_of(workload, one, eight, five), max_new_tokens=2, do_sample=False)
                else:
                    function(model)
                device.reset_peak()
                seconds, result = timed(device, lambda: function(model), args.repeats)  # noqa: B023
            estimates[workload] = seconds * (args.repeats + 1)
            row = {"workload": workload, "model": name, "answers": answers}
            if generates:
                new = result[:, -new_tokens:]
                row.update(
                    {
                        "new_tokens": new_tokens,
                        "ms_per_answer": seconds * 1e3 / answers,
                        "tokens_per_s": answers * new_tokens / seconds,
                    }
                )
                if model is ours:
                    ours_tokens[workload] = new.cpu()
                elif workload in ours_tokens:
                    row["same_tokens_as_ours"] = torch.equal(new.cpu(), ours_tokens[workload])
            else:
                row["ms"] = seconds * 1e3
            row["peak_gb"] = device.peak_gb()
            section["rows"].append(row)
        _ratio_note(section, workload, models)
    if bits is None:  # decoding options are compared once per shape, at the model's own precision
        _decoding_rows(section, args, ours, processor, frame, prompts, new_tokens, device, budget)
    models = ours = None  # noqa: F841 -- frees the weights before the next section
    device.free()


def _inputs_of(workload: str, one, eight, five):
    return {"batch of 8 questions": eight, "5 questions, 1 frame": five}.get(workload, one)


def _ratio_note(section: dict, workload: str, models: dict) -> None:
    rows = {row["model"]: row for row in section["rows"] if row.get("workload") == workload and "skipped" not in row}
    key = "ms_per_answer" if "ms_per_answer" in rows.get("ours", {}) else "ms"
    if "ours" in rows and "native LLaVA" in rows:
        ratio = rows["ours"][key] / rows["native LLaVA"][key]
        section["notes"].append(f"{workload}: ours / native LLaVA time = {ratio:.3f}")


def _decoding_rows(section, args, model, processor, frame, prompts, new_tokens, device, budget) -> None:
    """Pipeline rows: free vs grammar-constrained decoding (step by step and with jump-forward), and five questions
    on one frame (shared prefix)."""
    from robopoint_hf.model.pipeline_robopoint import RoboPointPipeline

    pipe = RoboPointPipeline(model=model, processor=processor, device=device.torch_device)
    cases = [
        ("pipeline, free decoding", prompts[0], {"constrained": False}),
        ("pipeline, constrained decoding, step by step", prompts[0], {"constrained": True, "jump_forward": False}),
        ("pipeline, constrained decoding, jump-forward", prompts[0], {"constrained": True}),
        ("pipeline, 5 questions, 1 frame (shared prefix)", prompts[:5], {}),
    ]
    for workload, text, options in cases:
        if budget.left() < 10:
            section["rows"].append({"workload": workload, "model": "ours", "skipped": "time budget spent"})
            continue
        with torch.inference_mode():
            pipe(frame, text, max_new_tokens=new_tokens, **options)
            device.reset_peak()
            seconds, result = timed(device, lambda: pipe(frame, text, max_new_tokens=new_tokens, **options))  # noqa: B023
        results = result if isinstance(result, list) else [result]
        tokens = sum(len(processor.tokenizer(r["text"], add_special_tokens=False).input_ids) + 1 for r in results)
        section["rows"].append(
            {
                "workload": workload,
                "model": "ours",
                "answers": len(results),
                "new_tokens": tokens / len(results),
                "ms_per_answer": seconds * 1e3 / len(results),
                "tokens_per_s": tokens / seconds,
                "peak_gb": device.peak_gb(),
            }
        )
    timed_rows = {row["workload"]: row for row in section["rows"] if "ms_per_answer" in row and "answers" in row}
    alone, shared = (
        timed_rows.get(f"pipeline, {name}")
        for name in ("constrained decoding, jump-forward", "5 questions, 1 frame (shared prefix)")
    )
    if alone and shared:
        section["notes"].append(
            "5 questions, 1 frame: one call per question (jump-forward) / shared prefix, time per answer = "
            f"{alone['ms_per_answer'] / shared['ms_per_answer']:.2f}x"
        )


# ---------------------------------------------------------------------------------------------------------------
# 5. LoRA training step
# ---------------------------------------------------------------------------------------------------------------


def lora_training(section: dict, args, device: Device, budget: Budget) -> None:
    missing = [name for name in ("trl", "peft", "datasets") if importlib.util.find_spec(name) is None]
    if missing:
        raise SectionSkipped(f"{', '.join(missing)} not installed")
    from random_models import native_twin, random_robopoint
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from robopoint_hf.model.templates import get_chat_template
    from robopoint_hf.original.convert import llava_processor
    from robopoint_hf.training.collator import RoboPointDataCollator
    from robopoint_hf.training.trainer import ModelArguments, RoboPointSFTConfig, lora_config, make_trainer

    label, vision, text = SHAPES["tiny" if args.dry_run else "7b"]
    steps, batch_size = (3, 2) if args.dry_run else (args.train_steps, args.train_batch_size)
    dtype = torch.bfloat16 if device.cuda else torch.float32
    processor = _processor(vision)
    model = random_robopoint(
        vision, text, dtype=dtype, device=device.torch_device, image_seq_length=processor.image_seq_length
    )
    model.config.use_cache = False
    model.model.vision_tower.requires_grad_(False)
    twin = native_twin(model)
    twin.config.use_cache = False
    model_args = ModelArguments(model="random weights", lora=True)
    section["notes"].append(
        f"{label}, {dtype} weights, LoRA r={model_args.lora_r} on the language model's projections + the projector "
        f"trained in full, gradient checkpointing, batch {batch_size}, {steps} steps (the first one not timed), "
        "same weights and data for both trainers"
    )

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, *unused, **kwargs):
            device.sync()
            self.ends.append(time.perf_counter())

    def measure(name: str, make: Callable[[TrainerCallback], object]) -> None:
        if budget.left() < 20:
            section["rows"].append({"trainer": name, "skipped": "time budget spent"})
            return
        timer, trainer = StepTimer(), None
        try:
            trainer = make(timer)
            device.reset_peak()
            trainer.train()
            timed_steps = len(timer.ends) - 1
            row = {"trainer": name, "steps_timed": timed_steps, "batch_size": batch_size}
            row["samples_per_s"] = timed_steps * batch_size / (timer.ends[-1] - timer.ends[0])
            row["trainable_params_m"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad) / 1e6
            row["peak_gb"] = device.peak_gb()
            section["rows"].append(row)
        except Exception as error:  # noqa: BLE001 -- one trainer failing leaves the other's row
            section["rows"].append({"trainer": name, "failed": f"{type(error).__name__}: {error}"[:300]})
            section["notes"].append(f"{name}: " + traceback.format_exc()[-1500:])
        finally:
            del trainer
            device.free()

    with tempfile.TemporaryDirectory() as folder:
        dataset, lengths = _training_data(Path(folder), processor, steps * batch_size)
        width = RoboPointDataCollator(processor)([dataset[0]])["input_ids"].shape[1]
        section["notes"].append(f"synthetic rows of {width} tokens (image positions included)")
        common = dict(
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            gradient_checkpointing=True,
            bf16=device.cuda,
            learning_rate=2e-4,
            save_strategy="no",
            report_to="none",
            logging_steps=1000,
            dataloader_num_workers=0,
            disable_tqdm=True,
            max_length=2048,
        )
        ours_config = RoboPointSFTConfig(output_dir=f"{folder}/ours", **common)
        measure(
            "ours: RoboPointSFTTrainer",
            lambda timer: make_trainer(model, processor, dataset, lengths, ours_config, model_args, callbacks=[timer]),
        )
        model = None  # frees our trainer's model; the shared weights stay with the twin
        device.free()
        trl_config = SFTConfig(
            output_dir=f"{folder}/trl", assistant_only_loss=True, remove_unused_columns=False, **common
        )
        llava = llava_processor(TOKENIZER, twin.config, get_chat_template("vicuna_v1"), size=vision["image_size"])
        measure(
            "TRL SFTTrainer + LlavaForConditionalGeneration",
            lambda timer: SFTTrainer(
                model=twin,
                args=trl_config,
                train_dataset=dataset,
                processing_class=llava,
                peft_config=lora_config(model_args),
                callbacks=[timer],
            ),
        )
        twin = None  # noqa: F841
    device.free()
    rows = [row for row in section["rows"] if "samples_per_s" in row]
    if len(rows) == 2:
        section["notes"].append(f"samples/s ours / TRL = {rows[0]['samples_per_s'] / rows[1]['samples_per_s']:.3f}")
    if any("failed" in row for row in section["rows"]):
        raise RuntimeError("a trainer failed; see the notes")


def _training_data(folder: Path, processor, rows: int):
    """Synthetic Where2Place-like pointing rows (640 x 480 frames, 8-point answers), measured for the sampler."""
    from PIL import Image
    from random_models import QUESTIONS

    from robopoint_hf.training.data import make_pointing_record, write_robopoint_records
    from robopoint_hf.training.trainer import ScriptArguments, prepare_dataset

    (folder / "images").mkdir()
    records = []
    for index in range(max(rows, 8)):
        Image.new("RGB", (640, 480), (index * 37 % 255, 90, 160)).save(folder / "images" / f"{index}.png")
        points = [((index + 7 * k) % 97 / 100, (3 * index + 11 * k) % 89 / 100) for k in range(ANSWER_POINTS)]
        records.append(make_pointing_record(f"g/{index}", f"{index}.png", QUESTIONS[index % len(QUESTIONS)], points))
    write_robopoint_records(records, folder / "data.json")
    script = ScriptArguments(
        data=str(folder / "data.json"), image_folder=str(folder / "images"), dataset_cache_dir=str(folder / "cache")
    )
    dataset, lengths, _ = prepare_dataset(script, processor, 2048)
    return dataset, lengths


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, type=Path, help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, a few tokens (< 1 minute)")
    parser.add_argument("--budget-s", type=float, help="time budget of the whole run (default 420; dry run 120)")
    parser.add_argument("--sections", help="comma-separated section ids to run (default: all)")
    parser.add_argument("--repeats", type=int, help="timed runs per workload after the warm-up (default 2; dry 1)")
    parser.add_argument("--new-tokens", type=int, help="tokens per answer (default: an 8-point answer; dry 6)")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--train-batch-size", type=int, default=4)
    parser.add_argument("--no-install", action="store_true", help="skip `pip install --no-deps -e .`")
    parser.add_argument("--no-native", action="store_true", help="latency of ours only")
    args = parser.parse_args(argv)
    args.budget_s = args.budget_s or (120.0 if args.dry_run else 420.0)
    args.repeats = args.repeats or (1 if args.dry_run else 2)
    args.new_tokens = args.new_tokens or (6 if args.dry_run else None)
    device = Device(args.dry_run)
    budget = Budget(args.budget_s)
    if args.dry_run:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    report = Report(args.output, "dry-run" if args.dry_run else "gpu", device, budget)
    dtypes = ["float32", "bfloat16"] if args.dry_run else list(DTYPES)
    sections = [
        ("environment", "Environment", lambda s: environment(s, args, device), 0),
        (
            "parity",
            "Parity with the original (fixture checkpoints)",
            lambda s: parity(s, device, dtypes, args.dry_run),
            20,
        ),
        ("latency-13b", "Latency, 13B shape, bf16", lambda s: latency(s, args, device, budget, "13b"), 60),
        ("lora-7b", "LoRA training step, 7B shape", lambda s: lora_training(s, args, device, budget), 45),
        (
            "latency-13b-4bit",
            "Latency, 13B shape, 4-bit NF4 language model",
            lambda s: latency(s, args, device, budget, "13b", bits=4),
            45,
        ),
        ("latency-7b", "Latency, 7B shape, bf16", lambda s: latency(s, args, device, budget, "7b"), 45),
        (
            "demo-placement",
            "Demo column placement (@cpu, @cuda:N, @auto)",
            lambda s: demo_placement(s, args.dry_run),
            20,
        ),
    ]
    wanted = set(args.sections.split(",")) if args.sections else None
    if wanted and not wanted <= {section[0] for section in sections}:
        parser.error(f"unknown section(s) {sorted(wanted - {section[0] for section in sections})}")
    needs_cuda = not args.dry_run and not torch.cuda.is_available()
    for section_id, title, function, needs_s in sections:
        if wanted and section_id not in wanted and section_id != "environment":
            continue
        if needs_cuda and section_id != "environment":
            function = _skip("no CUDA device (use --dry-run on a CPU machine)")
        report.run(section_id, title, function, needs_s if not args.dry_run else 0)
    report.write()
    print(f"[gpu_check] report: {args.output / 'gpu_check.md'} ({budget.elapsed():.0f} s)")
    return 0 if all(section["status"] != "failed" for section in report.data["sections"]) else 1


def demo_placement(section: dict, dry_run: bool) -> None:
    """The demo's column placements (``@cpu``, ``@cuda:N``, ``@auto``): parsed and validated like ``robopoint demo
    --model NAME=FOLDER@PLACE``, loaded like its local columns, weights where the placement says, and the greedy
    answer of every placement equal to the CPU column's."""
    import torch
    from PIL import Image

    from robopoint_hf.checkpoints import DEFAULT_MODEL_DIR
    from robopoint_hf.demo.columns import parse_column
    from robopoint_hf.inference.loading import load_pipeline

    placements = ["cpu"] if dry_run else ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count())), "auto"]
    example = json.loads((DEFAULT_MODEL_DIR / "examples.json").read_text())[0]
    image = Image.open(DEFAULT_MODEL_DIR / example["image"]).convert("RGB")
    reference = None
    for placement in placements:
        column = parse_column(f"{DEFAULT_MODEL_DIR}@{placement}")
        pipe = load_pipeline(column.source, column.placement, "float32")
        devices = sorted({str(parameter.device) for parameter in pipe.model.parameters()})
        answer = pipe(image, example["question"], answer_format=False, max_new_tokens=64)
        reference = reference if reference is not None else answer
        expected = {"cpu": ["cpu"]}.get(placement, [placement] if placement.startswith("cuda:") else None)
        placed = devices == expected if expected is not None else any(d.startswith("cuda") for d in devices)
        section["rows"].append(
            {
                "placement": placement,
                "weights on": ", ".join(devices),
                "same answer as cpu": answer["text"] == reference["text"],
                "passed": placed and answer["text"] == reference["text"],
            }
        )


def _skip(reason: str) -> Callable[[dict], None]:
    def skip(section: dict) -> None:
        raise SectionSkipped(reason)

    return skip


if __name__ == "__main__":
    sys.exit(main())
