"""The text feature extractor: a BERT encoder loaded through transformers (build path; torch).

The paper uses a Chinese BERT-base (hub ids ``bert-base-chinese`` or ``hfl/chinese-bert-wwm-ext``) and keeps the last
hidden state of all 80 positions, (80, 768).  :func:`load_text_encoder` loads the weights and the tokenizer from a
local directory or a hub id; :class:`TextEncoder` is the module that gets exported to ONNX.  :func:`load_pretrained`
is the loading helper shared with the audio extractor: it turns transformers' offline and not-found errors into one
:class:`~edge.errors.InputError` that says what to do.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edge._lazy import lazy_import
from edge.errors import CheckpointError, InputError

torch = lazy_import("torch", purpose="the BERT text feature extractor")
nn = torch.nn

log = logging.getLogger("edge")

#: The paper's text encoder (Chinese BERT-base) and a whole-word-masking alternative.
PAPER_TEXT_MODEL = "bert-base-chinese"
ALTERNATIVE_TEXT_MODEL = "hfl/chinese-bert-wwm-ext"
_TRUE = {"1", "true", "yes", "on"}


def _looks_local(name: str) -> bool:
    """True when ``name`` can only be a filesystem path (a hub id is ``name`` or ``owner/name``)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def hub_offline() -> bool:
    """Whether the user asked the Hugging Face libraries to stay offline (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def load_pretrained(what: str, name_or_path: str | Path, loader: Callable[..., Any], **kwargs: Any) -> Any:
    """``loader(name_or_path, **kwargs)`` (a transformers ``from_pretrained``) with our errors.

    A local directory that does not exist, one that transformers cannot read, and a hub id that cannot be fetched
    (no network, or ``HF_HUB_OFFLINE=1`` with nothing cached) each raise one :class:`InputError` naming ``what``.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        try:
            return loader(str(path), **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{what}: {path} is not a transformers model directory that can be loaded "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc!r}); "
                "it needs config.json and the weights written by save_pretrained"
            ) from None
    if path.exists() or _looks_local(name):
        raise InputError(f"{what}: no model directory at {path}; pass an existing local directory or a hub id")
    if hub_offline():
        kwargs = {**kwargs, "local_files_only": True}
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{what}: could not load {name!r} from the Hugging Face hub: the hub is unreachable (offline, or "
            f"HF_HUB_OFFLINE is set) and it is not in the local cache, or no such model exists; download it where "
            f"there is a network (e.g. `hf download {name} --local-dir DIR`) and pass the local directory instead"
        ) from exc


@dataclass(frozen=True)
class TextEncoderBundle:
    """A loaded text encoder: the BERT model (eval mode), its tokenizer, and where they came from."""

    model: Any  # transformers BertModel
    tokenizer: Any  # transformers tokenizer (fast when available)
    source: str

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def load_text_encoder(name_or_path: str | Path = PAPER_TEXT_MODEL) -> TextEncoderBundle:
    """Load a BERT model and its tokenizer from a local directory or a hub id (eager attention, for export)."""
    transformers = lazy_import("transformers", purpose="loading the BERT text encoder")
    model = load_pretrained("text encoder", name_or_path, transformers.AutoModel.from_pretrained,
                            attn_implementation="eager")
    tokenizer = load_pretrained("text tokenizer", name_or_path, transformers.AutoTokenizer.from_pretrained)
    if getattr(model.config, "model_type", None) != "bert":
        log.warning("text encoder %s is a %r model, not BERT; the paper uses a Chinese BERT-base",
                    name_or_path, getattr(model.config, "model_type", "?"))
    log.info("text encoder loaded from %s (hidden size %d)", name_or_path, model.config.hidden_size)
    return TextEncoderBundle(model.eval(), tokenizer, str(name_or_path))


class TextEncoder(nn.Module):
    """Export wrapper: (input_ids, attention_mask, token_type_ids) int64 (B, 80) -> last hidden state (B, 80, hidden)."""

    def __init__(self, bert: Any) -> None:
        super().__init__()
        self.bert = bert

    def forward(
        self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor", token_type_ids: "torch.Tensor"
    ) -> "torch.Tensor":
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        return_dict=True)
        return out.last_hidden_state
