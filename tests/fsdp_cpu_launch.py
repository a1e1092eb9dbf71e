"""`genpage wbc` (or, with `--module NAME`, that module) under FSDP2 on CPU processes (gloo), for
`test_sharding.py`; launched by `accelerate launch`.

accelerate 1.15 selects FSDP only for accelerator device types (`AcceleratorState`: its FSDP branch lists
MULTI_GPU, MULTI_NPU, ..., never MULTI_CPU), although torch's `fully_shard` shards over gloo on CPU. This
launcher changes only that choice: once accelerate has set up the CPU process group with the Trainer's FSDP
plugin, the state's distributed type becomes FSDP. Sharding, gathering and saving are then the libraries' and
the package's own code. After training, rank 0 also writes the weights gathered by torch's own
`get_model_state_dict` (gathered.safetensors) and each rank's lm_head shard size (shards.json).
"""

import json
import os
import runpy
import sys

import torch.distributed as dist
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from genpage_hf.commands.base import end_processes, parse_command
from genpage_hf.commands.train import COMMANDS, run_stage

_accelerator_state_init = AcceleratorState.__init__


def _fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.fsdp_plugin = fsdp_plugin
        self.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # later AcceleratorState() read it


AcceleratorState.__init__ = _fsdp_on_cpu

if __name__ == "__main__" and sys.argv[1] == "--module":
    sys.argv = [sys.argv[2], *sys.argv[3:]]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
elif __name__ == "__main__":
    run = run_stage(*parse_command("wbc", COMMANDS["wbc"], sys.argv[1:]))
    model = run.trainer.model
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    shards = [None] * dist.get_world_size()
    dist.all_gather_object(shards, tuple(model.lm_head.weight.to_local().shape))
    if dist.get_rank() == 0:
        out = run.trainer.args.output_dir
        save_file({k: v.contiguous() for k, v in full.items()}, os.path.join(out, "gathered.safetensors"))
        with open(os.path.join(out, "shards.json"), "w") as f:
            json.dump({"model_class": type(model).__name__, "lm_head_shards": shards}, f)
    end_processes()
