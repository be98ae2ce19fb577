"""Text preprocessing in plain numpy (run path; never imports torch).

The paper feeds BERT ``[CLS] + 78 word pieces + [SEP]`` = 80 ids.  This module turns a tokenizer's word-piece ids
into that fixed-length layout with its attention mask, in the order transformers' ``padding="max_length"`` uses:
``[CLS] t1 ... tn [SEP] [PAD] ...`` with mask 1 on the real ids and 0 on the padding, and token types all 0 (one
segment).  Any tokenizer works: the ``tokenizers`` package's ``Tokenizer`` or a transformers fast tokenizer, neither
of which needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from edge.errors import InputError

#: Ids per text: [CLS] + 78 word pieces + [SEP] (the paper's text sequence length).
TEXT_LENGTH = 80
#: Word pieces kept between [CLS] and [SEP].
MAX_WORD_PIECES = TEXT_LENGTH - 2


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the special tokens of a BERT vocabulary."""

    cls: int
    sep: int
    pad: int = 0

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "SpecialIds":
        """Read [CLS]/[SEP]/[PAD] ids from a transformers tokenizer or a ``tokenizers.Tokenizer``."""
        if getattr(tokenizer, "cls_token_id", None) is not None:
            pad = tokenizer.pad_token_id
            return cls(int(tokenizer.cls_token_id), int(tokenizer.sep_token_id), int(pad) if pad is not None else 0)
        if hasattr(tokenizer, "token_to_id"):
            ids = [tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")]
            if ids[0] is None or ids[1] is None:
                raise InputError("the tokenizer's vocabulary has no [CLS] or [SEP] token; is it a BERT tokenizer?")
            return cls(int(ids[0]), int(ids[1]), int(ids[2]) if ids[2] is not None else 0)
        raise InputError(
            f"cannot read special token ids from a {type(tokenizer).__name__}; pass a transformers tokenizer "
            "or a tokenizers.Tokenizer"
        )


def pad_ids(
    ids: Sequence[int], special: SpecialIds, *, length: int = TEXT_LENGTH, has_special: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Word-piece ids -> (input_ids, attention_mask), each int64 (length,): ``[CLS] ids[:length-2] [SEP] [PAD]...``.

    ``has_special`` says the ids already start with [CLS] and/or end with [SEP] (as a tokenizer's default
    ``encode`` returns them); those are removed first, so the text is truncated before the [SEP], never after it.
    """
    if length < 2:
        raise InputError(f"length must leave room for [CLS] and [SEP], got {length}")
    body = np.asarray(list(ids), dtype=np.int64).reshape(-1)
    if has_special:
        if body.size and body[0] == special.cls:
            body = body[1:]
        if body.size and body[-1] == special.sep:
            body = body[:-1]
    body = body[: length - 2]
    input_ids = np.full(length, special.pad, dtype=np.int64)
    input_ids[0] = special.cls
    input_ids[1 : 1 + body.size] = body
    input_ids[1 + body.size] = special.sep
    mask = np.zeros(length, dtype=np.int64)
    mask[: body.size + 2] = 1
    return input_ids, mask


def batch_ids(
    batch: Iterable[Sequence[int]], special: SpecialIds, *, length: int = TEXT_LENGTH, has_special: bool = False
) -> dict[str, np.ndarray]:
    """Several texts' ids -> the encoder's feeds: ``input_ids``, ``attention_mask``, ``token_type_ids``, int64 (B, length)."""
    rows = [pad_ids(ids, special, length=length, has_special=has_special) for ids in batch]
    if not rows:
        raise InputError("no texts to encode: the batch is empty")
    input_ids = np.stack([r[0] for r in rows])
    mask = np.stack([r[1] for r in rows])
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}


def encode_texts(tokenizer: Any, texts: Sequence[str], *, length: int = TEXT_LENGTH) -> dict[str, np.ndarray]:
    """Tokenise ``texts`` with ``tokenizer`` (transformers or ``tokenizers``) and lay them out as :func:`batch_ids` does."""
    if isinstance(texts, str):
        raise InputError("encode_texts takes a sequence of texts, got one string; wrap it in a list")
    special = SpecialIds.from_tokenizer(tokenizer)
    pieces = []
    for text in texts:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        pieces.append(encoded.ids if hasattr(encoded, "ids") else encoded)
    return batch_ids(pieces, special, length=length)
