"""RoboPointForConditionalGeneration: parity with the original implementation, batching, feature reuse, saving.

Tolerances: the fixture README says a clean fp32 re-implementation matches logits to ~1e-4 (logit scale ~10) and that
every greedy step has a top1-top2 margin >= 0.04, so greedy ids must match exactly.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import (
    ORIGINAL,
    QUESTION,
    expand_image_ids,
    read_ref,
    run_without_robopoint_hf,
    tiny_config,
    tiny_model,
    tiny_processor,
)
from safetensors import safe_open
from safetensors.torch import load_file

from robopoint_hf.model import modeling_robopoint

ATOL = 1e-4
CASES = [
    ("vicuna-mlp2x-full", "llava_v1", "sink"),
    ("vicuna-mlp2x-full", "llava_v1", "synthetic_500x300"),
    ("llama2-linear-full", "llava_v1", "sink"),
    ("llama2-linear-full", "llava_llama_2", "synthetic_500x300"),
]


@pytest.fixture(scope="module")
def models(vicuna_full, llama2_linear):
    return {"vicuna-mlp2x-full": vicuna_full, "llama2-linear-full": llama2_linear}


@pytest.mark.parametrize("checkpoint, mode, stem", CASES)
def test_matches_original_outputs(models, checkpoint, mode, stem):
    model = models[checkpoint]
    meta, ref = read_ref(checkpoint, mode, stem)
    input_ids = torch.tensor([expand_image_ids(meta["input_ids"])])
    pixel_values = load_file(ORIGINAL / "refs" / "inputs" / f"{stem}.safetensors")["pixel_values"][None]
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values, output_hidden_states=True)
        features = model.encode_images(pixel_values)[0]
    torch.testing.assert_close(features, ref["image_features_projected"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.hidden_states[-1][0], ref["final_hidden"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.logits[0, -1], ref["logits_last"], atol=ATOL, rtol=0)
    rows = ref["logits_rows_positions"].tolist()
    torch.testing.assert_close(out.logits[0, rows], ref["logits_rows"], atol=ATOL, rtol=0)
    assert torch.equal(out.logits[0].argmax(-1), ref["logits_argmax"])
    torch.testing.assert_close(out.logits[0].max(-1).values, ref["logits_max"], atol=ATOL, rtol=0)

    generated = model.generate(
        input_ids=input_ids, pixel_values=pixel_values, max_new_tokens=12, do_sample=False, num_beams=1
    )
    assert generated[0, input_ids.shape[1] :].tolist() == meta["generated_ids"]


def test_batch_of_two_images_matches_reference(vicuna_full):
    meta = json.loads((ORIGINAL / "refs/vicuna-mlp2x-full/llava_v1/batch2.json").read_text())
    _, single = read_ref("vicuna-mlp2x-full", "llava_v1", "sink")
    sink_meta, _ = read_ref("vicuna-mlp2x-full", "llava_v1", "sink")
    processor = _fixture_processor("llava_v1")
    inputs = processor(
        images=[str(ORIGINAL / image) for image in meta["images"]], text=[QUESTION] * 2, return_tensors="pt"
    )
    assert inputs["input_ids"][0].tolist() == expand_image_ids(sink_meta["input_ids"])
    with torch.no_grad():
        logits = vicuna_full(**inputs).logits
    torch.testing.assert_close(logits[0, -1], single["logits_last"], atol=ATOL, rtol=0)
    generated = vicuna_full.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert generated[:, inputs["input_ids"].shape[1] :].tolist() == meta["generated_ids"]


def test_mixed_length_batch_left_padded_equals_single_runs(vicuna_full):
    """The original re-pads on the right (wrong for generation); we pad left, so every row equals its single run."""
    meta = json.loads((ORIGINAL / "refs/vicuna-mlp2x-full/llava_v1/batch_mixed_lengths.json").read_text())
    processor = _fixture_processor("llava_v1")
    images = [str(ORIGINAL / image) for image in meta["images"]]
    batch = processor(images=images, text=meta["questions"], return_tensors="pt")
    for row, original_ids in enumerate(meta["input_ids"]):
        ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        assert ids == expand_image_ids(original_ids)
    batched = vicuna_full.generate(**batch, max_new_tokens=8, do_sample=False)[:, batch["input_ids"].shape[1] :]
    for row in range(2):
        single = processor(images=images[row], text=meta["questions"][row], return_tensors="pt")
        alone = vicuna_full.generate(**single, max_new_tokens=8, do_sample=False)[0, single["input_ids"].shape[1] :]
        assert batched[row].tolist() == alone.tolist()


def test_reused_image_features_give_identical_answers(llama2_linear):
    processor = _fixture_processor("llava_llama_2")
    image = str(ORIGINAL / "images/sink.jpg")
    inputs = processor(images=image, text=QUESTION, return_tensors="pt")
    features = llama2_linear.encode_images(inputs["pixel_values"])
    assert features.shape == (1, 576, llama2_linear.config.text_config.hidden_size)
    with torch.no_grad():
        direct = llama2_linear(**inputs).logits
        text_only = {k: v for k, v in inputs.items() if k != "pixel_values"}
        reused = llama2_linear(**text_only, image_features=features).logits
    assert torch.equal(direct, reused)
    for question in ("Point to the plate.", "Find free space left of the sink."):
        prompt = processor(images=image, text=question, return_tensors="pt")
        expected = llama2_linear.generate(**prompt, max_new_tokens=6, do_sample=False)
        text_only = {k: v for k, v in prompt.items() if k != "pixel_values"}
        got = llama2_linear.generate(**text_only, image_features=features, max_new_tokens=6, do_sample=False)
        assert torch.equal(expected, got)


def test_placeholder_and_feature_count_mismatch_is_a_clear_error():
    model = tiny_model()
    input_ids = torch.tensor([[1, 32000, 32000, 32000, 5]])  # 3 placeholders, one image gives 4 features
    with pytest.raises(ValueError, match="3 image positions but the images give 4"):
        model(input_ids=input_ids, pixel_values=torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match="no image placeholder"):
        model(input_ids=torch.tensor([[1, 5, 6]]), pixel_values=torch.zeros(1, 3, 28, 28))
    # placeholders without their image: an error, not the text model reading placeholder embeddings
    with pytest.raises(ValueError, match="hold 3 image positions .* but no pixel_values or image_features"):
        model.generate(input_ids=input_ids, max_new_tokens=2)


def test_vision_feature_layer_counted_from_either_end_selects_the_same_states():
    """Layer 0 is the embeddings (after CLIP's pre-LayerNorm): transformers records hidden states only for a truthy
    index, so the config stores every index counted from the end, and an index that does not exist is an error."""
    model = tiny_model()
    pixels = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        states = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states  # embeddings + 2 layers
        for layer, expected in ((0, -3), (1, -2), (-1, -1), ([0, 2], [-3, -1])):
            config = tiny_config(vision_feature_layer=layer)
            assert config.vision_feature_layer == expected
            model.config.vision_feature_layer = config.vision_feature_layer  # the inner model shares this config
            if isinstance(layer, int):
                features = model.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output[0]
                assert torch.equal(features, model.model.multi_modal_projector(states[layer][0, 1:]))
    with pytest.raises(ValueError, match="vision_feature_layer 3 does not exist.*-3..2"):
        tiny_config(vision_feature_layer=3)


@pytest.mark.parametrize("projector_type", ["linear", "mlp2x_gelu", "mlp3x_gelu"])
def test_projector_layers(projector_type):
    model = tiny_model(projector_type)
    names = sorted(name for name, _ in model.model.multi_modal_projector.named_parameters())
    depth = {"linear": 1, "mlp2x_gelu": 2, "mlp3x_gelu": 3}[projector_type]
    assert names == sorted(f"linear_{i}.{p}" for i in range(1, depth + 1) for p in ("bias", "weight"))
    features = torch.randn(2, 4, 32)
    projector = model.model.multi_modal_projector
    expected = projector.linear_1(features)
    for i in range(2, depth + 1):
        expected = getattr(projector, f"linear_{i}")(torch.nn.functional.gelu(expected))
    assert torch.equal(projector(features), expected)


def _tiny_inputs(processor, texts=("Point to the mug.",)):
    from PIL import Image

    images = [Image.new("RGB", (40 + 9 * i, 30), (20 * i, 100, 200)) for i in range(len(texts))]
    return processor(images=images, text=list(texts), return_tensors="pt")


def test_save_load_round_trip_and_exact_llava_hf_key_set(tmp_path):
    from robopoint_hf import RoboPointForConditionalGeneration

    model = tiny_model("mlp2x_gelu")
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        saved = set(handle.keys())
    # The llava-hf layout, spelled out (not derived from our own mapping).
    expected = set()
    for name in model.state_dict():
        if name.startswith("model.language_model."):
            expected.add("language_model.model." + name[len("model.language_model.") :])
        elif name == "lm_head.weight":
            expected.add("language_model.lm_head.weight")
        elif name.startswith("model.vision_tower."):
            expected.add("vision_tower.vision_model." + name[len("model.vision_tower.") :])
        else:
            expected.add(name[len("model.") :])
    assert saved == expected
    assert "vision_tower.vision_model.embeddings.patch_embedding.weight" in saved
    assert "multi_modal_projector.linear_2.weight" in saved

    reloaded = RoboPointForConditionalGeneration.from_pretrained(tmp_path).eval()
    inputs = _tiny_inputs(tiny_processor())
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)


def test_batched_generation_equals_unbatched():
    model = tiny_model()
    processor = tiny_processor()
    texts = ("Point to the mug.", "Find a few spots in the vacant area left of the red box on the table.")
    batch = _tiny_inputs(processor, texts)
    assert batch["attention_mask"][0, 0] == 0  # left padded
    batched = model.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1] :]
    for row in range(len(texts)):
        single = {key: value[row : row + 1] for key, value in batch.items()}
        mask = single["attention_mask"][0].bool()
        single["input_ids"] = single["input_ids"][:, mask]
        single["attention_mask"] = single["attention_mask"][:, mask]
        alone = model.generate(**single, max_new_tokens=6, do_sample=False)[0, single["input_ids"].shape[1] :]
        assert batched[row].tolist() == alone.tolist()


def test_attention_implementations_agree():
    model = tiny_model()
    inputs = _tiny_inputs(tiny_processor())
    with torch.no_grad():
        sdpa = model(**inputs).logits
        model.set_attn_implementation("eager")
        eager = model(**inputs).logits
    torch.testing.assert_close(sdpa, eager, atol=1e-4, rtol=1e-4)
    assert model.config.text_config._attn_implementation == "eager"
    with pytest.raises((ImportError, ValueError)):
        model.set_attn_implementation("flash_attention_2")  # no flash-attn on this CPU machine: a clean error


def test_gradient_checkpointing_trains_projector_and_lm():
    model = tiny_model().train()
    model.activation_checkpointing_enable()
    inputs = _tiny_inputs(tiny_processor())
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == 32000, -100)
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert model.model.language_model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_device_map_auto_with_offload(tmp_path):
    from robopoint_hf import RoboPointForConditionalGeneration

    model = tiny_model()
    model.save_pretrained(tmp_path / "model")
    inputs = _tiny_inputs(tiny_processor())
    expected = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    offloaded = RoboPointForConditionalGeneration.from_pretrained(
        tmp_path / "model",
        device_map="auto",
        max_memory={"cpu": "1MB", "disk": "1GB"},
        offload_folder=str(tmp_path / "offload"),
    )
    assert "disk" in set(offloaded.hf_device_map.values())
    assert torch.equal(offloaded.generate(**inputs, max_new_tokens=4, do_sample=False), expected)


@pytest.mark.parametrize("bits", [8, 4])
def test_bitsandbytes_cpu_loading_keeps_vision_and_projector(tmp_path, bits):
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    from robopoint_hf import RoboPointForConditionalGeneration

    model = tiny_model(text_overrides={"hidden_size": 128, "intermediate_size": 256})  # >= one 4-bit block
    model.save_pretrained(tmp_path)
    # A plain bitsandbytes config: the vision tower and projector stay unquantized by default.
    config = BitsAndBytesConfig(load_in_8bit=True) if bits == 8 else BitsAndBytesConfig(load_in_4bit=True)
    quantized = RoboPointForConditionalGeneration.from_pretrained(tmp_path, quantization_config=config)
    layer = quantized.model.language_model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == ("Linear8bitLt" if bits == 8 else "Linear4bit")
    assert type(quantized.model.multi_modal_projector.linear_1) is torch.nn.Linear
    assert type(quantized.model.vision_tower.encoder.layers[0].mlp.fc1) is torch.nn.Linear
    out = quantized.generate(**_tiny_inputs(tiny_processor()), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 3


def test_remote_code_folder_loads_without_the_package(tmp_path):
    """A saved folder carries the model code: AutoModel/AutoProcessor load it where robopoint_hf cannot import."""
    model = tiny_model()
    processor = tiny_processor()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_robopoint.RoboPointForConditionalGeneration"
    assert {"modeling_robopoint.py", "configuration_robopoint.py", "processing_robopoint.py"} <= set(
        os.listdir(tmp_path)
    )
    inputs = _tiny_inputs(processor)
    expected = model.generate(**inputs, max_new_tokens=5, do_sample=False)[0].tolist()
    script = f"""
from PIL import Image
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor
folder = {str(tmp_path)!r}
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__name__ == "RoboPointForConditionalGeneration", type(model)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert type(AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)) is type(model)
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
images = [Image.new("RGB", (40, 30), (0, 100, 200))]
inputs = processor(images=images, text=["Point to the mug."], return_tensors="pt")
print(model.generate(**inputs, max_new_tokens=5, do_sample=False)[0].tolist())
"""
    assert json.loads(run_without_robopoint_hf(script, cwd=tmp_path)) == expected


def _fixture_processor(template: str):
    from transformers import AutoTokenizer

    from robopoint_hf import RoboPointImageProcessor, RoboPointProcessor

    tokenizer = AutoTokenizer.from_pretrained(Path(ORIGINAL) / "vicuna-mlp2x-full")
    return RoboPointProcessor(RoboPointImageProcessor(), tokenizer, prompt_template=template)


def test_original_only_arguments_are_rejected_elsewhere(tmp_path):
    from robopoint_hf import RoboPointForConditionalGeneration

    tiny_model().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="only apply to original-format checkpoints"):
        RoboPointForConditionalGeneration.from_pretrained(tmp_path, model_base="vicuna-base")
    with pytest.raises(ValueError, match="device_map cannot be used while converting an original checkpoint"):
        RoboPointForConditionalGeneration.from_pretrained(ORIGINAL / "llama2-linear-full", device_map="auto")


# ------------------------------------------------------------------------------------------- FewRowLinear
@pytest.mark.parametrize(("in_features", "pack"), [(64, True), (512, True), (512, False), (2048, True)])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_few_row_linear_equals_nn_linear_up_to_summation_order(monkeypatch, in_features, pack, rows):
    """Every kernel (oneDNN on the plain weight from `onednn_min_in_features`, on the weight packed in its layout
    from `packed_min_in_features`, MKL's ``W @ X^T`` below that or with packing off) gives ``nn.Linear``'s values in
    ``nn.Linear``'s shape."""
    from robopoint_hf.model import modeling_robopoint
    from robopoint_hf.model.modeling_robopoint import FewRowLinear

    calls = []
    onednn = modeling_robopoint._ONEDNN_LINEAR
    if onednn is not None:
        monkeypatch.setattr(
            modeling_robopoint, "_ONEDNN_LINEAR", lambda *a: calls.append(a[1].is_mkldnn) or onednn(*a)
        )
    monkeypatch.setattr(FewRowLinear, "pack_narrow_weights", pack)
    torch.manual_seed(0)
    reference = torch.nn.Linear(in_features, 96, bias=False)
    layer = FewRowLinear(in_features, 96, bias=False)
    layer.weight = reference.weight
    inputs = torch.randn(1, rows, in_features)
    with torch.no_grad():
        ours, theirs = layer(inputs), reference(inputs)
    assert ours.shape == theirs.shape == (1, rows, 96)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    if onednn is None:
        assert calls == []
    elif in_features >= FewRowLinear.onednn_min_in_features:
        assert calls == [False]  # the plain weight
    else:
        packed = pack and in_features >= FewRowLinear.packed_min_in_features
        assert calls == ([True] if packed else [])  # the packed copy, or MKL


@pytest.mark.skipif(modeling_robopoint._ONEDNN_PACK is None, reason="PyTorch built without oneDNN")
def test_a_packed_weight_follows_every_change_of_the_weight():
    """The packed copy is remade after an in-place write (``load_state_dict``, an optimizer step, a LoRA merge) and
    after a new weight tensor; a module holding one still deep-copies and pickles."""
    from robopoint_hf.model.modeling_robopoint import FewRowLinear

    torch.manual_seed(0)
    width = FewRowLinear.packed_min_in_features
    layer = FewRowLinear(width, 16, bias=False)
    inputs = torch.randn(2, width)

    def check() -> None:
        with torch.no_grad():
            torch.testing.assert_close(layer(inputs), inputs @ layer.weight.t(), rtol=1e-5, atol=1e-5)

    check()
    layer.load_state_dict({"weight": torch.randn(16, width)})
    check()
    with torch.no_grad():
        layer.weight.mul_(-2)
    check()
    layer.weight = torch.nn.Parameter(torch.randn(16, width))
    check()
    copied = copy.deepcopy(layer)
    restored = pickle.loads(pickle.dumps(layer))
    with torch.no_grad():
        assert torch.equal(copied(inputs), layer(inputs)) and torch.equal(restored(inputs), layer(inputs))


def test_few_row_linear_leaves_training_biases_and_long_inputs_to_nn_linear():
    from robopoint_hf.model.modeling_robopoint import FewRowLinear

    torch.manual_seed(0)
    layer = FewRowLinear(32, 16, bias=False)
    with_bias = FewRowLinear(32, 16)
    few, many = torch.randn(2, 32), torch.randn(FewRowLinear.max_rows + 1, 32)
    expected = torch.nn.functional.linear
    assert torch.equal(layer(few), expected(few, layer.weight))  # autograd on
    with torch.no_grad():
        assert torch.equal(layer(many), expected(many, layer.weight))
        assert torch.equal(with_bias(few), expected(few, with_bias.weight, with_bias.bias))
        assert torch.equal(layer.double()(few.double()), expected(few.double(), layer.weight))


@pytest.mark.slow  # one inductor compilation
@pytest.mark.parametrize("in_features", [512, 2048])
def test_few_row_linear_compiles(in_features):
    """Under ``torch.compile`` the product stays on MKL: inductor lowers oneDNN's op only for frozen weights."""
    from robopoint_hf.model.modeling_robopoint import FewRowLinear

    torch.manual_seed(0)
    layer = FewRowLinear(in_features, 16, bias=False)
    inputs = torch.randn(1, 3, in_features)
    with torch.no_grad():
        compiled = torch.compile(layer)(inputs)
    torch.testing.assert_close(compiled, inputs @ layer.weight.t(), rtol=1e-5, atol=1e-5)
