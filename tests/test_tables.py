"""The CSV label-table reader: quoting, Chinese text, split selection and every error case."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import DataError, InputError
from edge.labels import INDEX
from edge.train.tables import LabelTable, read_label_table

HEADER = "id,split,text,label_text,label_audio,label_vision,label_multimodal\n"
ROWS = (
    'u1,train,"你好，世界, and a comma",neutral,anger,anger,anger\n'
    'u2,val,"他说：""走吧""，然后走了。",happiness,Happiness , neutral,happiness\n'
    'u3,train,"两行\n文本",fear,sadness,surprise,disgust\n'
)


def write(tmp_path, text, name="labels.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_reads_quoted_chinese_text(tmp_path):
    path = write(tmp_path, HEADER + ROWS)
    table = read_label_table(path)
    assert isinstance(table, LabelTable)
    assert len(table) == 3
    assert table.ids == ["u1", "u2", "u3"]
    assert table.splits == ["train", "val", "train"]
    assert table.texts == ["你好，世界, and a comma", '他说："走吧"，然后走了。', "两行\n文本"]
    assert table.labels.dtype == np.int64 and table.labels.shape == (3, 4)
    expected = [
        ["neutral", "anger", "anger", "anger"],
        ["happiness", "happiness", "neutral", "happiness"],  # case and spaces are normalised
        ["fear", "sadness", "surprise", "disgust"],
    ]
    np.testing.assert_array_equal(table.labels, [[INDEX[n] for n in row] for row in expected])
    assert table.split_counts() == {"train": 2, "val": 1}
    assert table.columns == ("label_text", "label_audio", "label_vision", "label_multimodal")


def test_split_selection_and_column_order(tmp_path):
    path = write(tmp_path, HEADER + ROWS)
    train = read_label_table(path, split="train")
    assert train.ids == ["u1", "u3"]
    both = read_label_table(path, split=["val", "train"])
    assert both.ids == ["u1", "u2", "u3"]
    mv = read_label_table(path, columns=("label_multimodal", "label_vision"), split="val")
    np.testing.assert_array_equal(mv.labels, [[INDEX["happiness"], INDEX["neutral"]]])


def test_bom_and_other_vocabulary(tmp_path):
    text = "id,label_text,label_audio,label_vision,label_multimodal\na,愤怒,平静,高兴,悲伤\n"
    path = write(tmp_path, text, encoding="utf-8-sig")
    table = read_label_table(path, vocabulary="cherma")
    np.testing.assert_array_equal(table.labels, [[INDEX["anger"], INDEX["neutral"], INDEX["happiness"], INDEX["sadness"]]])
    assert table.splits == [""] and table.texts == [""]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found; expected a CSV label table with columns id, label_text"):
        read_label_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="not a file"):
        read_label_table(tmp_path)


def test_missing_columns(tmp_path):
    path = write(tmp_path, "id,split,label_text,label_audio\nx,train,anger,anger\n")
    with pytest.raises(
        DataError,
        match=r"missing column\(s\) label_vision, label_multimodal; the file has columns id, split, label_text, label_audio",
    ):
        read_label_table(path)


def test_unknown_label_names_file_and_line(tmp_path):
    # Row u3's quoted text spans lines 4-5 of the file, so row u4 with the bad label is on physical line 6.
    path = write(tmp_path, HEADER + ROWS + "u4,train,好,neutral,joyful,neutral,neutral\n")
    with pytest.raises(DataError, match=r"unknown canonical label 'joyful' in .*labels\.csv:6 column label_audio; expected one of"):
        read_label_table(path)


def test_empty_label_cell(tmp_path):
    path = write(tmp_path, HEADER + "u1,train,x,,anger,anger,anger\n")
    with pytest.raises(DataError, match=r"unknown canonical label '' in .*labels\.csv:2 column label_text"):
        read_label_table(path)


def test_unknown_split_lists_existing(tmp_path):
    path = write(tmp_path, HEADER + ROWS)
    with pytest.raises(DataError, match=r"no rows in split test; the splits in the file are: train \(2 rows\), val \(1 rows\)"):
        read_label_table(path, split="test")


def test_split_without_split_column(tmp_path):
    path = write(tmp_path, "id,label_text,label_audio,label_vision,label_multimodal\na,anger,anger,anger,anger\n")
    with pytest.raises(DataError, match="cannot select split train: the file has no 'split' column"):
        read_label_table(path, split="train")


def test_empty_files(tmp_path):
    with pytest.raises(DataError, match="the file is empty; expected a CSV header"):
        read_label_table(write(tmp_path, ""))
    with pytest.raises(DataError, match="no data rows; expected at least one row below the header"):
        read_label_table(write(tmp_path, HEADER, name="header_only.csv"))


def test_wrong_field_count(tmp_path):
    path = write(tmp_path, HEADER + "u1,train,x,anger,anger\n")
    with pytest.raises(DataError, match=r"labels\.csv:2: expected 7 comma-separated fields as in the header, got 5"):
        read_label_table(path)
    path = write(tmp_path, HEADER + "u1,train,x,y,anger,anger,anger,anger\n", name="extra.csv")
    with pytest.raises(DataError, match=r"extra\.csv:2: expected 7 comma-separated fields as in the header, got 8"):
        read_label_table(path)


def test_not_utf8(tmp_path):
    path = write(tmp_path, HEADER + "u1,train,你好,anger,anger,anger,anger\n", encoding="gbk")
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_label_table(path)


def test_bad_arguments(tmp_path):
    path = write(tmp_path, HEADER + ROWS)
    with pytest.raises(InputError, match="unknown label vocabulary 'klingon'"):
        read_label_table(path, vocabulary="klingon")
    with pytest.raises(InputError, match="columns must name at least one"):
        read_label_table(path, columns=())
    with pytest.raises(InputError, match="non-empty list of split names"):
        read_label_table(path, split=[])
