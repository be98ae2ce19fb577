"""The seven emotion classes and the mappings from every label vocabulary the project meets.

One canonical order everywhere (models, feature stores, reports, estimates):
anger, disgust, fear, happiness, neutral, sadness, surprise.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from edge.errors import InputError

CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
NUM_CLASSES = len(CLASSES)
INDEX: Mapping[str, int] = {name: i for i, name in enumerate(CLASSES)}

#: Names used by each vocabulary, mapped to the canonical class name.  Keys are matched
#: case-insensitively after stripping surrounding white space.
VOCABULARIES: Mapping[str, Mapping[str, str]] = {
    "canonical": {name: name for name in CLASSES},
    # CHERMA's Chinese label names (the authors' order is the canonical order).
    "cherma": {
        "愤怒": "anger", "厌恶": "disgust", "恐惧": "fear", "高兴": "happiness",
        "平静": "neutral", "悲伤": "sadness", "惊奇": "surprise",
    },
    # The authors' public code: anger, disgust, fear, happy, neutral, sad, surprise.
    "authors": {
        "anger": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
        "neutral": "neutral", "sad": "sadness", "surprise": "surprise",
    },
    # EmotionTalk already uses the canonical English names.
    "emotiontalk": {name: name for name in CLASSES},
    # RAVDESS: names from its labels table and the emotion codes 01-08 of its file names; calm -> neutral.
    "ravdess": {
        "neutral": "neutral", "calm": "neutral", "happiness": "happiness", "happy": "happiness",
        "sadness": "sadness", "sad": "sadness", "anger": "anger", "angry": "anger",
        "fear": "fear", "fearful": "fear", "disgust": "disgust", "surprise": "surprise",
        "surprised": "surprise",
        "01": "neutral", "02": "neutral", "03": "happiness", "04": "sadness",
        "05": "anger", "06": "fear", "07": "disgust", "08": "surprise",
    },
    # FER2013: the original integer codes 0..6 and the names of its CSV / our npz files.
    "fer2013": {
        "0": "anger", "1": "disgust", "2": "fear", "3": "happiness", "4": "sadness", "5": "surprise",
        "6": "neutral", "angry": "anger", "anger": "anger", "disgust": "disgust", "fear": "fear",
        "happy": "happiness", "happiness": "happiness", "sad": "sadness", "sadness": "sadness",
        "surprise": "surprise", "neutral": "neutral",
    },
    # GoEmotions with the Ekman mapping: labels.txt order anger, disgust, fear, joy, neutral, sadness, surprise.
    "goemotions": {
        "anger": "anger", "disgust": "disgust", "fear": "fear", "joy": "happiness", "neutral": "neutral",
        "sadness": "sadness", "surprise": "surprise",
        "0": "anger", "1": "disgust", "2": "fear", "3": "happiness", "4": "neutral", "5": "sadness",
        "6": "surprise",
    },
    # CREMA-D three-letter codes (no surprise class in CREMA-D).
    "crema-d": {
        "ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happiness", "NEU": "neutral", "SAD": "sadness",
    },
}

_FOLDED = {vocab: {k.strip().casefold(): v for k, v in table.items()} for vocab, table in VOCABULARIES.items()}


def to_index(label: str | int, vocabulary: str = "canonical", *, source: str = "") -> int:
    """Map one label of ``vocabulary`` to its canonical class index.

    ``source`` names where the label came from (a file, a row) for the error message.
    """
    if vocabulary not in _FOLDED:
        raise InputError(
            f"unknown label vocabulary {vocabulary!r}; available vocabularies: {', '.join(VOCABULARIES)}"
        )
    key = str(label).strip().casefold()
    try:
        return INDEX[_FOLDED[vocabulary][key]]
    except KeyError:
        where = f" in {source}" if source else ""
        known = ", ".join(sorted(VOCABULARIES[vocabulary]))
        raise InputError(
            f"unknown {vocabulary} label {label!r}{where}; expected one of: {known}"
        ) from None


def to_indices(labels: Iterable[str | int], vocabulary: str = "canonical", *, source: str = "") -> list[int]:
    return [to_index(label, vocabulary, source=source) for label in labels]


def name(index: int) -> str:
    if not 0 <= int(index) < NUM_CLASSES:
        raise InputError(f"class index {index} is out of range; expected 0..{NUM_CLASSES - 1}")
    return CLASSES[int(index)]
