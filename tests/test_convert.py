"""Conversion of ORIGINAL-format checkpoints: parity with the original code's references, exports, errors.

Oracle: `tests/fixtures/original/refs/` -- float32 outputs of the original RoboPoint code on the tiny fixture
checkpoints (see the README of the shared fixtures). Every path (direct load, converted folder, plain-LLaVA export)
must reproduce the final hidden states and logits within `ATOL` and the greedy tokens exactly, from inputs built by
the saved processor (ids and pixel values compared exactly).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ORIGINAL = Path(__file__).parent / "fixtures" / "original"
ATOL = 1e-4
IMAGE_TOKEN_ID = 32000
NUM_IMAGE_TOKENS = 576
VOCAB = 32000

# (checkpoint, model_base, prompt template of its references)
CASES = [
    ("vicuna-mlp2x-full", None, "llava_v1"),  # sharded .bin pickles
    ("llama2-linear-full", None, "llava_llama_2"),  # safetensors, linear projector
    ("llama2-linear-full", None, "llava_v1"),
    ("vicuna-mlp2x-lora", "vicuna-base", "llava_v1"),  # LoRA merged into a base
]
# One template per checkpoint where a second run would only repeat the same code path.
PRIMARY_CASES = [case for case in CASES if case[:2] != ("llama2-linear-full", None) or case[2] == "llava_llama_2"]
IMAGES = {"sink": "images/sink.jpg", "synthetic_500x300": "images/synthetic_500x300.png"}


def _ref(checkpoint: str, mode: str, stem: str) -> tuple[dict, dict]:
    folder = ORIGINAL / "refs" / checkpoint / mode
    return json.loads((folder / f"{stem}.json").read_text()), load_file(folder / f"{stem}.safetensors")


def _expanded(ids: list[int]) -> list[int]:
    """Original ids (one -200 per image) -> ids with the image's 576 placeholder positions."""
    out: list[int] = []
    for token in ids:
        out.extend([IMAGE_TOKEN_ID] * NUM_IMAGE_TOKENS if token == -200 else [token])
    return out


def _base(model_base: str | None) -> str | None:
    return str(ORIGINAL / model_base) if model_base else None


@torch.no_grad()
def _check_against_refs(model, processor, checkpoint: str, mode: str, pixel_atol: float = 0.0) -> None:
    """Inputs from `processor` == the original's; fp32 outputs of `model` == the references."""
    model.eval()
    for stem, image_path in IMAGES.items():
        meta, ref = _ref(checkpoint, mode, stem)
        image = Image.open(ORIGINAL / image_path).convert("RGB")
        inputs = processor(images=image, text=meta["prompt"], return_tensors="pt")
        assert inputs["input_ids"][0].tolist() == _expanded(ref["input_ids"].tolist())
        expected_pixels = load_file(ORIGINAL / "refs" / "inputs" / f"{stem}.safetensors")["pixel_values"]
        torch.testing.assert_close(inputs["pixel_values"][0], expected_pixels, atol=pixel_atol, rtol=0)
        outputs = model(**inputs, output_hidden_states=True)
        logits = outputs.logits[0, :, :VOCAB]
        torch.testing.assert_close(outputs.hidden_states[-1][0], ref["final_hidden"], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[-1], ref["logits_last"], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[ref["logits_rows_positions"]], ref["logits_rows"], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits.max(-1).values, ref["logits_max"], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits.logsumexp(-1), ref["logits_logsumexp"], atol=ATOL, rtol=0)
        assert torch.equal(logits.argmax(-1), ref["logits_argmax"])
        generated = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        assert generated[0, inputs["input_ids"].shape[1] :].tolist() == ref["generated_ids"].tolist()


@torch.no_grad()
def _check_batch(model, processor, checkpoint: str, mode: str) -> None:
    """`batch2` references: both images with the same prompt in one batch."""
    folder = ORIGINAL / "refs" / checkpoint / mode
    ref = load_file(folder / "batch2.safetensors")
    prompt = _ref(checkpoint, mode, "sink")[0]["prompt"]
    images = [Image.open(ORIGINAL / path).convert("RGB") for path in IMAGES.values()]
    inputs = processor(images=images, text=[prompt, prompt], return_tensors="pt")
    assert inputs["input_ids"].tolist() == [_expanded(row) for row in ref["input_ids"].tolist()]
    logits = model(**inputs).logits[:, :, :VOCAB]
    torch.testing.assert_close(logits[:, -1], ref["logits_last"], atol=ATOL, rtol=0)
    assert torch.equal(logits.argmax(-1), ref["logits_argmax"])
    generated = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert generated[:, inputs["input_ids"].shape[1] :].tolist() == ref["generated_ids"].tolist()


