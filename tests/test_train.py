"""Fine-tuning with TRL on a tiny RoboPoint: full / LoRA / QLoRA, merge, resume, stage-2 assembly, configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_model, tiny_processor
from PIL import Image
from safetensors.torch import load_file
from transformers import TrainerCallback

from robopoint_hf import RoboPointForConditionalGeneration
from robopoint_hf.training.collator import (
    ModalityLengthGroupedSampler,
    RoboPointDataCollator,
    modality_length_grouped_indices,
)
from robopoint_hf.training.data import load_robopoint_dataset, write_robopoint_records
from robopoint_hf.training.trainer import (
    ModelArguments,
    RoboPointSFTConfig,
    ScriptArguments,
    build_trainer,
    main,
    make_parser,
    prepare_dataset,
)

REPO = Path(__file__).resolve().parents[1]
ANSWERS = {"red": "[(0.1, 0.2)]", "green": "[(0.5, 0.5), (0.6, 0.4)]", "blue": "[(0.9, 0.8)]"}


def write_data(root: Path, extra: list[dict] | None = None) -> Path:
    """Short pointing records (the answer depends on the image colour) plus two text-only ones."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(12):
        colour = list(ANSWERS)[index % 3]
        Image.new("RGB", (30 + index, 28), colour).save(root / "images" / f"{index}.png")
        records.append(
            {
                "id": f"img/{index}",
                "image": f"{index}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nPoint to the free spot."},
                    {"from": "gpt", "value": ANSWERS[colour]},
                ],
            }
        )
    for index in range(2):
        turns = ["Hi", "Hello.", "Bye", "Bye."]
        records.append(
            {
                "id": f"text/{index}",
                "conversations": [{"from": "human" if k % 2 == 0 else "gpt", "value": v} for k, v in enumerate(turns)],
            }
        )
    write_robopoint_records(records + (extra or []), root / "data.json")
    return root / "data.json"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    write_data(root)
    tiny_model().save_pretrained(root / "base")
    tiny_processor().save_pretrained(root / "base")
    return root


def arguments(root: Path, output: str, model: str | None = None, data: str = "data.json", **overrides):
    script = ScriptArguments(
        data=str(root / data), image_folder=str(root / "images"), dataset_cache_dir=str(root / "c")
    )
    model_kwargs = {key: overrides.pop(key) for key in list(overrides) if key in ModelArguments.__dataclass_fields__}
    settings = dict(
        output_dir=str(root / output),
        per_device_train_batch_size=2,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=1,
        report_to="none",
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    settings.update(overrides)
    return script, RoboPointSFTConfig(**settings), ModelArguments(model=model or str(root / "base"), **model_kwargs)


def batch_for(root: Path):
    dataset = load_robopoint_dataset(root / "data.json", root / "images", cache_dir=root / "c")
    return RoboPointDataCollator(tiny_processor())([dataset[0], dataset[1], dataset[12]])


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**{k: v for k, v in batch.items() if k != "labels"}).logits


