"""Peak memory and time of `robopoint convert` on a ~1.5 GB original-format checkpoint in several shards.

Builds a random LLaVA-1.5 checkpoint in the ORIGINAL layout (Llama weights + `model.mm_projector.{0,2}` + a stored
CLIP copy, fp16 safetensors shards, `mm_vision_tower` pointing at a random CLIP folder), then converts it in a
child process and reports that process's peak RSS relative to the largest source shard, next to the baseline of
loading the whole checkpoint into memory (what a non-streaming converter does).

    python benchmarks/bench_convert.py [--workdir /tmp/bench_convert] [--layers 8] [--hidden 2048]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import sys, time, torch
mode, src, out = sys.argv[1:4]
start = time.perf_counter()
if mode == "imports":  # interpreter + torch + transformers + robopoint_hf, the floor of both runs
    import robopoint_hf.original.convert
elif mode == "convert":
    from robopoint_hf.original.convert import convert_checkpoint
    convert_checkpoint(src, out, dtype="float16", max_shard_size="400MB")
else:  # baseline: a non-streaming converter -- whole state dict in memory, then one save
    from pathlib import Path
    from safetensors.torch import load_file, save_file
    state = {}
    for shard in sorted(Path(src).glob("model-*.safetensors")):
        state.update({key: tensor.clone() for key, tensor in load_file(shard).items()})
    Path(out).mkdir(parents=True, exist_ok=True)
    save_file(state, str(Path(out) / "model.safetensors"))
# VmHWM (not ru_maxrss, which keeps the parent's high-water mark across fork + exec).
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]
print(time.perf_counter() - start, int(hwm) * 1024)
"""


def build_checkpoint(folder: Path, layers: int, hidden: int, vision_hidden: int = 256) -> int:
    """Writes the random checkpoint; returns the size in bytes of its largest shard."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel

    clip = folder / "clip"
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=4 * vision_hidden,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=336,
        patch_size=14,
    )
    CLIPVisionModel(vision).save_pretrained(clip)
    source = folder / "original"
    source.mkdir(parents=True)
    intermediate, vocab = hidden * 11 // 4, 32000
    config = {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "vocab_size": vocab,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "float16",
        "mm_vision_tower": str(clip),
        "mm_hidden_size": vision_hidden,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_patch_merge_type": "flat",
        "image_aspect_ratio": "pad",
    }
    (source / "config.json").write_text(json.dumps(config))
    shutil.copy(Path(__file__).parents[1] / "tests/fixtures/original/vicuna-base/tokenizer.json", source)
    shutil.copy(Path(__file__).parents[1] / "tests/fixtures/original/vicuna-base/tokenizer_config.json", source)

    def rand(*shape):
        return torch.randn(*shape, dtype=torch.float16)

    groups = [{"model.embed_tokens.weight": rand(vocab, hidden)}]
    for layer in range(layers):
        prefix = f"model.layers.{layer}."
        tensors = {prefix + f"self_attn.{name}_proj.weight": rand(hidden, hidden) for name in "qkvo"}
        tensors.update(
            {
                prefix + "mlp.gate_proj.weight": rand(intermediate, hidden),
                prefix + "mlp.up_proj.weight": rand(intermediate, hidden),
                prefix + "mlp.down_proj.weight": rand(hidden, intermediate),
                prefix + "input_layernorm.weight": rand(hidden),
                prefix + "post_attention_layernorm.weight": rand(hidden),
            }
        )
        groups.append(tensors)
    clip_copy = {
        f"model.vision_tower.vision_tower.{k}": v.half() for k, v in CLIPVisionModel(vision).state_dict().items()
    }
    groups.append(
        {
            "model.norm.weight": rand(hidden),
            "lm_head.weight": rand(vocab, hidden),
            "model.mm_projector.0.weight": rand(hidden, vision_hidden),
            "model.mm_projector.0.bias": rand(hidden),
            "model.mm_projector.2.weight": rand(hidden, hidden),
            "model.mm_projector.2.bias": rand(hidden),
            **clip_copy,
        }
    )
    shards, current = [], {}
    for group in groups:  # ~3 layers per shard
        current.update(group)
        if sum(t.numel() * 2 for t in current.values()) > 300e6:
            shards.append(current)
            current = {}
    shards.append(current)
    weight_map = {}
    for index, shard in enumerate(shards, 1):
        name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: v.contiguous() for k, v in shard.items()}, source / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    (source / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return max((source / name).stat().st_size for name in set(weight_map.values()))


def run_child(mode: str, src: Path, out: Path) -> tuple[float, int]:
    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(out)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    seconds, peak = result.stdout.split()[-2:]
    return float(seconds), int(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/bench_convert")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=2048)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    largest = build_checkpoint(workdir, args.layers, args.hidden)
    total = sum(path.stat().st_size for path in (workdir / "original").glob("*.safetensors"))
    ours = run_child("convert", workdir / "original", workdir / "converted")
    baseline = run_child("load-all", workdir / "original", workdir / "unused")
    floor = run_child("imports", workdir / "original", workdir / "unused")[1]
    gb = 1e9
    print(f"checkpoint: {total / gb:.2f} GB in shards, largest shard {largest / gb:.2f} GB")
    print(f"process floor (imports only): {floor / gb:.2f} GB RSS, subtracted in the last column")
    print(f"{'':28s} {'seconds':>8s} {'peak RSS GB':>12s} {'(peak - floor) / largest shard':>31s}")
    for label, (seconds, peak) in (("robopoint convert (stream)", ours), ("baseline: load all + save", baseline)):
        print(f"{label:28s} {seconds:8.1f} {peak / gb:12.2f} {(peak - floor) / largest:31.2f}")
    print(f"ratio ours/baseline peak RSS: {ours[1] / baseline[1]:.2f}")


if __name__ == "__main__":
    main()
