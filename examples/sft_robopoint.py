# /// script
# dependencies = ["robopoint_hf[train]"]
# ///
"""Fine-tune RoboPoint with TRL: the multi-GPU entry point (same options as `robopoint train`).

```
# 8 GPUs, DeepSpeed ZeRO-3, the original LoRA recipe
accelerate launch --config_file examples/accelerate_configs/deepspeed_zero3.yaml examples/sft_robopoint.py \
    --config examples/recipes/lora_vicuna_7b.yaml

# Full fine-tuning with FSDP, overriding a recipe value on the command line
accelerate launch --config_file examples/accelerate_configs/fsdp.yaml examples/sft_robopoint.py \
    --config examples/recipes/full_vicuna_13b.yaml --output_dir runs/full

# One GPU / CPU, QLoRA on your own data
python examples/sft_robopoint.py --config examples/recipes/qlora_robopoint_13b.yaml --data my.json --image-folder imgs
```
"""

import logging

from robopoint_hf.training.trainer import main, make_parser

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(*make_parser().parse_args_and_config())
