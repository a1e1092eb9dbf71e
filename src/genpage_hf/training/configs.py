"""Training configurations, the TRL way: `TrainingArguments` subclasses carrying GenPage's data fields
and defaults, each field documented in `metadata["help"]` (which `HfArgumentParser` turns into the
CLI's `--help`). The CLI, the Python API and `training_scripts/` all parse these classes, so the same
flags give the same arguments everywhere.

- `ModelArguments`: which model to start from (a folder or Hub repo id) or to build (catalog, spec, sizes).
- `DataArguments`: where the impression records are (files, streaming).
- `NTPConfig` / `WBCConfig`: optimization (TrainingArguments, with GenPage's defaults), how records
  become examples, the dtype policy and PEFT/LoRA settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Sequence

from transformers import TrainingArguments
from transformers.trainer_utils import HubStrategy, SaveStrategy, SchedulerType
from trl import GRPOConfig

from ..data import ROW_TARGETS
from ..generation.sampling import SAMPLED_TOKENS
from ..hub import check_push_arguments
from ..modeling_genpage import REWARD_SLOT_MODELS, REWARD_VALUE_AT
from ..precision import DTYPES, default_device, resolve_dtype
from ..rewards import RewardConfig

# Every Llama projection of the decoder, plus the input embedding so that new entity tokens get
# trainable (low-rank) rows; the head, which holds the WBC values, is trained in full (modules_to_save).
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens"]

# GenPage stages push once, their saved folder, at the end (genpage_hf.hub); the Trainer's own pushes never run.
PUSH_HELP = ("push the saved output folder to the Hub (--hub_model_id, default: the output folder's name) in one "
             "commit once the stage has written everything; the Trainer's own checkpoint pushes never run")
HUB_STRATEGY_HELP = ("with --push_to_hub: end or every_save push the final folder; checkpoint adds the last complete "
                     "checkpoint-N as last-checkpoint/, all_checkpoints every complete one, in the same commit")

# The stages whose examples validate every record (NTP, WBC) can leave invalid ones out instead (SkippedRecords).
SKIP_BAD_RECORDS_HELP = ("leave invalid records out of the examples and count them (logged, and "
                         "skipped_train_records / skipped_eval_records in the train metrics) instead of stopping at "
                         "the first one; genpage validate lists every problem of a log")

# transformers' train samplers; resuming from a checkpoint reproduces each one's order exactly (training/samplers.py).
TRAIN_SAMPLING_STRATEGIES = ("random", "sequential", "group_by_length", "batch_rebalance")

SHUFFLE_BUFFER_SIZE = 10_000
"""Default `shuffle_buffer_size`: streamed records drawn at random from a buffer of this many (held in memory)."""


def check_ranges(args: Any, positive: Sequence[str] = (), non_negative: Sequence[str] = (),
                 finite: Sequence[str] = ()) -> None:
    """Raise a ValueError naming the first option (`--name`) whose value is out of range: `positive` numbers > 0,
    `non_negative` numbers >= 0 (both finite), `finite` any finite number; None (unset) passes. Checked before
    transformers/TRL/PEFT see them, which fail later with messages that do not name the option (or run zero steps)."""
    for names, ok, what in ((positive, lambda v: v > 0, "a finite number > 0"),
                            (non_negative, lambda v: v >= 0, "a finite number >= 0"),
                            (finite, lambda v: True, "a finite number")):
        for name in names:
            value = getattr(args, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or not ok(value)):
                raise ValueError(f"--{name} must be {what}, got {value!r}")


def check_training_loop(args: Any) -> None:
    """The loop options every Trainer stage shares (TrainingArguments' own fields), checked by name."""
    check_ranges(args, positive=("per_device_train_batch_size", "per_device_eval_batch_size",
                                 "gradient_accumulation_steps", "logging_steps", "num_train_epochs"),
                 non_negative=("weight_decay", "warmup_steps", "max_grad_norm", "seed", "data_seed"))
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(f"--max_steps must be >= 1, or -1 to train --num_train_epochs, got {args.max_steps}")
    if getattr(args, "dataset_num_proc", None) is not None and args.dataset_num_proc < 1:
        raise ValueError(f"--dataset_num_proc must be >= 1 (or unset), got {args.dataset_num_proc}")


@dataclass
class ModelArguments:
    """Which model to train: a checkpoint folder, or a fresh one built from a catalog and a spec."""

    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "model folder to start from (genpage init / an earlier stage), or a Hugging "
                                        "Face Hub repo id (org/name; fetched into the local cache, offline with "
                                        "HF_HUB_OFFLINE=1); omit to train from scratch (needs --catalog)"})
    revision: Optional[str] = field(
        default=None, metadata={"help": "branch, tag or commit of the Hub repo --model_name_or_path (default: main)"})
    catalog: Optional[str] = field(
        default=None, metadata={"help": "catalog JSON for a model built from scratch (e.g. from genpage simulate)"})
    spec: Optional[str] = field(
        default=None, metadata={"help": "tokenizer spec YAML for a model built from scratch (default: packaged)"})
    hidden_size: Optional[int] = field(default=None, metadata={"help": "width of a model built from scratch"})
    intermediate_size: Optional[int] = field(
        default=None, metadata={"help": "MLP width of a model built from scratch (default: 3 x hidden_size)"})
    num_hidden_layers: Optional[int] = field(default=None, metadata={"help": "layers of a model built from scratch"})
    num_attention_heads: Optional[int] = field(
        default=None, metadata={"help": "attention heads of a model built from scratch (must divide hidden_size)"})
    init_seed: int = field(default=0, metadata={"help": "initialization seed of a model built from scratch"})

    def __post_init__(self) -> None:
        check_ranges(self, non_negative=("init_seed",))
        if self.revision is not None and not self.model_name_or_path:
            raise ValueError(f"--revision {self.revision!r} selects a version of --model_name_or_path, which is not "
                             "given")
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")
        if self.hidden_size and self.num_attention_heads and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"--hidden_size {self.hidden_size} is not divisible by --num_attention_heads "
                             f"{self.num_attention_heads}")

    def config_overrides(self) -> dict[str, int]:
        """GenPageConfig overrides of a model built from scratch (only the sizes given)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)
                  if f.name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}
        values = {k: v for k, v in values.items() if v is not None}
        if "hidden_size" in values and "intermediate_size" not in values:
            values["intermediate_size"] = 3 * values["hidden_size"]
        return values


@dataclass
class DataArguments:
    """Where the impression records are: files or folders of Parquet/JSONL logs, optionally streamed."""

    train_file: Optional[str] = field(
        default=None, metadata={"help": "training records: .parquet, .jsonl, or a folder of .parquet files"})
    eval_file: Optional[str] = field(default=None, metadata={"help": "held-out records for evaluation"})
    streaming: bool = field(
        default=False, metadata={"help": "read Parquet logs as a streamed datasets.IterableDataset (logs larger than "
                                         "memory), shuffled by --shuffle_buffer_size; needs --max_steps. Under "
                                         "accelerate launch each process reads its own files (docs/training.md)"})


@dataclass
class GenPageTrainingConfig(TrainingArguments):
    """`TrainingArguments` with GenPage's defaults and the fields shared by every GenPage training stage."""

    # ---- TrainingArguments fields whose defaults GenPage changes
    output_dir: Optional[str] = field(default="genpage-run", metadata={"help": "where checkpoints and the model go"})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "training batch size per device"})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "evaluation batch size per device"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate (small models from scratch)"})
    lr_scheduler_type: SchedulerType | str = field(
        default="cosine", metadata={"help": "learning-rate schedule after warm-up"}
    )
    warmup_steps: float = field(default=20, metadata={"help": "linear warm-up steps (a float < 1: share of steps)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    logging_steps: float = field(default=10, metadata={"help": "log the training loss every N steps"})
    save_strategy: SaveStrategy | str = field(
        default="no", metadata={"help": "checkpoint strategy: no, steps or epoch"}
    )
    report_to: None | str | list[str] = field(
        default="none", metadata={"help": "trackers to report to (none, tensorboard, ...)"}
    )
    push_to_hub: bool = field(default=False, metadata={"help": PUSH_HELP})
    hub_strategy: HubStrategy | str = field(default="every_save", metadata={"help": HUB_STRATEGY_HELP})
    train_sampling_strategy: str = field(
        default="random",
        metadata={"help": "order of training examples: random, sequential, group_by_length (batches of similar "
                          "length: less padding) or batch_rebalance (batches of balanced padded cost). Each epoch's "
                          "order depends only on the seed (data_seed, else seed) and the epoch, so "
                          "--resume_from_checkpoint continues exactly as the uninterrupted run with every strategy",
                  "choices": list(TRAIN_SAMPLING_STRATEGIES)})
    shuffle_buffer_size: int = field(
        default=SHUFFLE_BUFFER_SIZE,
        metadata={"help": "--streaming: read the Parquet files in a random order and draw each record at random from "
                          "a buffer of this many (held in memory), seeded by data_seed (else seed) and reshuffled on "
                          "every pass, so day-sorted logs do not arrive in time order; 0 reads them in file order"})

    # ---- how records become examples
    max_history: Optional[int] = field(
        default=None, metadata={"help": "most recent history actions kept per context (default: the spec's limit)"})
    fallback_prob: float = field(
        default=0.0,
        metadata={
            "help": "probability of replacing an entity/row token by its fallback token (cold start; "
            "the entity's content vector is kept)"
        },
    )
    content_scoring: bool = field(
        default=False,
        metadata={
            "help": "score every token during training with its lm_head row PLUS the output-side "
            "content term content_head_proj(content) (semantic fusion on the output side): "
            "titles seen in few impressions are valued from their content; folded into "
            "the lm_head rows when training ends and in every saved checkpoint"
        },
    )
    example_seed: int = field(
        default=0, metadata={"help": "seed of negatives, fallback replacement and the user split"}
    )
    eval_fraction: float = field(
        default=0.0, metadata={"help": "without --eval_file: share of USERS held out of the training records"})
    dataset_num_proc: Optional[int] = field(
        default=None, metadata={"help": "processes for building examples (datasets.map)"})
    reward_short_play: float = field(default=RewardConfig.short_play, metadata={"help": "reward of a short play"})
    reward_long_play: float = field(default=RewardConfig.long_play, metadata={"help": "reward of a long play"})
    reward_binge_play: float = field(default=RewardConfig.binge_play, metadata={"help": "reward of a binge play"})
    reward_long_play_s: float = field(
        default=RewardConfig.long_play_s, metadata={"help": "play duration (seconds) from which a play is long"})
    reward_binge_play_s: float = field(
        default=RewardConfig.binge_play_s, metadata={"help": "play duration (seconds) from which a play is a binge"})
    reward_thumbs_up: float = field(default=RewardConfig.thumbs_up, metadata={"help": "added for a thumbs up"})
    reward_thumbs_down: float = field(default=RewardConfig.thumbs_down, metadata={"help": "added for a thumbs down"})
    reward_abandoned: float = field(
        default=RewardConfig.abandoned, metadata={"help": "reward of an impressed, unplayed entity (< 0)"})
    reward_row_aggregate: str = field(
        default=RewardConfig.row_aggregate, metadata={"help": "a row's reward from its impressed entities' rewards",
                                                      "choices": ["mean", "sum"]})

    # ---- precision
    dtype: str = field(
        default="auto", metadata={"help": "auto (bf16 autocast where the device computes bf16 natively: CUDA with "
                                          "bf16, CPUs with AMX or AVX512-BF16; else fp32), fp32 or bf16",
                                  "choices": list(DTYPES)})

    # ---- PEFT
    use_peft: bool = field(default=False, metadata={"help": "train a LoRA adapter (peft) instead of every weight"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA path"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        metadata={"help": "modules given LoRA adapters (embed_tokens: new entity tokens stay trainable)"})
    lora_modules_to_save: list[str] = field(
        default_factory=lambda: ["lm_head"], metadata={"help": "modules trained in full beside the adapters"})

    def __post_init__(self) -> None:
        resolved = resolve_dtype(self.dtype, "cpu" if self.use_cpu else default_device())
        if self.bf16 and self.dtype == "fp32":
            raise ValueError("--bf16 contradicts --dtype fp32")
        if self.bf16:
            resolved = "bf16"
        self.resolved_dtype = resolved
        self.bf16 = resolved == "bf16"  # autocast with fp32 master weights; losses are computed in fp32
        if default_device() == "cpu":
            self.use_cpu = True  # explicit: transformers then allows bf16, and accelerate sets up gloo under torchrun
        check_ranges(self, non_negative=("learning_rate",))
        for name in ("fallback_prob", "eval_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"--{name} must be in [0, 1), got {value}")
        if self.max_history is not None and self.max_history < 0:
            raise ValueError(f"--max_history must be >= 0, got {self.max_history}")
        if self.lora_r < 1:
            raise ValueError(f"--lora_r must be >= 1, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")
        check_training_loop(self)
        check_push_arguments(self)
        rewards = [f.name for f in fields(self) if f.name.startswith("reward_") and f.name != "reward_row_aggregate"]
        check_ranges(self, positive=("lora_alpha",), non_negative=("example_seed", "shuffle_buffer_size"),
                     finite=rewards)
        self.reward_config()  # RewardConfig's own checks (orderings, signs) before any training starts
        if self.train_sampling_strategy not in TRAIN_SAMPLING_STRATEGIES:
            raise ValueError(f"--train_sampling_strategy must be one of {TRAIN_SAMPLING_STRATEGIES}, got "
                             f"{self.train_sampling_strategy!r}")
        super().__post_init__()
        # The collators read target/negative columns the model's forward does not take.
        self.remove_unused_columns = False

    def reward_config(self) -> RewardConfig:
        """The reward system these arguments describe (validated by RewardConfig)."""
        return RewardConfig(short_play=self.reward_short_play, long_play=self.reward_long_play,
                            binge_play=self.reward_binge_play, long_play_s=self.reward_long_play_s,
                            binge_play_s=self.reward_binge_play_s, thumbs_up=self.reward_thumbs_up,
                            thumbs_down=self.reward_thumbs_down, abandoned=self.reward_abandoned,
                            row_aggregate=self.reward_row_aggregate)

    def lora_config(self) -> Any:
        """The `peft.LoraConfig` of these arguments (task CAUSAL_LM)."""
        from peft import LoraConfig

        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=list(self.lora_target_modules),
                          modules_to_save=list(self.lora_modules_to_save) or None, task_type="CAUSAL_LM")


@dataclass
class NTPConfig(GenPageTrainingConfig):
    """Next-token pretraining on positively engaged pages (paper §5.1)."""

    min_page_reward: float = field(
        default=0.0, metadata={"help": "keep pages whose page reward is above this (positively engaged pages)"})
    history_targets: bool = field(
        default=False, metadata={"help": "also predict the title of every history action from the actions before it "
                                         "(next-title prediction over the user's history, beside the page tokens)"})
    loss_chunk_size: int = field(
        default=0, metadata={"help": "compute the training loss this many target positions at a time, recomputing "
                                     "each chunk's logits in backward: memory grows with the chunk times the "
                                     "vocabulary, not the batch times it (catalogs of 10^5-10^6 titles); 0 = at once"})
    skip_bad_records: bool = field(default=False, metadata={"help": SKIP_BAD_RECORDS_HELP})

    def __post_init__(self) -> None:
        check_ranges(self, finite=("min_page_reward",), non_negative=("loss_chunk_size",))
        super().__post_init__()


@dataclass
class WBCConfig(GenPageTrainingConfig):
    """Weighted-binary-classification post-training (paper §5.2)."""

    num_negatives: int = field(default=4, metadata={"help": "random negatives of the same token type per target"})
    negative_weight: float = field(default=0.05, metadata={"help": "weight of each random negative (label 0)"})
    row_target: str = field(
        default="row", metadata={"help": "a row token's reward: its own (row) or to go (to_go: this row's and every "
                                         "row below it on the page; greedy row order then values what follows)",
                                 "choices": list(ROW_TARGETS)})
    row_targets_above: bool = field(
        default=False, metadata={"help": "also score every impressed row's reward at each row slot above it (greedy "
                                         "then chooses each row among values learned for every row shown lower, not "
                                         "only for the rows the logging policy put at that slot)"})
    entity_targets_above: bool = field(
        default=False, metadata={"help": "also score every impressed entity's reward at each row boundary at or above "
                                         "its row: page-level entity values, whichever row holds the entity (read by "
                                         "PageGenerator(row_order='page_value'))"})
    skip_bad_records: bool = field(default=False, metadata={"help": SKIP_BAD_RECORDS_HELP})

    def __post_init__(self) -> None:
        if self.num_negatives < 0:
            raise ValueError(f"--num_negatives must be >= 0, got {self.num_negatives}")
        if self.row_target not in ROW_TARGETS:
            raise ValueError(f"--row_target must be one of {ROW_TARGETS}, got {self.row_target!r}")
        check_ranges(self, non_negative=("negative_weight",))
        super().__post_init__()


@dataclass
class RewardModelConfig(GenPageTrainingConfig):
    """Page reward model training (paper §5.3): per-slot regression of entity rewards, summed over the page."""

    learning_rate: float = field(default=3e-4, metadata={"help": "peak learning rate (the backbone starts trained)"})
    head_learning_rate: float = field(default=1e-2, metadata={
        "help": "learning rate of the slot model's few head parameters (value scale, reach, play bias, stop "
                "probability, score head): they start far from their values, and at the backbone's rate barely move"})
    records_half: Optional[int] = field(
        default=None, metadata={"help": "train on one half of the USERS (0 or 1, split by --example_seed): the other "
                                        "half trains a held-out reward model; default: every record"})

    negative_pages: int = field(
        default=1, metadata={"help": "counterfactual copies of each logged page, a --negative_fraction of its slots "
                                     "replaced by uniformly drawn titles with reward 0 (teaches what titles the logs "
                                     "never showed are worth; 0: logged pages only)"})
    negative_fraction: float = field(
        default=0.5, metadata={"help": "share of entity slots replaced in a negative page"}
    )
    value_at: str = field(
        default="row_boundary",
        metadata={
            "help": "where each slot's value is read: entity (the state before the entity, "
            "after its row token) or row_boundary (the state above the entity's row: "
            "the page-level value of a WBC policy trained with entity_targets_above, "
            "which generalizes to rows the logs never paired with the title)",
            "choices": list(REWARD_VALUE_AT),
        },
    )
    slot_model: str = field(
        default="position",
        metadata={
            "help": "a slot's reward: hidden (a head on the slot's state plus the scaled value "
            "probability) or position (the scaled value probability times a learned "
            "reach of its row and column: a position-based click model); cascade: the position model "
            "browsed as a cascade (a play ends the browse with a learned probability, so later slots "
            "are reached less often below good ones); page: no slots, a head on "
            "the page's last state regressed on the page reward (the paper's reward model)",
            "choices": list(REWARD_SLOT_MODELS),
        },
    )

    def __post_init__(self) -> None:
        check_ranges(self, non_negative=("head_learning_rate",))
        if self.records_half not in (None, 0, 1):
            raise ValueError(f"--records_half must be 0, 1 or unset, got {self.records_half}")
        if self.negative_pages < 0 or not 0.0 < self.negative_fraction <= 1.0:
            raise ValueError(f"--negative_pages must be >= 0 and --negative_fraction in (0, 1], got "
                             f"{self.negative_pages} and {self.negative_fraction}")
        if self.value_at not in REWARD_VALUE_AT:
            raise ValueError(f"--value_at must be one of {REWARD_VALUE_AT}, got {self.value_at!r}")
        if self.slot_model not in REWARD_SLOT_MODELS:
            raise ValueError(f"--slot_model must be one of {REWARD_SLOT_MODELS}, got {self.slot_model!r}")
        super().__post_init__()


@dataclass
class GenPageGRPOConfig(GRPOConfig):
    """`trl.GRPOConfig` with GenPage's defaults: Dr. GRPO, unscaled rewards, a KL penalty, fp32, no checkpointing."""

    # ---- GRPOConfig / TrainingArguments fields whose defaults GenPage changes
    output_dir: Optional[str] = field(default="genpage-grpo", metadata={"help": "where checkpoints and the model go"})
    loss_type: str = field(default="dr_grpo", metadata={"help": "GRPO loss variant (Dr. GRPO: length-unbiased)"})
    scale_rewards: str = field(default="none", metadata={"help": "advantage scaling: none (Dr. GRPO), group or batch"})
    beta: float = field(default=0.04, metadata={"help": "KL coefficient to the reference (starting) policy; > 0"})
    learning_rate: float = field(
        default=1e-4,
        metadata={"help": "peak learning rate (with temperature 1.0; higher rates drift further from the reference)"},
    )
    lr_scheduler_type: SchedulerType | str = field(default="constant", metadata={"help": "learning-rate schedule"})
    num_generations: Optional[int] = field(default=4, metadata={"help": "sampled pages per request (the group)"})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "completions (pages) per device and step"})
    max_completion_length: Optional[int] = field(
        default=None, metadata={"help": "page token budget (default: the longest page of the requests' rules)"})
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "sampling temperature of rollouts and of the loss (1.0: rollouts explore row orders the WBC "
            "policy ranks low, which colder sampling rarely reaches)"
        },
    )
    # TRL turns checkpointing on; GenPage leaves it off (slow on CPU). transformers 5.x reads activation_checkpointing
    # (unset: off) and warns (FutureWarning) whenever its deprecated alias is not None, so the alias defaults to None.
    gradient_checkpointing: Optional[bool] = field(
        default=None, metadata={"help": "deprecated alias of --activation_checkpointing (default off: slow on CPU)"})
    bf16: Optional[bool] = field(default=None, metadata={"help": "set by --dtype"})
    logging_steps: float = field(default=1, metadata={"help": "log every N steps"})
    save_strategy: SaveStrategy | str = field(
        default="no", metadata={"help": "checkpoint strategy: no, steps or epoch"}
    )
    report_to: None | str | list[str] = field(default="none", metadata={"help": "trackers to report to"})
    push_to_hub: bool = field(default=False, metadata={"help": PUSH_HELP})
    hub_strategy: HubStrategy | str = field(default="every_save", metadata={"help": HUB_STRATEGY_HELP})
    disable_dropout: bool = field(default=True, metadata={"help": "no dropout in policy and reference"})

    # ---- GenPage fields
    dtype: str = field(
        default="fp32", metadata={"help": "fp32 (default: ratios and KL from fp32 log-probs), bf16, or auto (bf16 "
                                          "where the device computes it natively)", "choices": list(DTYPES)})
    max_history: Optional[int] = field(
        default=None, metadata={"help": "most recent history actions kept per prompt (default: the spec's limit)"})
    autoregressive_entities: Optional[int] = field(
        default=None, metadata={"help": "rollouts: entities per row sampled one by one before the rest of the row is "
                                        "drawn from one pass (hybrid rows); default: every entity one by one, which "
                                        "matches the loss's autoregressive log-probs"})
    format_reward_weight: float = field(
        default=1.0, metadata={"help": "weight of each format reward (grammar, dedup, pins, eligibility)"})
    sampled_tokens: str = field(
        default="all", metadata={"help": "rollouts: all (every token sampled, the paper's) or rows (row tokens and "
                                         "the page's end sampled, each row's entities its greedy choice: the "
                                         "rollouts of a group differ in their rows, which the loss then credits)",
                                 "choices": list(SAMPLED_TOKENS)})
    unconstrained_rollouts: bool = field(
        default=False, metadata={"help": "sample rollouts under the page grammar only, not each request's rules "
                                         "(the format rewards then carry the rules)"})

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {DTYPES}, got {self.dtype!r}")
        self.resolved_dtype = resolve_dtype(self.dtype, "cpu" if self.use_cpu else default_device())
        self.bf16 = self.resolved_dtype == "bf16"
        if default_device() == "cpu":
            self.use_cpu = True  # as in GenPageTrainingConfig
        check_training_loop(self)
        check_push_arguments(self)
        check_ranges(self, positive=("temperature",))
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(f"--num_generations must be >= 2 (GRPO's advantages compare pages of one request), got "
                             f"{self.num_generations}")
        if not self.beta > 0:
            raise ValueError(
                f"--beta must be > 0 (GenPage keeps a KL penalty to the reference policy), got {self.beta}"
            )
        if self.autoregressive_entities is not None and self.autoregressive_entities < 0:
            raise ValueError(f"--autoregressive_entities must be >= 0, got {self.autoregressive_entities}")
        if self.max_history is not None and self.max_history < 0:
            raise ValueError(f"--max_history must be >= 0, got {self.max_history}")
        if self.sampled_tokens not in SAMPLED_TOKENS:
            raise ValueError(f"--sampled_tokens must be all or rows, got {self.sampled_tokens!r}")
        check_ranges(self, non_negative=("format_reward_weight",))
        super().__post_init__()


__all__ = ["DEFAULT_LORA_TARGETS", "SHUFFLE_BUFFER_SIZE", "TRAIN_SAMPLING_STRATEGIES", "DataArguments",
           "GenPageGRPOConfig", "GenPageTrainingConfig", "ModelArguments", "NTPConfig", "RewardModelConfig",
           "WBCConfig"]
