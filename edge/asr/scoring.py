"""Scoring transcripts fairly: text normalisation, word error rate (English) and character error rate (Mandarin).

Both the reference and the hypothesis go through the same normalisation, so a recogniser is not charged for
writing "18th" where the reference says "eighteenth", "Mr." for "mister", or traditional characters for simplified
ones:

- English (:func:`normalize_english`): lower case; "%" -> "percent"; "&" -> "and"; the titles mr / mrs / ms / dr /
  st before a name spelt out; numbers written as words (cardinals and ordinals up to the millions: "18th" ->
  "eighteenth", "1,200" -> "one thousand two hundred"; a four-digit number from 1100 to 1999 or 2010 to 2099 read
  as a year: "1984" -> "nineteen eighty four"); hyphens -> spaces; every other punctuation mark removed except
  apostrophes inside a word ("don't").
- Mandarin (:func:`normalize_chinese`): traditional characters -> simplified (OpenCC's ``t2s`` table: ``pip install
  opencc``); full-width letters and digits -> half-width; Arabic numbers read out in characters as the reference
  transcripts write them ("29" -> "二十九", "3.5" -> "三点五", "50%" -> "百分之五十", a four-digit number before 年
  digit by digit: "2012年" -> "二零一二年"); punctuation and spaces removed; Latin letters lower-cased and kept.

:func:`wer` and :func:`cer` are Levenshtein distances (substitutions + deletions + insertions) over the reference
length; :func:`edit_counts` gives the raw counts so a corpus rate is total errors / total reference units.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Sequence

from edge._lazy import lazy_import
from edge.errors import InputError

# ------------------------------------------------------------------------------------------------ English

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_TITLES = {"mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "st": "saint"}


def number_words(n: int) -> str:
    """A non-negative integer in English words: 1234 -> "one thousand two hundred thirty four"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")  # pragma: no cover


def ordinal_words(n: int) -> str:
    """18 -> "eighteenth", 21 -> "twenty first"."""
    words = number_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _year_words(n: int) -> str:
    head, tail = divmod(n, 100)
    tail_words = "hundred" if tail == 0 else ("oh " + _ONES[tail] if tail < 10 else number_words(tail))
    return f"{number_words(head)} {tail_words}"


def _english_number(match: re.Match) -> str:
    written, suffix = match.group(1), (match.group(2) or "").lower()
    digits = written.replace(",", "")
    if "." in digits:
        whole, _, frac = digits.partition(".")
        return f" {number_words(int(whole or 0))} point {' '.join(_ONES[int(d)] for d in frac)} "
    n = int(digits)
    if suffix in ("st", "nd", "rd", "th"):
        return f" {ordinal_words(n)} "
    if len(written) == 4 and (1100 <= n <= 1999 or 2010 <= n <= 2099):
        return f" {_year_words(n)} "
    return f" {number_words(n)} "


_EN_NUMBER = re.compile(r"(\d[\d,]*(?:\.\d+)?)(st|nd|rd|th)?\b", re.IGNORECASE)
_EN_TITLE = re.compile(r"\b(mrs|mr|ms|dr|st)\.?(?=\s)", re.IGNORECASE)
_EN_DROP = re.compile(r"[^\w\s']|_")


def normalize_english(text: str) -> list[str]:
    """The words of ``text`` for scoring (see the module notes)."""
    t = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    t = t.replace("%", " percent ").replace("&", " and ")
    t = _EN_TITLE.sub(lambda m: _TITLES[m.group(1).lower()], t)
    t = _EN_NUMBER.sub(_english_number, t)
    t = _EN_DROP.sub(" ", t.lower().replace("-", " "))
    return [w.strip("'") for w in t.split() if w.strip("'")]


# ------------------------------------------------------------------------------------------------ Mandarin

_ZH_DIGITS = "零一二三四五六七八九"
_ZH_UNITS = ((10**8, "亿"), (10**4, "万"), (1000, "千"), (100, "百"), (10, "十"))


def chinese_number(n: int) -> str:
    """A non-negative integer read in Chinese characters: 29 -> 二十九, 105 -> 一百零五, 12 -> 十二."""
    if n < 10:
        return _ZH_DIGITS[n]
    out = _chinese_number(n)
    return out[1:] if out.startswith("一十") else out


def _chinese_number(n: int) -> str:
    for scale, unit in _ZH_UNITS:
        if n >= scale:
            head, rest = divmod(n, scale)
            text = _chinese_number(head) + unit
            if rest:
                text += ("零" if rest < scale // 10 else "") + _chinese_number(rest)
            return text
    return _ZH_DIGITS[n]


def _zh_number(match: re.Match) -> str:
    digits, after = match.group(1), match.group(2) or ""
    if after == "年" and len(digits) == 4 and "." not in digits:
        return "".join(_ZH_DIGITS[int(d)] for d in digits) + after
    whole, _, frac = digits.partition(".")
    text = chinese_number(int(whole or 0)) + ("点" + "".join(_ZH_DIGITS[int(d)] for d in frac) if frac else "")
    if after == "%":
        return "百分之" + text
    return text + after


_ZH_NUMBER = re.compile(r"(\d+(?:\.\d+)?)(%|年)?")
_ZH_DROP = re.compile(r"[\W_]+", re.UNICODE)


@lru_cache(maxsize=1)
def _t2s():
    opencc = lazy_import("opencc", purpose="scoring Mandarin transcripts (traditional -> simplified characters)")
    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional Chinese characters -> simplified (OpenCC ``t2s``; needs ``pip install opencc``)."""
    return _t2s().convert(text)


def normalize_chinese(text: str) -> list[str]:
    """The characters of ``text`` for scoring (see the module notes); a run of Latin letters counts as one unit."""
    t = unicodedata.normalize("NFKC", text).replace(",", "")
    t = _ZH_NUMBER.sub(_zh_number, to_simplified(t))
    t = _ZH_DROP.sub(" ", t.lower())
    units: list[str] = []
    for chunk in t.split():
        units += re.findall(r"[a-z0-9]+|.", chunk)
    return units


# ------------------------------------------------------------------------------------------------ rates


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (substitutions + deletions + insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        current = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


def edit_counts(reference: str, hypothesis: str, *, language: str = "en") -> tuple[int, int]:
    """(errors, reference units): words for English (``language="en"``), characters for Mandarin (``"zh"``)."""
    normalize = {"en": normalize_english, "zh": normalize_chinese}.get(language)
    if normalize is None:
        raise InputError(f"scoring knows English ('en', word error rate) and Mandarin ('zh', character error rate), "
                         f"not {language!r}")
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        raise InputError(f"scoring needs a reference with at least one {'word' if language == 'en' else 'character'}")
    return edit_distance(ref, hyp), len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of an English hypothesis; may exceed 1 when many words are inserted."""
    errors, n = edit_counts(reference, hypothesis, language="en")
    return errors / n


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate of a Mandarin hypothesis (punctuation removed, traditional -> simplified)."""
    errors, n = edit_counts(reference, hypothesis, language="zh")
    return errors / n


__all__ = ["cer", "chinese_number", "edit_counts", "edit_distance", "normalize_chinese", "normalize_english",
           "number_words", "ordinal_words", "to_simplified", "wer"]
