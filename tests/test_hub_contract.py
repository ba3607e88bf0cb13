"""The checkpoint contract: every folder the package writes is complete, atomic and Hub-native.

Producers (each writer of the package, over tiny models): ``robopoint convert``, ``model.save_pretrained`` +
``processor.save_pretrained``, ``RoboPointPipeline.save_pretrained``, ``robopoint merge-lora``, ``robopoint train``
(full), the tiny-model build, and the shipped default model. Consumers, in ONE fresh Python where
``import robopoint_hf`` fails and ``HF_HUB_OFFLINE=1`` (a Hub user without the package): ``AutoConfig``,
``AutoModel``, ``AutoModelForImageTextToText``, ``AutoProcessor``, ``AutoImageProcessor`` and
``pipeline(model=folder, trust_remote_code=True)`` without a task, whose points must equal the in-process
``pipeline("robopoint")``'s. Exports (``robopoint export``, from an original, a converted, a merged
and a trained folder) are read by plain transformers classes without remote code, batch on the left, and give with
``pipeline(model=folder, trust_remote_code=True)`` the points of the in-process pipeline on their source. ``convert`` is killed at several
moments: OUT is then absent or complete.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ORIGINAL, run_without_robopoint_hf, tiny_model, tiny_processor
from PIL import Image

pytestmark = pytest.mark.slow

IMAGE = ORIGINAL / "images" / "sink.jpg"
INSTRUCTION = "Find a few spots within the vacant area on the rightmost white plate."
MAX_NEW_TOKENS = 10
EXPORT_PIPELINE_TOKENS = 40  # long enough for the tiny exports to answer with scored points


def _merge_lora_source(root: Path, base: Path) -> Path:
    """A LoRA adapter (+ processor) as ``robopoint train --lora`` writes it, with non-zero adapter weights."""
    from peft import LoraConfig, get_peft_model

    from robopoint_hf import RoboPointForConditionalGeneration, RoboPointProcessor

    model = RoboPointForConditionalGeneration.from_pretrained(base)
    config = LoraConfig(
        r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)", modules_to_save=["multi_modal_projector"]
    )
    peft_model = get_peft_model(model, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    adapter = root / "adapter"
    peft_model.save_pretrained(adapter)
    RoboPointProcessor.from_pretrained(base).save_pretrained(adapter)
    return adapter


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> dict[str, Path]:
    """One folder per producer (the RoboPoint ones), written once for the module."""
    from test_tiny_model import _small_config
    from test_train import arguments, write_data
    from tiny_model import build
    from transformers import pipeline

    from robopoint_hf.checkpoints import DEFAULT_MODEL_DIR
    from robopoint_hf.cli import main as cli_main
    from robopoint_hf.synthetic.scenes import generate_dataset
    from robopoint_hf.training.trainer import main as train_main

    root = tmp_path_factory.mktemp("contract")
    folders = {}
    assert cli_main(["convert", str(ORIGINAL / "vicuna-mlp2x-full"), "--output-dir", str(root / "convert")]) == 0
    folders["convert"] = root / "convert"
    tiny_model().save_pretrained(root / "save_pretrained")
    tiny_processor().save_pretrained(root / "save_pretrained")
    folders["save_pretrained"] = root / "save_pretrained"
    pipeline("robopoint", model=tiny_model(seed=1), processor=tiny_processor()).save_pretrained(root / "pipeline")
    folders["pipeline"] = root / "pipeline"
    adapter = _merge_lora_source(root, folders["save_pretrained"])
    assert cli_main(["merge-lora", str(adapter), "--output-dir", str(root / "merge_lora")]) == 0
    folders["merge_lora"] = root / "merge_lora"
    write_data(root)
    folders["train"] = train_main(*arguments(root, "train", model=str(folders["save_pretrained"]), max_steps=2))
    generate_dataset(root / "synth", 6, seed=3)
    build(root / "synth", root / "tiny_build", vocab_size=400, config_overrides=_small_config())
    folders["tiny_build"] = root / "tiny_build"
    shutil.copytree(DEFAULT_MODEL_DIR, root / "default_model")  # a download of the shipped folder
    folders["default_model"] = root / "default_model"
    return folders


_CONSUMERS = """
import json
from PIL import Image
from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoProcessor,
                          pipeline)
