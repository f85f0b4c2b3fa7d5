import json

import pytest
from transformers import BertTokenizer

from hfopt.args import DataArguments
from hfopt.data import (
    LabelSpace,
    check_texts,
    detect_classification_columns,
    load_raw_datasets,
    tokenize_for_classification,
)
from hfopt.errors import InputError

from conftest import write_csv


def data_args(**kw):
    return DataArguments(**kw)


def test_csv_with_string_labels_maps_to_ids_and_carves_validation(tmp_path):
    rows = [(f"text {i}", ["neg", "pos", "neutral"][i % 3]) for i in range(60)]
    train = write_csv(tmp_path / "train.csv", rows, header=("text", "sentiment"))
    raw = load_raw_datasets(data_args(train_file=str(train), label_column_name="sentiment",
                                      validation_split_percentage=20), seed=0)
    assert len(raw["train"]) == 48 and len(raw["validation"]) == 12
    columns = detect_classification_columns(raw, data_args(label_column_name="sentiment"))
    assert columns.text == ["text"] and columns.label == "sentiment"
    labels = LabelSpace.from_datasets(raw, columns.label)
    assert labels.names == ["neg", "neutral", "pos"]
    assert labels.model_kwargs()["id2label"] == {0: "neg", 1: "neutral", 2: "pos"}


def test_sentence_pair_columns_are_detected_from_jsonl(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps({"sentence1": f"a{i}", "sentence2": f"b{i}", "label": i % 2})
                              for i in range(10)))
    raw = load_raw_datasets(data_args(train_file=str(path), validation_file=str(path)))
    assert detect_classification_columns(raw, data_args()).text == ["sentence1", "sentence2"]


def test_tsv_is_read_like_glue(tmp_path):
    # SST-2 style: tabs, a trailing space, and quote characters that are part of the text
    path = tmp_path / "sst.tsv"
    path.write_text('sentence\tlabel\nit \'s a "great" film \t1\n`` dull \'\' and flat \t0\n', encoding="utf-8")
    raw = load_raw_datasets(data_args(train_file=str(path), validation_file=str(path)))
    assert raw["train"]["sentence"] == ['it \'s a "great" film ', "`` dull '' and flat "]
    assert raw["train"]["label"] == [1, 0]


def test_tokenization_truncates_without_padding_and_maps_labels(tmp_path):
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])})
    train = write_csv(tmp_path / "t.csv", [("a b a b a b a b", "yes"), ("a", "no")])
    raw = load_raw_datasets(data_args(train_file=str(train), validation_file=str(train)))
    columns = detect_classification_columns(raw, data_args())
    labels = LabelSpace.from_datasets(raw, columns.label)
    tokenized = tokenize_for_classification(raw, tokenizer, columns, labels, max_seq_length=5)
    lengths = [len(ids) for ids in tokenized["train"]["input_ids"]]
    assert lengths == [5, 3]  # truncated to 5, the short one not padded
    assert tokenized["train"]["labels"] == [1, 0]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: {"train_file": str(p / "missing.csv")}, r"train_file .*missing\.csv does not exist"),
        (lambda p: {"train_file": str(write_csv(p / "t.parquet", [("a", 1)]))}, r"unsupported type '\.parquet'"),
        (lambda p: {"train_file": str(write_csv(p / "e.csv", []))}, r"train_file .*e\.csv is empty"),
        (lambda p: {}, "no data given"),
    ],
)
def test_bad_files_fail_with_clear_message(tmp_path, setup, message):
    with pytest.raises(InputError, match=message):
        load_raw_datasets(data_args(**setup(tmp_path)))


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("sentence,label\nok,1\ncaf\xe9,0\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.csv is not UTF-8 text \(first bad byte on line 3\)"):
        load_raw_datasets(data_args(train_file=str(path)))


def test_missing_columns_list_the_columns_found(tmp_path):
    train = write_csv(tmp_path / "t.csv", [("x", 1)] * 4, header=("review", "stars"))
    raw = load_raw_datasets(data_args(train_file=str(train), validation_file=str(train)))
    with pytest.raises(InputError, match=r"no text column found among review, stars"):
        detect_classification_columns(raw, data_args())
    with pytest.raises(InputError, match=r"no label column found among review, stars"):
        detect_classification_columns(raw, data_args(text_column_names=["review"]))
    with pytest.raises(InputError, match=r"has no column 'label'; columns found: review, stars"):
        detect_classification_columns(raw, data_args(text_column_names=["review"], label_column_name="label"))


def test_labels_outside_num_labels_are_an_error(tmp_path):
    train = write_csv(tmp_path / "t.csv", [("a", 0), ("b", 1), ("c", 2)])
    raw = load_raw_datasets(data_args(train_file=str(train), validation_file=str(train)))
    assert LabelSpace.from_datasets(raw, "label").num_labels == 3
    assert LabelSpace.from_datasets(raw, "label", num_labels=5).num_labels == 5
    with pytest.raises(InputError, match=r"label 2 at row index 2 .* outside the 2 classes \(0\.\.1\)"):
        LabelSpace.from_datasets(raw, "label", num_labels=2)


def test_validation_labels_unseen_in_train_are_an_error(tmp_path):
    train = write_csv(tmp_path / "t.csv", [("a", "pos"), ("b", "neg")])
    dev = write_csv(tmp_path / "d.csv", [("a", "pos"), ("b", "mixed")])
    raw = load_raw_datasets(data_args(train_file=str(train), validation_file=str(dev)))
    with pytest.raises(InputError, match=r"validation_file .*d\.csv: label 'mixed' at row index 1"):
        LabelSpace.from_datasets(raw, "label")


def test_empty_texts_are_counted_with_the_first_row(tmp_path):
    train = write_csv(tmp_path / "t.csv", [("fine", 1), ("", 0), ("ok", 1), ("  ", 0)])
    raw = load_raw_datasets(data_args(train_file=str(train), validation_file=str(train)))
    with pytest.raises(InputError, match=r"2 row\(s\) with empty 'sentence', first at row index 1"):
        check_texts(raw, ["sentence"])


def test_max_samples_keep_the_first_rows(tmp_path):
    train = write_csv(tmp_path / "t.csv", [(f"s{i}", i % 2) for i in range(20)])
    raw = load_raw_datasets(data_args(train_file=str(train), validation_file=str(train),
                                      max_train_samples=5, max_eval_samples=3))
    assert raw["train"]["sentence"] == ["s0", "s1", "s2", "s3", "s4"] and len(raw["validation"]) == 3
