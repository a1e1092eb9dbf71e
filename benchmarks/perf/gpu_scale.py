"""GenPage training throughput on one GPU under DDP and FSDP2: tokens/s and model FLOPs utilization (MFU).

Kept ready for whenever a GPU is available (issue 33): it simulates one logged day of the default world, then
for every strategy (`ddp`, `fsdp2`: the package's shipped accelerate configs, `genpage_hf.accelerate_configs`)
and stage (NTP, WBC) launches `accelerate launch --num_processes N` on a worker that builds a GenPage model of
the requested size and times real training steps through the package's trainers
(`benchmarks.perf.common.timed_training`: collation, forward, backward, optimizer, after warm-up steps). MFU =
model FLOPs per second (`common.model_flops`) / the bf16 matmul peak measured on the same GPU in the worker, and
/ the card's nominal dense peak when it is known. With one process, `ddp` is plain single-device training
(accelerate wraps nothing) and `fsdp2` shards over a world of one: the figure is FSDP2's overhead.

    python -m benchmarks.perf.gpu_scale [--hidden_size 512 --num_hidden_layers 8] [--strategies ddp,fsdp2]

`--device cpu` runs the same path on CPU processes (the `ddp` strategy only: accelerate runs FSDP only on
accelerators), for the package's smoke test; it writes the result file too, marked with its device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch
from transformers import HfArgumentParser

NOMINAL_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1}
"""Dense bf16 tensor-core peaks (TFLOP/s) from the vendor data sheets (SXM parts), by name fragment."""


@dataclass
class GpuScaleArguments:
    """Options of the GPU training-throughput benchmark."""

    hidden_size: int = field(default=512, metadata={"help": "model width"})
    num_hidden_layers: int = field(default=8, metadata={"help": "decoder layers"})
    num_attention_heads: int = field(default=8, metadata={"help": "attention heads"})
    intermediate_size: int = field(default=2048, metadata={"help": "MLP width"})
    users: int = field(default=3000, metadata={"help": "simulated users of the one logged day"})
    steps: int = field(default=50, metadata={"help": "timed training steps per run (after 3 warm-up steps)"})
    batch_size: int = field(default=64, metadata={"help": "per-device batch size"})
    num_processes: int = field(default=1, metadata={"help": "GPUs (processes) per run"})
    dtype: str = field(default="bf16", metadata={"help": "training precision (fp32 on CPU)"})
    strategies: str = field(default="ddp,fsdp2", metadata={"help": "comma-separated: ddp, fsdp2"})
    stages: str = field(default="ntp,wbc", metadata={"help": "comma-separated: ntp, wbc"})
    device: str = field(default="cuda", metadata={"help": "cuda, or cpu for a smoke run", "choices": ["cuda", "cpu"]})
    timeout_s: int = field(default=1800, metadata={"help": "limit of each launched run"})
    result_file: str = field(default="benchmarks/results/gpu_scale.json", metadata={"help": "the JSON written"})
    worker: str = field(default="", metadata={"help": "internal: run one timed stage on this log folder"})

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "users", "steps",
                     "batch_size", "num_processes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        bad = [s for s in self.strategy_list if s not in ("ddp", "fsdp2")]
        bad += [s for s in self.stage_list if s not in ("ntp", "wbc")]
        if bad:
            raise ValueError(f"unknown strategies/stages {bad}: strategies are ddp, fsdp2; stages ntp, wbc")
        if self.device == "cpu" and "fsdp2" in self.strategy_list:
            raise ValueError("--device cpu runs only --strategies ddp: accelerate runs FSDP only on accelerators")

    @property
    def strategy_list(self) -> list[str]:
        return [s for s in self.strategies.split(",") if s]

    @property
    def stage_list(self) -> list[str]:
        return [s for s in self.stages.split(",") if s]


def gpu_matmul_peak(dtype: torch.dtype = torch.bfloat16, n: int = 8192, reps: int = 20) -> float:
    """Best FLOP/s of an n x n matmul on the current GPU (warmed up, synchronized)."""
    a, b = torch.randn(n, n, dtype=dtype, device="cuda"), torch.randn(n, n, dtype=dtype, device="cuda")
    best = 0.0
    for _ in range(3):
        a @ b
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def run_worker(args: GpuScaleArguments, stage: str, out_file: str) -> None:
    """One timed stage in a launched process; rank 0 writes its figures to `out_file`."""
    from benchmarks.perf.common import timed_training
    from genpage_hf import load_spec
    from genpage_hf.checkpoint import build_genpage
    from genpage_hf.simulation import load_logs

    records, catalog, _ = load_logs(args.worker)
    records = [r.to_dict() for r in records]
    model, tokenizer = build_genpage(catalog, load_spec(), seed=0, hidden_size=args.hidden_size,
                                     num_hidden_layers=args.num_hidden_layers,
                                     num_attention_heads=args.num_attention_heads,
                                     num_key_value_heads=args.num_attention_heads,
                                     intermediate_size=args.intermediate_size)
    parameters = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        result = timed_training(stage, model, tokenizer, records, args.steps, args.batch_size, tmp, dtype=args.dtype,
                                use_cpu=args.device == "cpu")
    from accelerate.state import AcceleratorState

    from genpage_hf.commands.base import end_processes

    if int(os.environ.get("RANK", "0")) == 0:
        result["parameters"] = parameters
        result["distributed_type"] = AcceleratorState().distributed_type.name
        if torch.cuda.is_available():
            result["gpu"] = torch.cuda.get_device_name()
            result["matmul_peak_bf16_flops"] = gpu_matmul_peak()
            result["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        with open(out_file, "w", encoding="utf-8") as f:
            json.dump(result, f)
    end_processes()


def launch(args: GpuScaleArguments, strategy: str, stage: str, log_dir: str, out_file: str) -> dict:
    """`accelerate launch` one worker with the strategy's shipped config; its figures and wall time."""
    from genpage_hf.accelerate_configs import accelerate_config

    config = accelerate_config("cpu_ddp_2proc" if args.device == "cpu" else strategy)
    options = {k: v for k, v in asdict(args).items() if k not in ("worker", "stages", "strategies", "result_file")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config,
           "--num_processes", str(args.num_processes), "-m", "benchmarks.perf.gpu_scale",
           *[f"--{k}={v}" for k, v in options.items()], f"--worker={log_dir}", f"--stages={stage}",
           f"--strategies={strategy}", f"--result_file={out_file}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{strategy}/{stage} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    with open(out_file, encoding="utf-8") as f:
        result = json.load(f)
    result["wall_s"] = time.perf_counter() - start
    return result


def main(args: GpuScaleArguments) -> dict:
    """Simulate the log, time every strategy x stage, write the result file, return its metrics."""
    from genpage_hf.precision import hardware_info
    from genpage_hf.simulation import UserPopulation, World, WorldConfig, write_logs
    from genpage_hf.studies.results import write_result

    if args.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no GPU is visible (torch.cuda.is_available() is False)")
    start = time.perf_counter()
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        world = World(WorldConfig())
        write_logs(world, UserPopulation(world, args.users), days=1, seed=0, out_dir=tmp)
        for strategy in args.strategy_list:
            for stage in args.stage_list:
                print(f"{strategy} / {stage} ...", flush=True)
                runs[f"{strategy}/{stage}"] = launch(args, strategy, stage, tmp,
                                                     os.path.join(tmp, f"{strategy}-{stage}.json"))
    for run in runs.values():
        flops = run["model_flops_per_s"] * args.num_processes  # every process trains its own batch
        run["tokens_per_s_all_gpus"] = run["tokens_per_s"] * args.num_processes
        if "matmul_peak_bf16_flops" in run:
            run["mfu_vs_measured_peak"] = flops / (run["matmul_peak_bf16_flops"] * args.num_processes)
        nominal = next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in run.get("gpu", "")), None)
        if nominal is not None:
            run["mfu_vs_nominal_peak"] = flops / (nominal * 1e12 * args.num_processes)
    metrics = {"device": args.device, "runs": runs, "hardware": hardware_info(),
               "tokens_per_s": {k: round(v["tokens_per_s_all_gpus"], 1) for k, v in runs.items()},
               "mfu_vs_nominal_peak": {k: round(v["mfu_vs_nominal_peak"], 4) for k, v in runs.items()
                                       if "mfu_vs_nominal_peak" in v}}
    write_result(args.result_file, args, metrics, time.perf_counter() - start)
    print(json.dumps({k: metrics[k] for k in ("tokens_per_s", "mfu_vs_nominal_peak")}))
    return metrics


if __name__ == "__main__":
    parsed = HfArgumentParser(GpuScaleArguments).parse_args_into_dataclasses()[0]
    if parsed.worker:
        run_worker(parsed, parsed.stage_list[0], parsed.result_file)
    else:
        main(parsed)