# ---------------------------------------------------------------------------------------------------------------
# Conversions (once per module)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Each fixture checkpoint converted to RoboPoint (float32, small shards to exercise sharding) and exported."""
    from robopoint_hf.original.convert import convert_checkpoint

    root = tmp_path_factory.mktemp("converted")
    folders = {}
    for checkpoint, model_base, _ in CASES:
        for target in ("robopoint", "llava"):
            if (checkpoint, target) in folders:
                continue
            folders[checkpoint, target] = convert_checkpoint(
                ORIGINAL / checkpoint,
                root / f"{checkpoint}-{target}",
                model_base=_base(model_base),
                dtype="float32",
                target=target,
                max_shard_size="1MB",
                verify=checkpoint == "vicuna-mlp2x-lora",  # the probe check, once per format (it costs a reload)
            )
    return folders


@pytest.mark.parametrize(("checkpoint", "model_base", "mode"), PRIMARY_CASES)
def test_direct_load_matches_original(checkpoint, model_base, mode):
    """`from_pretrained` on the ORIGINAL folder converts in memory; nothing is written next to it."""
    from robopoint_hf import RoboPointForConditionalGeneration, RoboPointProcessor

    before = sorted(path.name for path in (ORIGINAL / checkpoint).iterdir())
    model = RoboPointForConditionalGeneration.from_pretrained(ORIGINAL / checkpoint, model_base=_base(model_base))
    # The prompts of the references contain `<image>`, so the processor's own template is not used.
    processor = RoboPointProcessor.from_pretrained(ORIGINAL / checkpoint, model_base=_base(model_base))
    assert sorted(path.name for path in (ORIGINAL / checkpoint).iterdir()) == before
    _check_against_refs(model, processor, checkpoint, mode)


@pytest.mark.parametrize(("checkpoint", "model_base", "mode"), CASES)
def test_converted_folder_matches_original(checkpoint, model_base, mode, converted):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = converted[checkpoint, "robopoint"]
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)
    assert type(model).__name__ == "RoboPointForConditionalGeneration"
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    _check_against_refs(model, processor, checkpoint, mode)
    _check_batch(model, processor, checkpoint, mode)


@pytest.mark.parametrize(("checkpoint", "model_base", "mode"), PRIMARY_CASES)
def test_llava_export_matches_original(checkpoint, model_base, mode, converted):
    from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration

    folder = converted[checkpoint, "llava"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llava" and "auto_map" not in config
    from robopoint_hf.hub_checkpoint import remote_code_files

    # The pipeline's code only (`pipeline(model=folder, trust_remote_code=True)`); the model stays native LLaVA.
    assert sorted(path.name for path in folder.glob("*.py")) == [p.name for p in remote_code_files(pipeline_only=True)]
    assert "modeling_robopoint.py" not in {path.name for path in folder.glob("*.py")}
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    assert type(model) is LlavaForConditionalGeneration
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor).__name__ == "LlavaProcessor"
    _check_against_refs(model, processor, checkpoint, mode)
    _check_batch(model, processor, checkpoint, mode)


@pytest.mark.parametrize("checkpoint", ["vicuna-mlp2x-full", "llama2-linear-full"])
def test_default_dtypes_match_the_float32_references(checkpoint, tmp_path):
    """The default conversion stores the fp16 language model as it is and CLIP + projector in float32 (the original's
    default inference): loaded in float32 it matches the references within `ATOL` (rounding CLIP to fp16 does not)."""
    from robopoint_hf import RoboPointForConditionalGeneration, RoboPointProcessor
    from robopoint_hf.original.convert import convert_checkpoint

    folder = convert_checkpoint(ORIGINAL / checkpoint, tmp_path / "out")
    assert json.loads((folder / "config.json").read_text())["vision_dtype"] == "float32"
    model = RoboPointForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    _check_against_refs(model, RoboPointProcessor.from_pretrained(folder), checkpoint, "llava_v1")


