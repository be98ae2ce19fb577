"""The seven classes and every label vocabulary the project meets."""

from __future__ import annotations

import csv

import pytest

from edge.errors import InputError
from edge.labels import CLASSES, VOCABULARIES, name, to_index, to_indices


def test_canonical_order():
    assert CLASSES == ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


def test_every_vocabulary_maps_onto_the_seven_classes():
    for vocab, table in VOCABULARIES.items():
        assert set(table.values()) <= set(CLASSES), vocab


@pytest.mark.parametrize("vocab,labels", [
    ("cherma", ["愤怒", "厌恶", "恐惧", "高兴", "平静", "悲伤", "惊奇"]),
    ("authors", ["anger", "disgust", "fear", "happy", "neutral", "sad", "surprise"]),
    ("goemotions", ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]),
    ("goemotions", ["0", "1", "2", "3", "4", "5", "6"]),  # labels.txt line numbers
    ("fer2013", ["0", "1", "2", "3", "6", "4", "5"]),  # FER2013 codes: 0 angry .. 6 neutral
    ("ravdess", ["05", "07", "06", "03", "01", "04", "08"]),  # RAVDESS file-name emotion codes
])
def test_vocabularies_in_canonical_order(vocab, labels):
    assert to_indices(labels, vocab) == list(range(7))


def test_special_cases():
    assert to_index("calm", "ravdess") == to_index("neutral") == to_index("02", "ravdess")
    assert to_index(" Happy ", "fer2013") == CLASSES.index("happiness")
    assert to_index("joy", "goemotions") == CLASSES.index("happiness")
    assert [to_index(c, "crema-d") for c in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")] == [0, 1, 2, 3, 4, 5]
    assert name(6) == "surprise"


def test_unknown_labels_name_the_source_and_the_choices():
    with pytest.raises(InputError, match=r"unknown cherma label '开心' in train\.json:3; expected one of: "):
        to_index("开心", "cherma", source="train.json:3")
    with pytest.raises(InputError, match="unknown label vocabulary 'iemocap'"):
        to_index("ang", "iemocap")
    with pytest.raises(InputError, match="out of range"):
        name(7)


def test_real_label_tables_map_completely(shared_data):
    with open(shared_data / "ravdess-speech" / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    indices = [to_index(r["emotion"], "ravdess", source="ravdess labels.csv") for r in rows]
    assert len(indices) == 1200 and set(indices) == set(range(7))
    for r in rows:  # the file-name code and the name column agree
        assert to_index(r["file"].split("/")[-1].split("-")[2], "ravdess") == to_index(r["emotion"], "ravdess")
    with open(shared_data / "crema-d-samples" / "labels.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            assert to_index(r["file"].split("_")[2], "crema-d") == to_index(r["emotion"])
    labels = (shared_data / "goemotions-ekman" / "labels.txt").read_text().split()
    assert [CLASSES[to_index(x, "goemotions")] for x in labels] == list(CLASSES)
