"""The ``starter-zh`` text encoder: a character-level BERT and the classifier it is fine-tuned in (build path; torch).

:func:`char_bert` makes a transformers ``BertModel`` (``BertForMaskedLM`` for pre-training) of a
:class:`CharBertConfig`'s shape; :class:`CharBertClassifier` is that BERT with
:class:`edge.starter.text_model.TextEmotionHead` on its token features, trained end to end on EmotionTalk's text
labels.  The BERT alone is what ships (exported like the paper's BERT: ``input_ids``, ``attention_mask``,
``token_type_ids`` -> ``hidden``); LFMIM reads its token features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from edge._lazy import lazy_import
from edge.errors import CheckpointError
from edge.starter.text_model import HeadConfig, TextEmotionHead
from edge.starter.zh_text import SPECIALS, ZH_TEXT_LENGTH

torch = lazy_import("torch", purpose="the starter-zh text encoder")
nn = torch.nn

#: Checkpoint variant of a fine-tuned classifier (BERT + head).
CLASSIFIER_VARIANT = "starter-zh-text-classifier"


@dataclass(frozen=True)
class CharBertConfig:
    """Shape of the character-level BERT (``[text] encoder = "char-bert"`` in starter-zh)."""

    vocab_size: int
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    ff: int = 512
    tokens: int = ZH_TEXT_LENGTH
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def char_bert(config: CharBertConfig, *, masked_lm: bool = False) -> Any:
    """A transformers ``BertModel`` (or ``BertForMaskedLM``) of ``config``'s shape, random weights, eager attention
    (exportable to ONNX as the paper's BERT is)."""
    transformers = lazy_import("transformers", purpose="the character-level BERT")
    bert_config = transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden, num_hidden_layers=config.layers,
        num_attention_heads=config.heads, intermediate_size=config.ff, max_position_embeddings=config.tokens,
        type_vocab_size=1, hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout,
        pad_token_id=SPECIALS.index("[PAD]"))
    bert_config._attn_implementation = "eager"
    if masked_lm:
        return transformers.BertForMaskedLM(bert_config)
    return transformers.BertModel(bert_config, add_pooling_layer=False)


def mask_tokens(input_ids: Any, attention_mask: Any, *, vocab_size: int, probability: float = 0.15,
                generator: Any = None) -> tuple[Any, Any]:
    """BERT's masking for pre-training: ``probability`` of the characters ([UNK] included, [CLS] [SEP] [PAD] not)
    are chosen; of those 80 % become [MASK], 10 % a random character, 10 % stay.  Returns (inputs, labels), labels
    -100 where nothing is predicted."""
    special = len(SPECIALS)
    real = (attention_mask > 0) & ((input_ids >= special) | (input_ids == SPECIALS.index("[UNK]")))
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & real
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[chosen & (roll < 0.8)] = SPECIALS.index("[MASK]")
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = torch.randint(special, vocab_size, input_ids.shape, generator=generator)[swap]
    return inputs, labels


class CharBertClassifier(nn.Module):
    """(input_ids, attention_mask) (B, T) -> class logits (B, 7): the BERT's token features through the head."""

    def __init__(self, config: CharBertConfig, head: HeadConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.bert = char_bert(config)
        self.head = TextEmotionHead(head or HeadConfig(dim=config.hidden))

    def features(self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=torch.zeros_like(input_ids)).last_hidden_state

    def forward(self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
        return self.head(self.features(input_ids, attention_mask), attention_mask)


def save_classifier(model: CharBertClassifier, path: str | Path, *, meta: Mapping[str, Any] | None = None) -> Path:
    from edge.model.checkpoint import save_checkpoint

    config = {"encoder": model.config.to_dict(), "head": asdict(model.head.config)}
    return save_checkpoint(path, model.state_dict(), config, variant=CLASSIFIER_VARIANT, meta=meta)


def load_classifier(path: str | Path) -> CharBertClassifier:
    from edge.model.checkpoint import load_checkpoint, load_state_into

    ckpt = load_checkpoint(path)
    if ckpt.variant != CLASSIFIER_VARIANT:
        raise CheckpointError(f"{path}: a {ckpt.variant!r} checkpoint, not a starter-zh text classifier")
    model = CharBertClassifier(CharBertConfig(**ckpt.config["encoder"]), HeadConfig(**ckpt.config["head"]))
    load_state_into(model, ckpt.state, source=str(path))
    return model.eval()