def test_llava_export_in_pipeline(converted):
    from transformers import pipeline

    checkpoint, mode = "vicuna-mlp2x-full", "llava_v1"
    meta, _ = _ref(checkpoint, mode, "sink")
    pipe = pipeline("image-text-to-text", model=str(converted[checkpoint, "llava"]), dtype=torch.float32)
    image = Image.open(ORIGINAL / IMAGES["sink"]).convert("RGB")
    result = pipe(images=image, text=meta["prompt"], max_new_tokens=12, return_full_text=False)
    assert result[0]["generated_text"].strip() == meta["generated_text"]


def test_export_of_the_shipped_model_prompts_it_as_trained(tmp_path):
    """The shipped model's tokenizer is not a legacy SentencePiece one: its export's chat template spells the space
    that the original's chunk-wise tokenization puts after <image>, so whole-string tokenization (LlavaProcessor,
    serving engines) gives the prompt ids of RoboPointProcessor, and the export answers like the source."""
    from transformers import AutoProcessor, pipeline

    from robopoint_hf import RoboPointProcessor
    from robopoint_hf.checkpoints import default_model
    from robopoint_hf.original.convert import convert_checkpoint

    export = convert_checkpoint(default_model(), tmp_path / "llava", target="llava")
    assert "'<image> \\n'" in (export / "chat_template.jinja").read_text()
    image = Image.open(f"{default_model()}/example_1_free_space_relation.jpg")
    instruction = "Find free space to the left of the object."
    llava = AutoProcessor.from_pretrained(export)
    ours = RoboPointProcessor.from_pretrained(default_model())
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    served = llava(images=image, text=llava.apply_chat_template(messages, add_generation_prompt=True))
    assert served["input_ids"][0] == ours(images=image, text=instruction)["input_ids"][0].tolist()
    source = pipeline("robopoint", model=str(default_model()))(
        image, instruction, max_new_tokens=80, constrained=False
    )
    exported = pipeline("robopoint", model=str(export))(image, instruction, max_new_tokens=80, constrained=False)
    assert exported["text"] == source["text"] and len(source["points"]) > 2


def test_llava_export_layout(converted):
    """Canonical llava-hf names (what vLLM / SGLang / older transformers read), identity linear_2 for `linear`."""
    folder = converted["llama2-linear-full", "llava"]
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    keys = set(index["weight_map"])
    assert {key.split(".")[0] for key in keys} == {"language_model", "vision_tower", "multi_modal_projector"}
    assert all(key.startswith("vision_tower.vision_model.") for key in keys if key.startswith("vision_tower"))
    assert "language_model.lm_head.weight" in keys
    config = json.loads((folder / "config.json").read_text())
    assert config["projector_hidden_act"] == "linear" and config["image_token_index"] == IMAGE_TOKEN_ID
    with safe_open(folder / index["weight_map"]["multi_modal_projector.linear_2.weight"], "pt") as handle:
        hidden = config["text_config"]["hidden_size"]
        assert torch.equal(handle.get_tensor("multi_modal_projector.linear_2.weight"), torch.eye(hidden))
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["do_sample"] is False and generation["suppress_tokens"] == [IMAGE_TOKEN_ID]


def test_converted_folder_contents(converted):
    folder = converted["vicuna-mlp2x-lora", "robopoint"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "robopoint" and config["prompt_template"] == "vicuna_v1"
    assert config["projector_type"] == "mlp2x_gelu" and config["image_aspect_ratio"] == "pad"
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModelForImageTextToText"}
    for name in ("modeling_robopoint.py", "configuration_robopoint.py", "processing_robopoint.py", "README.md"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "generation_config.json").read_text())["do_sample"] is False
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: image-text-to-text" in card


# ---------------------------------------------------------------------------------------------------------------
# Detection and errors
# ---------------------------------------------------------------------------------------------------------------


