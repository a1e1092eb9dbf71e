#!/usr/bin/env bash
# The RecBole 1.2.1 peer of the MovieLens study: SASRec (default hyperparameters, early stopping on
# validation NDCG@10 with patience 10) and Pop on the same atomic file, the same leave-one-out split and
# the same full ranking as `python -m benchmarks.studies.movielens`. Never run in CI: SASRec on
# ml-latest-small takes an hour or more on 2 CPU cores. Run it in the background, from the repository root:
#
#   nohup bash benchmarks/studies/movielens_peer.sh > /work/tmp/movielens-peer.log 2>&1 &
#
# Environment (defaults in brackets):
#   ARCHIVE      MovieLens zip                  [../shared/data/movielens/ml-latest-small.zip]
#   PEER_DIR     atomic files, logs, results    [/work/tmp/movielens-peer]
#   RECBOLE_VENV RecBole's own virtualenv       [/work/recbole-venv] (created if missing)
#   GENPAGE_PY   a python with genpage_hf       [python3]
#   MODELS       models to run, in order        ["Pop SASRec"]
#   THREADS      torch threads                  [1]
#   RESUME       a RecBole checkpoint (saved/*.pth) of an interrupted SASRec run, and
#   RESUME_LOG   that run's RecBole log: training resumes after the checkpoint's epoch (RecBole's
#                Trainer.resume_checkpoint: weights, optimizer, best score, patience counter) and the
#                reported curve and seconds include the earlier epochs. The random state is not
#                restored, so the resumed epochs differ from an uninterrupted run's.
# Writes $PEER_DIR/<model>.json (valid/test HR@10 and NDCG@10, epochs, seconds, parameters, versions)
# and $PEER_DIR/<model>_split.json (RecBole's own valid/test cases, to check against ours, with the
# target's rank under the best model, for the cold-tail figures).
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root: ARCHIVE is relative to it
ARCHIVE=${ARCHIVE:-../shared/data/movielens/ml-latest-small.zip}
PEER_DIR=${PEER_DIR:-/work/tmp/movielens-peer}
RECBOLE_VENV=${RECBOLE_VENV:-/work/recbole-venv}
GENPAGE_PY=${GENPAGE_PY:-python3}
MODELS=${MODELS:-"Pop SASRec"}
THREADS=${THREADS:-1}
DATASET=ml-latest-small-genpage  # RecBole overrides data_path for 'ml-100k': never reuse a built-in name

if [ ! -x "$RECBOLE_VENV/bin/python" ] || ! "$RECBOLE_VENV/bin/python" -c "import recbole" 2>/dev/null; then
  python3 -m venv "$RECBOLE_VENV"
  # torch first, from the CPU wheel this project pins; then RecBole's known-good numeric stack.
  "$RECBOLE_VENV/bin/pip" install -q torch==2.13.0
  "$RECBOLE_VENV/bin/pip" install -q recbole==1.2.1 numpy==1.26.4 scipy==1.13.1 pandas==2.3.3 "setuptools<81"
fi

mkdir -p "$PEER_DIR"
"$GENPAGE_PY" - "$ARCHIVE" "$PEER_DIR" "$DATASET" <<'EOF'
import sys
from genpage_hf.adapters.movielens import load_movielens, write_recbole_atomic
print("atomic file:", write_recbole_atomic(load_movielens(sys.argv[1]), sys.argv[2], sys.argv[3]))
EOF

cat > "$PEER_DIR/run_recbole.py" <<'EOF'
"""One RecBole 1.2.1 run: train with early stopping on valid NDCG@10, test the best model, dump the split."""
import json, platform, sys, time

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_logger, init_seed

model_name, data_dir, dataset, out_dir, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
resume, resume_log = (sys.argv[6], sys.argv[7]) if len(sys.argv) > 7 and sys.argv[6] else (None, None)
torch.set_num_threads(threads)
config_dict = {
    "data_path": data_dir, "checkpoint_dir": f"{out_dir}/saved", "use_gpu": False, "device": "cpu",
    "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]}, "normalize_all": True,
    "MAX_ITEM_LIST_LENGTH": 50,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "stopping_step": 10,
    "train_neg_sample_args": None, "show_progress": False, "reproducibility": True, "seed": 2020,
}
if model_name == "Pop":
    config_dict["epochs"] = 1
