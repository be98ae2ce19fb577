"""The ``starter-zh`` profile's text path: EmotionTalk transcripts, a character vocabulary and a small character-level
BERT: the data and the tokenizer (no torch here; the network is :mod:`edge.starter.zh_model`).

No Chinese BERT ships in a registry package, so the encoder is trained here: a BERT of a few layers over single
characters (the vocabulary is the train split's characters, saved as a ``tokenizers`` ``tokenizer.json`` with
[PAD] [UNK] [CLS] [SEP] [MASK]), pre-trained as a masked language model on the train split's transcripts, then
fine-tuned with :class:`edge.starter.text_model.TextEmotionHead` on EmotionTalk's text labels.  Like the paper's
BERT path it gives a (tokens, dim) sequence per utterance; the run path tokenises with the ``tokenizers`` package
and :mod:`edge.features.text_pre` and zeroes the features past [SEP].

Transcript markup (:func:`clean_transcript`): EmotionTalk marks overlapping speech ``[over/]...[/over]``, cut-off
turns ``[interrupted]`` and non-verbal sounds ``[laughing]``, ``[Sobbing]``, ``[crying]``, ``[screaming]``.  The
words inside an overlap were spoken, so they stay; every tag goes, because the live loop's text comes from speech
recognition, which writes words and never these tags: a head that learned from ``[Sobbing]`` would lean on a cue
it never sees at run time (and one that describes the voice, not the words).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from edge._lazy import lazy_import
from edge.errors import DataError

#: Special tokens, in id order: [PAD] is 0 as in BERT vocabularies, [MASK] for pre-training.
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Ids per utterance: [CLS] + 62 characters + [SEP] (95 % of EmotionTalk's cleaned transcripts are shorter).
ZH_TEXT_LENGTH = 64
#: Tag openings and closings of EmotionTalk's markup: ``[over/``, ``[/over``, ``[interrupted``, ``[[/over`` ...
_TAG = re.compile(r"\[+/?[A-Za-z]+/?")
_SPACES = re.compile(r"\s+")


def clean_transcript(text: str) -> str:
    """An EmotionTalk transcript without its markup: tags removed, the words inside ``[over/]...[/over]`` kept.

    Malformed tags in the source (``[over/你]``, ``[over[/over]``, ``[/over/]``) lose their tag part and keep
    their words, like the well-formed ones.
    """
    text = _TAG.sub("", text)
    text = text.replace("[", "").replace("]", "")
    return _SPACES.sub(" ", text).strip()


def strip_punctuation(text: str) -> str:
    """``text`` without punctuation and symbols (Unicode categories P* and S*): what a speech recogniser that
    writes no punctuation gives.  Used as a training augmentation and for the no-punctuation measurement."""
    return "".join(c for c in text if not unicodedata.category(c).startswith(("P", "S"))).strip()


# ---------------------------------------------------------------------------------------------------- tokenizer


def _normalizer(tokenizers: Any) -> Any:
    """NFKC (full-width letters, digits and punctuation become their ASCII forms, as speech recognisers write
    either), BERT's clean-up (control characters, whitespace) and lower case."""
    n = tokenizers.normalizers
    return n.Sequence([n.NFKC(), n.BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False,
                                                  lowercase=True)])


def normalize(text: str) -> str:
    """``text`` as the tokenizer's normalizer sees it (for counting the vocabulary)."""
    tokenizers = lazy_import("tokenizers", purpose="the Chinese character tokenizer")
    return _normalizer(tokenizers).normalize_str(text)


def char_vocabulary(texts: Iterable[str], *, min_count: int = 2) -> list[str]:
    """The specials, then every character (after :func:`normalize`, spaces excepted) seen at least ``min_count``
    times in ``texts``, most frequent first (ties in code-point order)."""
    counts = Counter(c for text in texts for c in normalize(text) if not c.isspace())
    chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
    if not chars:
        raise DataError(f"no character occurs {min_count} times in the texts; pass more texts or a lower min_count")
    return [*SPECIALS, *chars]


def build_char_tokenizer(vocabulary: Sequence[str]) -> Any:
    """A ``tokenizers.Tokenizer`` that splits a text into single characters (whitespace dropped) and maps each to
    its id in ``vocabulary`` ([UNK] for the rest); ``encode(text)`` adds [CLS] ... [SEP] (the run path asks for
    ``add_special_tokens=False`` and lays them out itself).  No padding, no truncation."""
    tokenizers = lazy_import("tokenizers", purpose="the Chinese character tokenizer")
    missing = [s for s in SPECIALS if s not in vocabulary]
    if missing or list(vocabulary[: len(SPECIALS)]) != list(SPECIALS):
        raise DataError(f"the vocabulary must start with {', '.join(SPECIALS)}")
    vocab = {token: i for i, token in enumerate(vocabulary)}
    if len(vocab) != len(vocabulary):
        raise DataError("the vocabulary lists a token twice")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = _normalizer(tokenizers)
    pre = tokenizers.pre_tokenizers
    tok.pre_tokenizer = pre.Sequence([pre.WhitespaceSplit(), pre.Split(tokenizers.Regex("."), behavior="isolated")])
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = tokenizers.decoders.Fuse()
    tok.no_padding()
    tok.no_truncation()
    return tok


def load_char_tokenizer(path: str | Path) -> Any:
    tokenizers = lazy_import("tokenizers", purpose="the Chinese character tokenizer")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no tokenizer.json; train the encoder first (scripts/train_starter_zh_text.py)")
    return tokenizers.Tokenizer.from_file(str(path))