def test_is_original_checkpoint(converted):
    from robopoint_hf.original.checkpoint import is_original_checkpoint

    assert is_original_checkpoint(ORIGINAL / "vicuna-mlp2x-full")
    assert is_original_checkpoint(ORIGINAL / "vicuna-mlp2x-lora")
    assert not is_original_checkpoint(ORIGINAL / "vicuna-base")
    assert not is_original_checkpoint(converted["vicuna-mlp2x-full", "robopoint"])
    assert not is_original_checkpoint(ORIGINAL / "does-not-exist")


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(ORIGINAL / name, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def _error(match: str, src, tmp_path: Path, **kwargs):
    from robopoint_hf.original.checkpoint import OriginalCheckpointError
    from robopoint_hf.original.convert import convert_checkpoint

    with pytest.raises(OriginalCheckpointError, match=match):
        convert_checkpoint(src, tmp_path / "out", **kwargs)


def test_lora_without_base(tmp_path):
    _error("--model-base", ORIGINAL / "vicuna-mlp2x-lora", tmp_path)


def test_base_with_other_vocab(tmp_path):
    base = _copy("vicuna-base", tmp_path)
    config = json.loads((base / "config.json").read_text())
    config["vocab_size"] = 32064
    (base / "config.json").write_text(json.dumps(config))
    _error("vocab_size is 32064 in the base but 32000", ORIGINAL / "vicuna-mlp2x-lora", tmp_path, model_base=base)


def test_missing_shard(tmp_path):
    source = _copy("vicuna-mlp2x-full", tmp_path)
    (source / "pytorch_model-00002-of-00003.bin").unlink()
    _error(
        "missing: pytorch_model-00002-of-00003.bin",
        source,
        tmp_path,
        vision_tower=ORIGINAL / "clip-vit-tiny-patch14-336",
    )


def test_unknown_projector_type(tmp_path):
    source = _copy("llama2-linear-full", tmp_path)
    config = json.loads((source / "config.json").read_text())
    config["mm_projector_type"] = "qformer"
    (source / "config.json").write_text(json.dumps(config))
    _error("unknown mm_projector_type 'qformer'", source, tmp_path)


def test_not_an_original_checkpoint(tmp_path):
    _error("not an original RoboPoint/LLaVA config", ORIGINAL / "vicuna-base", tmp_path)


def test_unused_source_tensor_is_an_error(tmp_path):
    source = _copy("llama2-linear-full", tmp_path)
    tensors = load_file(source / "model.safetensors")
    tensors["model.extra_head.weight"] = torch.zeros(2, 2, dtype=torch.float16)
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})
    clip = ORIGINAL / "clip-vit-tiny-patch14-336"
    _error(
        "no place in the converted model: model.safetensors:model.extra_head.weight",
        source,
        tmp_path,
        vision_tower=clip,
    )


def test_vision_tower_not_found(tmp_path):
    source = _copy("llama2-linear-full", tmp_path)  # the relative "clip-vit-tiny-patch14-336" is not next to it
    _error("vision tower 'clip-vit-tiny-patch14-336' not found", source, tmp_path)


def test_output_folder_must_be_empty(tmp_path):
    from robopoint_hf.original.convert import convert_checkpoint

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.safetensors").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not empty.*--overwrite"):
        convert_checkpoint(ORIGINAL / "llama2-linear-full", tmp_path / "out")


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    from robopoint_hf.cli import main

    assert main(["convert", str(ORIGINAL / "vicuna-mlp2x-lora"), "--output-dir", str(tmp_path / "out")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("robopoint convert: error: ") and "--model-base" in line


# ---------------------------------------------------------------------------------------------------------------
# Registry and model cards
# ---------------------------------------------------------------------------------------------------------------


def test_registry():
    from robopoint_hf.checkpoints import CHECKPOINTS, find_checkpoint, get_checkpoint

    assert len(CHECKPOINTS) == 6 and all(info.prompt_template == "vicuna_v1" for info in CHECKPOINTS)
    assert sum(info.kind == "full" for info in CHECKPOINTS) == 2
    lora = get_checkpoint("robopoint-v1-llama-2-7b-lora")
    assert lora.lora_base == "meta-llama/Llama-2-7b-chat-hf" and lora.projector_type == "linear"
    cached = "/hub/models--wentao-yuan--robopoint-v1-vicuna-v1.5-13b/snapshots/abc"
    assert find_checkpoint(cached).hub_id == "wentao-yuan/robopoint-v1-vicuna-v1.5-13b"
    assert find_checkpoint("wentao-yuan/robopoint-v1-vicuna-v1.5-13b-lora").kind == "lora"
    assert find_checkpoint(ORIGINAL / "vicuna-mlp2x-full") is None


def test_model_cards_are_generated_from_registry(tmp_path):
    from robopoint_hf.original.model_card import write_model_cards

    repository_cards = Path(__file__).parents[1] / "model_cards"
    for path in write_model_cards(tmp_path):
        assert (repository_cards / path.name).read_text() == path.read_text(), f"regenerate {path.name}"