config = Config(model=model_name, dataset=dataset, config_dict=config_dict)
init_seed(config["seed"], config["reproducibility"])
init_logger(config)  # epoch losses and validation scores go to the console and $PEER_DIR/log/
ds = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, ds)
model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
curve, prior_seconds, start_epoch = [], 0.0, None
if resume:
    import re
    log_text = open(resume_log).read()
    start_epoch = torch.load(resume, map_location="cpu")["epoch"] + 1
    evaluated = r"epoch (\d+) evaluating \[time: [\d.]+s, valid_score: ([\d.]+)\]"
    curve = [[int(e), float(v)] for e, v in re.findall(evaluated, log_text)
             if int(e) < start_epoch]
    trained = re.findall(r"epoch (\d+) training \[time: ([\d.]+)s", log_text)
    prior_seconds = sum(float(t) for e, t in trained if int(e) < start_epoch)
    if len(curve) != start_epoch:
        sys.exit(f"{resume_log} holds {len(curve)} validated epochs before epoch {start_epoch}, the checkpoint's next")
    trainer.resume_checkpoint(resume)
start = time.time()
trainer.fit(train_data, valid_data, saved=True, show_progress=False,
            callback_fn=lambda epoch, score: curve.append([epoch, float(score)]))
train_seconds = prior_seconds + time.time() - start
# The best model's validation result, evaluated again (a resumed fit returns none when no epoch beats the checkpoint).
best_valid = trainer.evaluate(valid_data, load_best_model=True, show_progress=False)
test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

def cases(data):
    inter = data._dataset.inter_feat
    uid = ds.field2id_token["user_id"]; iid = ds.field2id_token["item_id"]
    out = {"user": [str(uid[u]) for u in inter["user_id"].tolist()],
           "item": [str(iid[i]) for i in inter["item_id"].tolist()]}
    if "item_id_list" in inter:
        out["history"] = [[str(iid[i]) for i in row[:n]]
                          for row, n in zip(inter["item_id_list"].tolist(), inter["item_length"].tolist())]
    return out

def ranks(data):
    """Per case, the number of items the best model scores strictly above the target (RecBole's masking)."""
    out = []
    trainer.model.eval()
    with torch.no_grad():
        for batch in data:
            _, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batch)
            target = scores[positive_u, positive_i]
            out += (scores > target[:, None]).sum(1).tolist()
    return out

split = {"valid": cases(valid_data), "test": cases(test_data)}
split["valid"]["rank"], split["test"]["rank"] = ranks(valid_data), ranks(test_data)
json.dump(split, open(f"{out_dir}/{model_name}_split.json", "w"))
import recbole, numpy, scipy, pandas
json.dump({
    "model": model_name, "valid": {k: float(v) for k, v in best_valid.items()},
    "test": {k: float(v) for k, v in test.items()},
    "epochs": len(curve), "best_epoch": max(curve, key=lambda c: c[1])[0] if curve else None, "valid_curve": curve,
    "seconds": train_seconds, "parameters": sum(p.numel() for p in model.parameters()),
    "config": {k: config[k] for k in ("hidden_size", "n_layers", "n_heads", "inner_size", "hidden_dropout_prob",
                                      "attn_dropout_prob", "loss_type", "learning_rate", "train_batch_size", "epochs",
                                      "stopping_step", "MAX_ITEM_LIST_LENGTH") if k in config},
    "versions": {"recbole": recbole.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
                 "scipy": scipy.__version__, "pandas": pandas.__version__, "python": platform.python_version()},
    "torch_threads": torch.get_num_threads(), "resumed_from_epoch": start_epoch,
}, open(f"{out_dir}/{model_name}.json", "w"), indent=1)
print(model_name, "valid", best_valid, "test", test, f"{train_seconds:.0f}s")
EOF

PEER_DIR=$(cd "$PEER_DIR" && pwd)
cd "$PEER_DIR"  # RecBole writes log/ and log_tensorboard/ into the working directory
for model in $MODELS; do
  echo "== $model $(date -u +%FT%TZ)"
  OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 \
    "$RECBOLE_VENV/bin/python" "$PEER_DIR/run_recbole.py" "$model" "$PEER_DIR" "$DATASET" "$PEER_DIR" "$THREADS" \
    "${RESUME:-}" "${RESUME_LOG:-}"
done
echo "== done $(date -u +%FT%TZ)"
