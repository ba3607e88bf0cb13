"""Shared test helpers: fixture paths, tiny random RoboPoint models, and hand-assembled fixture checkpoints.

`tests/fixtures/original/` holds the parity fixtures produced by the ORIGINAL RoboPoint code (its README says how
each file was made, its MANIFEST.json lists every file's sha256): tiny checkpoints in the LLaVA format and their
reference inputs/outputs.
"""

from __future__ import annotations

import glob
import json
import socket
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(
    0, str(SCRIPTS)
)  # the tiny model's build recipe (`scripts/tiny_model.py`) is a script, not package code
ORIGINAL = FIXTURES / "original"
QUESTION = (
    "Find a few spots within the vacant area on the rightmost white plate.\nYour answer should be formatted as a list "
    "of tuples, i.e. [(x1, y1), (x2, y2), ...], where each tuple contains the x and y coordinates of a point "
    "satisfying the conditions above. The coordinates should be between 0 and 1, indicating the normalized pixel "
    "locations of the points in the image."
)


def tiny_config(projector_type: str = "mlp2x_gelu", text_overrides: dict | None = None, **overrides):
    """A RoboPoint config small enough for unit tests: 28px images (4 image positions), real 32000-token vocab."""
    from robopoint_hf import RoboPointConfig

    vision = dict(
        model_type="clip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=28,
        patch_size=14,
    )
    text = dict(
        model_type="llama",
        vocab_size=32000,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    text.update(text_overrides or {})
    kwargs = dict(vision_config=vision, text_config=text, projector_type=projector_type, image_seq_length=4)
    kwargs.update(overrides)
    return RoboPointConfig(**kwargs)


def tiny_model(projector_type: str = "mlp2x_gelu", seed: int = 0, text_overrides: dict | None = None, **overrides):
    from robopoint_hf import RoboPointForConditionalGeneration

    torch.manual_seed(seed)
    model = RoboPointForConditionalGeneration(tiny_config(projector_type, text_overrides, **overrides)).eval()
    # HF's 0.02-std init gives near-uniform logits; a wider init makes greedy decoding decisive and comparable.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 1 / parameter.shape[1] ** 0.5 if "embed" not in name else 1.0)
    return model


_BLOCK_PACKAGE = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "robopoint_hf" or name.startswith("robopoint_hf."):
            raise ImportError("robopoint_hf is blocked in this test")
sys.meta_path.insert(0, _Block())
"""


def run_without_robopoint_hf(code: str, cwd) -> str:
    """Runs `code` in a fresh Python where `import robopoint_hf` fails (a Hub user without the package).

    Returns the last line the code printed; fails the test with the subprocess's stderr otherwise.
    """
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_PACKAGE + code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def fixture_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ORIGINAL / "vicuna-mlp2x-full")


def tiny_processor(prompt_template: str = "vicuna_v1"):
    from robopoint_hf import RoboPointProcessor

    return RoboPointProcessor.from_model_config(fixture_tokenizer(), tiny_config(prompt_template=prompt_template))


def read_ref(checkpoint: str, mode: str, stem: str) -> tuple[dict, dict[str, torch.Tensor]]:
    folder = ORIGINAL / "refs" / checkpoint / mode
    return json.loads((folder / f"{stem}.json").read_text()), load_file(folder / f"{stem}.safetensors")


def expand_image_ids(ids: list[int], image_token_id: int = 32000, length: int = 576) -> list[int]:
    """The original's ids carry one -200 per image; ours carry `length` placeholder ids."""
    return [token for i in ids for token in ([image_token_id] * length if i == -200 else [i])]


def assemble_fixture_model(name: str):
    """Builds a RoboPoint model from a fixture checkpoint by hand (the converter automates this).

    Like the original loader, the CLIP weights come from `mm_vision_tower` (the tiny CLIP folder), not from the
    unused copy inside the checkpoint; weights are stored fp16 and compared in fp32.
    """
    from robopoint_hf import RoboPointConfig, RoboPointForConditionalGeneration

    folder = ORIGINAL / name
    original = json.loads((folder / "config.json").read_text())
    state = {}
    for file in sorted(glob.glob(str(folder / "*.bin"))):
        state.update(torch.load(file, map_location="cpu", weights_only=True))
    for file in sorted(glob.glob(str(folder / "*.safetensors"))):
        state.update(load_file(file))
    clip_folder = ORIGINAL / "clip-vit-tiny-patch14-336"
    text_keys = (
        "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads num_key_value_heads "
        "max_position_embeddings rms_norm_eps rope_theta"
    ).split()
    config = RoboPointConfig(
        vision_config=json.loads((clip_folder / "config.json").read_text()),
        text_config={"model_type": "llama", **{key: original[key] for key in text_keys}},
        projector_type=original["mm_projector_type"],
    )
    model = RoboPointForConditionalGeneration(config)
    projector = {"0.": "linear_1.", "2.": "linear_2."}
    weights = {}
    for key, tensor in state.items():
        if key.startswith("model.vision_tower."):
            continue
        if key.startswith("model.mm_projector."):
            rest = key.removeprefix("model.mm_projector.")
            rest = projector[rest[:2]] + rest[2:] if rest[:2] in projector else "linear_1." + rest
            weights["model.multi_modal_projector." + rest] = tensor
        elif key.startswith("model."):
            weights["model.language_model." + key.removeprefix("model.")] = tensor
        else:
            weights[key] = tensor
    for key, tensor in load_file(clip_folder / "model.safetensors").items():
        weights["model.vision_tower." + key.removeprefix("vision_model.")] = tensor
    model.load_state_dict({key: tensor.float() for key, tensor in weights.items()}, strict=True)
    return model.float().eval()


@pytest.fixture
def port_in_use():
    """A loopback port another socket listens on, for the listening verbs' "address in use" error."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.fixture(scope="session")
def vicuna_full():
    return assemble_fixture_model("vicuna-mlp2x-full")


@pytest.fixture(scope="session")
def llama2_linear():
    return assemble_fixture_model("llama2-linear-full")


POINTING_ANSWER = "[(12, 34), (56 ,78)]"
"""The greedy answer of `pointing_server`'s model to any question (distinct tokens, as a bigram table needs)."""


@pytest.fixture(scope="session")
def fixture_server(tmp_path_factory):
    """The original fixture checkpoint `vicuna-mlp2x-full` behind a real ``transformers serve`` on 127.0.0.1.

    Its (random) answers depend on every pixel and prompt token, which is what makes equal endpoint and local answers
    mean equal inputs. Skips with the install hint where ``transformers[serving]`` is missing.
    """
    from openai_server import served_checkpoint, serving_available

    if reason := serving_available():
        pytest.skip(reason)
    with served_checkpoint(ORIGINAL / "vicuna-mlp2x-full", tmp_path_factory.mktemp("served-fixture")) as served:
        yield served


@pytest.fixture(scope="session")
def pointing_server(tmp_path_factory):
    """The fixture checkpoint rewritten to answer `POINTING_ANSWER`, behind a real ``transformers serve``."""
    from openai_server import pointing_original_checkpoint, served_checkpoint, serving_available

    if reason := serving_available():
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("served-pointing")
    source = pointing_original_checkpoint(POINTING_ANSWER, folder / "original")
    with served_checkpoint(source, folder) as served:
        yield served