folders, image = json.loads({folders!r}), Image.open({image!r})
results = {{}}
for name, folder in folders.items():
    kwargs = {{"trust_remote_code": True}} if {remote} else {{}}
    loaded = [AutoConfig.from_pretrained(folder, **kwargs), AutoModel.from_pretrained(folder, **kwargs),
              AutoModelForImageTextToText.from_pretrained(folder, **kwargs),
              AutoProcessor.from_pretrained(folder, **kwargs), AutoImageProcessor.from_pretrained(folder, **kwargs)]
    result = {{"classes": [type(item).__name__ for item in loaded], "modules": [type(item).__module__ for item in loaded]}}
    pipe = pipeline(model=folder, trust_remote_code=True, device="cpu")
    result["task"], result["pipeline_module"] = pipe.task, type(pipe).__module__
    result["points"] = pipe(image, {instruction!r}, max_new_tokens={pipeline_tokens})
    if not {remote}:
        import torch
        model, processor = loaded[2].eval(), loaded[3]
        prompt = processor.apply_chat_template(
            [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": {instruction!r}}}]}}],
            add_generation_prompt=True)
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens={max_new_tokens}, do_sample=False)
        result["ids"] = ids[0, inputs["input_ids"].shape[1]:].tolist()
    results[name] = result
print(json.dumps(results))
"""


def _consume(folders: dict[str, Path], remote: bool, cwd: Path) -> dict:
    code = _CONSUMERS.format(
        folders=json.dumps({name: str(folder) for name, folder in folders.items()}),
        image=str(IMAGE),
        remote=remote,
        instruction=INSTRUCTION,
        max_new_tokens=MAX_NEW_TOKENS,
        pipeline_tokens=MAX_NEW_TOKENS if remote else EXPORT_PIPELINE_TOKENS,
    )
    return json.loads(run_without_robopoint_hf(code, cwd))


@pytest.fixture(scope="module")
def consumed(produced, tmp_path_factory) -> dict:
    return _consume(produced, remote=True, cwd=tmp_path_factory.mktemp("consumer"))


PRODUCERS = ["convert", "save_pretrained", "pipeline", "merge_lora", "train", "tiny_build", "default_model"]


@pytest.mark.parametrize("producer", PRODUCERS)
def test_folder_works_without_the_package(producer, produced, consumed):
    from transformers import pipeline

    from robopoint_hf.hub_checkpoint import HUB_PIPELINE_TASK, check_complete, stale_remote_code

    folder = produced[producer]
    check_complete(folder)
    assert (
        stale_remote_code(folder) == []
    )  # every code file, auto_map and custom_pipelines entry as the package has it
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"}
    assert list(config["custom_pipelines"]) == [HUB_PIPELINE_TASK]
    result = consumed[producer]
    assert result["classes"] == [
        "RoboPointConfig",
        "RoboPointForConditionalGeneration",
        "RoboPointForConditionalGeneration",
        "RoboPointProcessor",
        "RoboPointImageProcessor",
    ]
    assert all(module.startswith("transformers_modules.") for module in result["modules"])  # the folder's own code
    assert result["task"] == HUB_PIPELINE_TASK
    expected = pipeline("robopoint", model=str(folder), device="cpu")(
        Image.open(IMAGE), INSTRUCTION, max_new_tokens=MAX_NEW_TOKENS
    )
    _assert_same_points(result["points"], expected)
    if producer == "default_model":
        assert expected["points"], "the trained default model answers with points"


def _assert_same_points(actual: dict, expected: dict) -> None:
    """The pipeline's answer as read without the package equals the in-process one: text, points, scores."""
    assert actual["text"] == expected["text"] and actual["parse_failed"] == expected["parse_failed"]
    assert [(p["x"], p["y"], p["x_px"], p["y_px"]) for p in actual["points"]] == [
        (p["x"], p["y"], p["x_px"], p["y_px"]) for p in expected["points"]
    ]
    assert [p["score"] for p in actual["points"]] == pytest.approx([p["score"] for p in expected["points"]], rel=1e-5)


def test_default_model_code_is_in_sync_with_the_package():
    """`python -m robopoint_hf.hub_files` regenerates them; the weights are never rewritten."""
    from robopoint_hf.hub_files import stale_default_model_files

    assert stale_default_model_files() == []


# ------------------------------------------------------------------------------------------------ plain LLaVA exports
def _export_sources(produced: dict[str, Path]) -> dict[str, Path]:
    return {
        "original": ORIGINAL / "vicuna-mlp2x-full",
        "converted": produced["convert"],
        "merged": produced["merge_lora"],
        "trained": produced["train"],
    }


@pytest.fixture(scope="module")
def exported(produced, tmp_path_factory) -> dict[str, Path]:
    from robopoint_hf.original.convert import convert_checkpoint

    root = tmp_path_factory.mktemp("exports")
    return {
        name: convert_checkpoint(source, root / name, target="llava", verify=name != "original")
        for name, source in _export_sources(produced).items()
    }