@pytest.mark.slow
def test_full_fine_tuning_halves_the_loss_and_saves_a_loadable_model(workspace):
    out = main(*arguments(workspace, "full", max_steps=30, save_steps=30))
    history = json.loads((out / "checkpoint-30" / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 30 and losses[-1] < losses[0] / 2, losses
    from transformers import AutoModel

    trained = AutoModel.from_pretrained(out)
    base = RoboPointForConditionalGeneration.from_pretrained(workspace / "base")
    assert isinstance(trained, RoboPointForConditionalGeneration)
    for name, parameter in trained.named_parameters():
        unchanged = torch.equal(parameter, base.get_parameter(name))
        assert unchanged == name.startswith("model.vision_tower."), name  # CLIP frozen, everything else trained


@pytest.mark.slow
def test_lora_adapter_loads_with_peft_and_merges_to_the_same_logits(workspace):
    from peft import PeftModel

    from robopoint_hf.cli import main as cli_main

    script, config, model_args = arguments(workspace, "lora", max_steps=3, save_steps=3, lora=True, lora_r=8)
    trainer = build_trainer(script, config, model_args)
    groups = trainer.create_optimizer().param_groups
    projector_ids = {
        id(p) for n, p in trainer.model.named_parameters() if "multi_modal_projector" in n and p.requires_grad
    }
    assert {group["lr"] for group in groups if {id(p) for p in group["params"]} <= projector_ids} == {2e-5}
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert all(".lora_" in name or "multi_modal_projector.modules_to_save" in name for name in trainable)
    assert all("language_model" in name for name in trainable if ".lora_" in name)
    assert any("multi_modal_projector.modules_to_save" in name for name in trainable)
    trainer.train()
    out = workspace / "lora"
    trainer.save_model(str(out))
    trainer.processing_class.save_pretrained(out)
    saved = load_file(out / "adapter_model.safetensors")
    assert any("multi_modal_projector" in key for key in saved) and not any("vision_tower" in key for key in saved)

    batch = batch_for(workspace)
    base = RoboPointForConditionalGeneration.from_pretrained(workspace / "base")
    reference = logits(base, batch)
    peft_model = PeftModel.from_pretrained(base, out)
    unmerged = logits(peft_model, batch)
    assert not torch.allclose(unmerged, reference, atol=1e-4)  # the adapter and projector did change something
    merged = logits(peft_model.merge_and_unload(), batch)
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
    assert cli_main(["merge-lora", str(out), "--output-dir", str(workspace / "merged")]) == 0
    reloaded = RoboPointForConditionalGeneration.from_pretrained(workspace / "merged")
    torch.testing.assert_close(logits(reloaded, batch), unmerged, atol=1e-4, rtol=1e-4)


class _Crash(RuntimeError):
    pass


class _CrashAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Crash(f"simulated kill at step {self.step}")


@pytest.mark.slow
def test_unfrozen_vision_tower_and_projector_get_their_own_learning_rates(workspace):
    """Every trainable parameter lands in exactly one group, at the rate of its part, with or without decay."""
    script, config, model_args = arguments(
        workspace, "rates", learning_rate=1e-3, projector_learning_rate=3e-4, vision_tower_learning_rate=1e-4,
        weight_decay=0.1, freeze_vision_tower=False,
    )  # fmt: skip
    trainer = build_trainer(script, config, model_args)
    groups = trainer.create_optimizer().param_groups
    rate_of = {id(p): (group["lr"], group["weight_decay"]) for group in groups for p in group["params"]}
    named = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert sum(len(group["params"]) for group in groups) == len(named) == len(rate_of)
    expected = {"model.vision_tower.": 1e-4, "model.multi_modal_projector.": 3e-4, "model.language_model.": 1e-3}
    for name, parameter in named:
        lr, decay = rate_of[id(parameter)]
        assert lr == next((rate for prefix, rate in expected.items() if name.startswith(prefix)), 1e-3), name
        assert decay == (0.0 if name.endswith("bias") or "norm" in name else 0.1), name
    assert any(name.startswith("model.vision_tower.") for name, _ in named)


@pytest.mark.slow
def test_length_group_size_reaches_the_sampler(workspace):
    script, config, model_args = arguments(workspace, "grouped", length_group_size=3, seed=5)
    trainer = build_trainer(script, config, model_args)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, ModalityLengthGroupedSampler) and sampler.length_group_size == 3
    expected = modality_length_grouped_indices(trainer.modality_lengths, 2, 1, torch.Generator().manual_seed(5), 3)
    assert (
        list(sampler)
        == expected
        != modality_length_grouped_indices(trainer.modality_lengths, 2, 1, torch.Generator().manual_seed(5))
    )


@pytest.mark.slow
def test_resume_after_a_kill_reaches_the_same_step_and_weights(workspace):
    settings = dict(max_steps=4, save_steps=2, save_total_limit=None)
    reference = main(*arguments(workspace, "straight", **settings))
    trainer = build_trainer(*arguments(workspace, "killed", **settings))
    trainer.add_callback(_CrashAt(3))
    with pytest.raises(_Crash):
        trainer.train()
    assert (workspace / "killed" / "checkpoint-2").is_dir() and not (workspace / "killed" / "checkpoint-4").exists()
    resumed = main(*arguments(workspace, "killed", **settings))  # finds checkpoint-2 in output_dir
    state = json.loads((resumed / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    expected, actual = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-6, rtol=1e-5, msg=key)


@pytest.mark.slow
def test_qlora_smoke(workspace):
    import bitsandbytes as bnb

    script, config, model_args = arguments(
        workspace, "qlora", max_steps=2, save_steps=2, lora=True, lora_r=4, load_in_4bit=True
    )
    trainer = build_trainer(script, config, model_args)
    assert any(isinstance(module, bnb.nn.Linear4bit) for module in trainer.model.modules())
    assert not any(
        isinstance(module, bnb.nn.Linear4bit) for module in trainer.model.base_model.model.model.vision_tower.modules()
    )
    result = trainer.train()
    assert trainer.state.global_step == 2 and result.training_loss > 0


def test_bad_records_under_both_policies(tmp_path):
    bad = [
        {"id": "bad/role", "conversations": [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]},
        {"id": "bad/image", "image": "missing.png", "conversations": [{"from": "human", "value": "<image>\nq"}]},
    ]
    write_data(tmp_path, extra=bad)
    processor = tiny_processor()
    script, *_ = arguments(tmp_path, "x")
    with pytest.raises(ValueError, match="'bad/role'.*unknown_role"):
        prepare_dataset(script, processor, 2048)
    script.on_invalid = "skip"
    dataset, lengths, counts = prepare_dataset(script, processor, 2048)
    assert len(dataset) == len(lengths) == 14 and counts == {"kept": 14, "too_long": 0}
    assert sum(length < 0 for length in lengths) == 2  # text-only rows are negative for the sampler
    with pytest.raises(ValueError, match=r"14 row\(s\) .* longer than max_length=20 .*'img/0' \(\d+ tokens\)"):
        prepare_dataset(script, processor, 20)
    script.on_too_long = "skip"
    dataset, lengths, counts = prepare_dataset(script, processor, 30)
    assert counts["too_long"] > 0 and counts["kept"] + counts["too_long"] == 14 and len(dataset) == counts["kept"]


@pytest.mark.slow
def test_stage_two_from_components_trains_lora_and_merges(tmp_path):
    from transformers import CLIPVisionModel, LlamaForCausalLM

    from robopoint_hf.cli import main as cli_main
    from robopoint_hf.training.components import from_components

    config = tiny_config()
    torch.manual_seed(0)
    llm, clip = LlamaForCausalLM(config.text_config), CLIPVisionModel(config.vision_config)
    llm.save_pretrained(tmp_path / "llm")
    tiny_processor().tokenizer.save_pretrained(tmp_path / "llm")
    clip.save_pretrained(tmp_path / "clip")
    hidden = config.text_config.hidden_size
    projector = {
        "model.mm_projector.0.weight": torch.randn(hidden, config.vision_config.hidden_size),
        "model.mm_projector.0.bias": torch.randn(hidden),
        "model.mm_projector.2.weight": torch.randn(hidden, hidden),
        "model.mm_projector.2.bias": torch.randn(hidden),
    }
    torch.save(projector, tmp_path / "mm_projector.bin")
    model = from_components(tmp_path / "llm", tmp_path / "clip", tmp_path / "mm_projector.bin", "mlp2x_gelu")
    assert model.config.image_seq_length == 4 and model.config.projector_type == "mlp2x_gelu"
    assert torch.equal(model.model.multi_modal_projector.linear_2.weight, projector["model.mm_projector.2.weight"])
    assert torch.equal(model.lm_head.weight, llm.lm_head.weight)
    tower = model.model.vision_tower.state_dict()
    assert all(torch.equal(tower[key], tensor) for key, tensor in clip.state_dict().items())
    with pytest.raises(ValueError, match="unexpected key"):
        torch.save({"other.weight": torch.zeros(1)}, tmp_path / "bad.bin")
        from_components(llm, clip, tmp_path / "bad.bin")

    write_data(tmp_path)
    script, config_args, _ = arguments(tmp_path, "stage2", max_steps=1, save_steps=1)
    parts = ModelArguments(
        language_model=str(tmp_path / "llm"),
        vision_tower=str(tmp_path / "clip"),
        projector=str(tmp_path / "mm_projector.bin"),
        lora=True,
        lora_r=4,
    )
    out = main(script, config_args, parts)
    assert json.loads((out / "robopoint_components.json").read_text())["projector_type"] == "mlp2x_gelu"
    assert cli_main(["merge-lora", str(out), "--output-dir", str(tmp_path / "merged")]) == 0
    merged = RoboPointForConditionalGeneration.from_pretrained(tmp_path / "merged")
    assert torch.isfinite(logits(merged, batch_for(tmp_path))).all()


def test_recipes_and_accelerate_configs_parse():
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    recipes = sorted((REPO / "examples" / "recipes").glob("*.yaml"))
    assert len(recipes) >= 3
    for recipe in recipes:
        script, config, model_args = make_parser().parse_args_and_config(["--config", str(recipe), "--data", "d.json"])
        assert config.max_length == 2048 and config.lr_scheduler_type == "cosine" and config.warmup_steps == 0.03
        assert config.per_device_train_batch_size * config.gradient_accumulation_steps * 8 >= 128 or model_args.bits
        assert config.learning_rate == (2e-4 if model_args.lora else 2e-5)
    configs = {
        path.stem: load_config_from_file(str(path)) for path in (REPO / "examples/accelerate_configs").glob("*.yaml")
    }
    assert {"deepspeed_zero3", "deepspeed_zero2", "fsdp"} <= configs.keys()
    assert all(isinstance(config, ClusterConfig) for config in configs.values())
    assert configs["deepspeed_zero3"].deepspeed_config["zero_stage"] == 3
    assert configs["fsdp"].fsdp_config["fsdp_version"] == 2


def test_cli_hands_options_to_the_training_parser():
    from robopoint_hf.cli import make_parser as cli_parser

    args = cli_parser().parse_args(["train", "--data", "d.json", "--image-folder", "im", "--model", "m", "--lora"])
    script, config, model_args = make_parser().parse_args_and_config(args.train_args + ["--output-dir", "o"])
    assert (script.data, script.image_folder, model_args.model, model_args.lora, model_args.lora_r) == (
        "d.json",
        "im",
        "m",
        True,
        128,
    )
    with pytest.raises(ValueError, match="exactly one starting point"):
        ModelArguments()
    with pytest.raises(ValueError, match="needs --lora"):
        ModelArguments(model="m", load_in_4bit=True)
    for lora in (dict(lora_r=0), dict(lora_alpha=0), dict(lora_dropout=1.0)):
        with pytest.raises(ValueError, match="LoRA needs --lora-r >= 1, --lora-alpha > 0 and 0 <= --lora-dropout < 1"):
            ModelArguments(model="m", lora=True, **lora)
    for flag, settings in (
        ("--per-device-train-batch-size", dict(per_device_train_batch_size=0)),
        ("--gradient-accumulation-steps", dict(gradient_accumulation_steps=0)),
        ("--learning-rate", dict(learning_rate=-1.0)),
    ):
        with pytest.raises(ValueError, match=flag):
            RoboPointSFTConfig(output_dir="o", **settings)