@pytest.fixture(scope="module")
def exports_consumed(exported, tmp_path_factory) -> dict:
    return _consume(exported, remote=False, cwd=tmp_path_factory.mktemp("export_consumer"))


def test_exports_of_any_robopoint_folder_load_with_plain_transformers(exported, exports_consumed):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    results = exports_consumed
    for name, folder in exported.items():
        assert results[name]["classes"] == [
            "LlavaConfig",
            "LlavaModel",
            "LlavaForConditionalGeneration",
            "LlavaProcessor",
            "LlavaImageProcessorPil",
        ], name
        assert all(module.startswith("transformers.models.llava.") for module in results[name]["modules"]), name
        assert "auto_map" not in json.loads((folder / "config.json").read_text())  # no remote code for the model
        model = AutoModelForImageTextToText.from_pretrained(folder).eval()
        processor = AutoProcessor.from_pretrained(folder)
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]}],
            add_generation_prompt=True,
        )
        inputs = processor(images=Image.open(IMAGE), text=prompt, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        assert results[name]["ids"] == ids[0, inputs["input_ids"].shape[1] :].tolist(), name


@pytest.mark.parametrize("name", ["original", "converted", "merged", "trained"])
def test_export_runs_the_robopoint_pipeline_without_a_task(name, produced, exported, exports_consumed):
    """``pipeline(model=export, trust_remote_code=True)`` without the package gives the points of the in-process
    ``pipeline("robopoint")`` on the export's source (for the original: its conversion, whose export is the same).

    Native LLaVA loads every part in the config's dtype, so the source is compared at that dtype."""
    from transformers import pipeline

    from robopoint_hf.hub_checkpoint import (
        HUB_PIPELINE_TASK,
        check_complete,
        remote_code_files,
        stale_remote_code,
    )

    folder = exported[name]
    check_complete(folder)
    assert stale_remote_code(folder) == []
    assert sorted(path.name for path in folder.glob("*.py")) == [
        path.name for path in remote_code_files(pipeline_only=True)
    ]
    config = json.loads((folder / "config.json").read_text())
    assert list(config["custom_pipelines"]) == [HUB_PIPELINE_TASK] and "auto_map" not in config
    result = exports_consumed[name]
    assert result["task"] == HUB_PIPELINE_TASK
    assert result["pipeline_module"].startswith("transformers_modules.")
    source = produced["convert"] if name == "original" else _export_sources(produced)[name]
    expected = pipeline("robopoint", model=str(source), device="cpu", dtype=getattr(torch, config["dtype"]))(
        Image.open(IMAGE), INSTRUCTION, max_new_tokens=EXPORT_PIPELINE_TOKENS
    )
    _assert_same_points(result["points"], expected)
    if name == "converted":
        assert expected["points"], "the comparison covers scored points"


def test_export_of_a_converted_folder_equals_the_export_of_its_original(exported):
    from safetensors.torch import load_file

    direct, via = (
        load_file(exported["original"] / "model.safetensors"),
        load_file(exported["converted"] / "model.safetensors"),
    )
    assert direct.keys() == via.keys()
    assert all(torch.equal(direct[key], via[key]) for key in direct)


@pytest.mark.parametrize("name", ["original", "merged"])
def test_export_batches_on_the_left(exported, name):
    """Plain LlavaForConditionalGeneration + the export's processor: a mixed-length batch gives every row the greedy
    ids it gets alone."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    folder = exported[name]
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert processor.tokenizer.padding_side == "left"
    instructions = [INSTRUCTION, "Point to the cup."]
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
            add_generation_prompt=True,
        )
        for text in instructions
    ]
    images = [Image.open(IMAGE), Image.open(ORIGINAL / "images" / "synthetic_500x300.png").convert("RGB")]
    with torch.no_grad():
        alone = []
        for prompt, image in zip(prompts, images, strict=True):
            inputs = processor(images=image, text=prompt, return_tensors="pt")
            alone.append(
                model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1] :]
            )
        batch = processor(images=images, text=prompts, return_tensors="pt", padding=True)
        assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()  # really mixed lengths
        together = model.generate(**batch, max_new_tokens=8, do_sample=False)[:, batch["input_ids"].shape[1] :]
    assert [row.tolist() for row in together] == [row.tolist() for row in alone]


# ------------------------------------------------------------------------------------------------ dtypes
def test_default_conversion_keeps_vision_in_float32_and_loads_per_part(produced):
    from safetensors import safe_open

    from robopoint_hf import RoboPointForConditionalGeneration

    folder = produced["convert"]
    with safe_open(folder / "model.safetensors", "pt") as handle:
        dtypes = {key.split(".")[0]: handle.get_slice(key).get_dtype() for key in handle.keys()}
    assert dtypes == {"language_model": "F16", "multi_modal_projector": "F32", "vision_tower": "F32"}
    auto = RoboPointForConditionalGeneration.from_pretrained(folder)  # dtype="auto"
    assert auto.model.vision_tower.dtype == auto.model.multi_modal_projector.linear_1.weight.dtype == torch.float32
    assert auto.model.language_model.dtype == torch.float16
    forced = RoboPointForConditionalGeneration.from_pretrained(folder, dtype=torch.bfloat16)
    assert {parameter.dtype for parameter in forced.parameters()} == {torch.bfloat16}


def test_forced_dtype_is_one_dtype_for_all(tmp_path):
    from safetensors import safe_open

    from robopoint_hf.original.convert import convert_checkpoint

    folder = convert_checkpoint(ORIGINAL / "llama2-linear-full", tmp_path / "out", dtype="float16")
    with safe_open(folder / "model.safetensors", "pt") as handle:
        assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"F16"}
    assert json.loads((folder / "config.json").read_text()).get("vision_dtype") is None


# ------------------------------------------------------------------------------------------------ atomic writes
_KILLED_CONVERT = """
import sys
from robopoint_hf.original.convert import convert_checkpoint
print("ready", flush=True)
convert_checkpoint({src!r}, {out!r}, max_shard_size="100KB")
print("done", flush=True)
"""


def test_convert_killed_at_any_moment_leaves_out_absent_or_complete(tmp_path):
    from robopoint_hf.hub_checkpoint import check_complete
    from robopoint_hf.original.checkpoint import is_original_checkpoint

    out = tmp_path / "out"
    code = _KILLED_CONVERT.format(src=str(ORIGINAL / "vicuna-mlp2x-full"), out=str(out))
    partial_seen = 0
    # Kill points are states of the staged folder, not delays: the staged folder just created, then holding a
    # few, more, and most of its files (a delay lands before or after the write depending on the machine's load).
    for files_written in (0, 2, 5, 9):
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            staged = list(tmp_path.glob(".out.partial-*"))
            try:
                if staged and sum(1 for _ in staged[0].iterdir()) >= files_written:
                    process.send_signal(signal.SIGKILL)
                    break
            except FileNotFoundError:  # renamed into place between the two looks
                pass
            time.sleep(0.0005)
        process.wait()
        partial_seen += bool(list(tmp_path.glob(".out.partial-*")))
        if out.exists():  # the rename happened: the folder is whole
            check_complete(out)
            shutil.rmtree(out)
    assert partial_seen, "no kill landed while the folder was being written"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    check_complete(out)
    assert not is_original_checkpoint(out)
    assert not list(tmp_path.glob(".out.*")), "leftovers of killed writers are removed by the next writer"


def test_non_empty_out_is_refused_unless_overwrite(tmp_path):
    from robopoint_hf.cli import main as cli_main
    from robopoint_hf.hub_checkpoint import check_complete

    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    source = str(ORIGINAL / "llama2-linear-full")
    assert cli_main(["convert", source, "--output-dir", str(out)]) == 2
    assert (out / "stale.txt").is_file()
    assert cli_main(["convert", source, "--output-dir", str(out), "--overwrite"]) == 0
    check_complete(out)
    assert not (out / "stale.txt").exists()


# ------------------------------------------------------------------------------------------------ Hub ids offline
def test_uncached_hub_id_offline_fails_at_once_in_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "robopoint_hf.cli", "predict", "--model", "some-user/missing-id"]
    command += ["--image", str(IMAGE), "--instruction", "Point to the plate."]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2  # a user error: the model named does not exist here
    lines = [line for line in result.stderr.splitlines() if line.startswith("robopoint predict:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "'some-user/missing-id'" in lines[0] and "local folder" in lines[0] and "https://" not in lines[0]
    code = """
from robopoint_hf import RoboPointForConditionalGeneration, RoboPointProcessor
from robopoint_hf.hub_checkpoint import HubModelUnavailableError
for loader in (RoboPointForConditionalGeneration, RoboPointProcessor):
    try:
        loader.from_pretrained("some-user/missing-id")
    except HubModelUnavailableError as error:
        assert "\\n" not in str(error) and "some-user/missing-id" in str(error), error
    else:
        raise AssertionError(loader)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.stdout.strip().endswith("ok"), result.stderr[-2000:]
