"""hfopt.data: loading local files of every format, the checks that name file and flag, label spaces, and
tokenization for each task."""

import json

import pytest
from transformers import BertTokenizer

from hfopt.args import DataArguments
from hfopt.data import (
    LabelSpace,
    check_texts,
    detect_classification_columns,
    detect_text_column,
    drop_blank_texts,
    load_raw_datasets,
    tokenize_for_classification,
)
from hfopt.errors import InputError
from tests.testing_utils import write_csv


def load(**kw):
    return load_raw_datasets(DataArguments(**kw))


def test_csv_with_string_labels_maps_to_ids_and_carves_validation(tmp_path):
    rows = [(f"text {i}", ["neg", "pos", "neutral"][i % 3]) for i in range(60)]
    train = write_csv(tmp_path / "train.csv", rows, header=("text", "sentiment"))
    raw, sources = load_raw_datasets(
        DataArguments(train_file=str(train), label_column_name="sentiment", validation_split_percentage=20), seed=0
    )
    assert len(raw["train"]) == 48 and len(raw["validation"]) == 12
    assert sources.of("validation").startswith("the 20% of train_file")
    columns = detect_classification_columns(raw, DataArguments(label_column_name="sentiment"), sources)
    assert columns.text == ["text"] and columns.label == "sentiment"
    labels = LabelSpace.from_datasets(raw, columns.label, sources)
    assert labels.names == ["neg", "neutral", "pos"]
    assert labels.model_kwargs()["id2label"] == {0: "neg", 1: "neutral", 2: "pos"}


def test_sentence_pair_columns_are_detected_from_jsonl(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "\n".join(json.dumps({"sentence1": f"a{i}", "sentence2": f"b{i}", "label": i % 2}) for i in range(10))
    )
    raw, sources = load(train_file=str(path), validation_file=str(path))
    assert detect_classification_columns(raw, DataArguments(), sources).text == ["sentence1", "sentence2"]


def test_tsv_is_read_like_glue(tmp_path):
    # SST-2 style: tabs, a trailing space, and quote characters that are part of the text
    path = tmp_path / "sst.tsv"
    path.write_text("sentence\tlabel\nit 's a \"great\" film \t1\n`` dull '' and flat \t0\n", encoding="utf-8")
    raw, _ = load(train_file=str(path), validation_file=str(path))
    assert raw["train"]["sentence"] == ['it \'s a "great" film ', "`` dull '' and flat "]
    assert raw["train"]["label"] == [1, 0]


@pytest.mark.parametrize("extension", [".parquet", ".arrow"])
def test_parquet_and_arrow_files_load_like_csv(tmp_path, extension):
    from datasets import Dataset

    rows = {"sentence": ["good film", "bad film", "fine"], "label": [1, 0, 1]}
    path = tmp_path / f"train{extension}"
    dataset = Dataset.from_dict(rows)
    if extension == ".parquet":
        dataset.to_parquet(str(path))
    else:
        import pyarrow as pa

        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, dataset.data.schema) as writer:
            writer.write_table(dataset.data.table)
    raw, sources = load(train_file=str(path), validation_file=str(path))
    assert raw["train"]["sentence"] == rows["sentence"]
    assert detect_classification_columns(raw, DataArguments(), sources).label == "label"
    with pytest.raises(InputError, match=f"train{extension}.*has no column 'stars'"):
        detect_classification_columns(raw, DataArguments(label_column_name="stars"), sources)


def test_tokenization_truncates_without_padding_and_maps_labels(tmp_path):
    tokenizer = BertTokenizer(
        vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])}
    )
    train = write_csv(tmp_path / "t.csv", [("a b a b a b a b", "yes"), ("a", "no")])
    raw, sources = load(train_file=str(train), validation_file=str(train))
    columns = detect_classification_columns(raw, DataArguments(), sources)
    labels = LabelSpace.from_datasets(raw, columns.label, sources)
    tokenized = tokenize_for_classification(raw, tokenizer, columns, labels, max_seq_length=5)
    lengths = [len(ids) for ids in tokenized["train"]["input_ids"]]
    assert lengths == [5, 3]  # truncated to 5, the short one not padded
    assert tokenized["train"]["labels"] == [1, 0]


def _one_object(p):
    (p / "one.json").write_text(json.dumps({"sentence": "a b", "label": 1}))
    return {"train_file": str(p / "one.json")}


def _columns_object(p):
    (p / "cols.json").write_text(json.dumps({"sentence": ["a", "b"], "label": [1, 0]}, indent=2))
    return {"train_file": str(p / "cols.json")}


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: {"train_file": str(p / "missing.csv")}, r"^train_file .*missing\.csv does not exist$"),
        (lambda p: {"train_file": str(write_csv(p / "t.xlsx", [("a", 1)]))}, r"unsupported type '\.xlsx'"),
        (lambda p: {"train_file": str(write_csv(p / "e.csv", []))}, r"train_file .*e\.csv is empty"),
        (lambda p: {"train_file": str(p)}, r"train_file .* is a folder, not a file"),
        (
            lambda p: (p / "z.jsonl").write_text("") and {} or {"train_file": str(p / "z.jsonl")},
            r"train_file .*z\.jsonl is empty",
        ),
        (
            lambda p: (p / "w.jsonl").write_text("\n \n") and {} or {"train_file": str(p / "w.jsonl")},
            r"train_file .*w\.jsonl is empty",
        ),
        (_one_object, r"train_file .*one\.json holds one JSON object \(keys: sentence, label\), not rows"),
        (_columns_object, r"cols\.json holds one JSON object .*JSON lines"),
        (
            lambda p: {"train_file": str(write_csv(p / "one_row.csv", [("a", 1)]))},
            r"one_row\.csv has 1 row\(s\): too few to hold out 10% for validation; give --validation_file",
        ),
        (
            lambda p: {
                "train_file": str(write_csv(p / "t.csv", [("a", 1)] * 5)),
                "validation_file": str(write_csv(p / "v.csv", [("a", 1)])),
                "max_train_samples": 10,
                "max_eval_samples": 1,
            },
            None,
        ),
        (lambda p: {}, "no data given"),
    ],
)
def test_bad_files_fail_with_a_message_naming_flag_and_file(tmp_path, setup, message):
    if message is None:  # a valid case among the bad ones: limits larger than the file are fine
        raw, _ = load(**setup(tmp_path))
        assert len(raw["train"]) == 5
        return
    with pytest.raises(InputError, match=message):
        load(**setup(tmp_path))


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("sentence,label\nok,1\ncaf\xe9,0\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.csv is not UTF-8 text \(first bad byte on line 3\)"):
        load(train_file=str(path))


def test_missing_columns_list_the_columns_found(tmp_path):
    train = write_csv(tmp_path / "t.csv", [("x", 1)] * 4, header=("review", "stars"))
    raw, sources = load(train_file=str(train), validation_file=str(train))
    with pytest.raises(InputError, match=r"no text column found among review, stars"):
        detect_classification_columns(raw, DataArguments(), sources)
    with pytest.raises(InputError, match=r"no label column found among review, stars"):
        detect_classification_columns(raw, DataArguments(text_column_names=["review"]), sources)
    with pytest.raises(InputError, match=r"has no column 'label'; columns found: review, stars"):
        detect_classification_columns(
            raw, DataArguments(text_column_names=["review"], label_column_name="label"), sources
        )


def test_labels_outside_num_labels_are_an_error(tmp_path):
    train = write_csv(tmp_path / "t.csv", [("a", 0), ("b", 1), ("c", 2)])
    raw, sources = load(train_file=str(train), validation_file=str(train))
    assert LabelSpace.from_datasets(raw, "label", sources).num_labels == 3
    assert LabelSpace.from_datasets(raw, "label", sources, num_labels=5).num_labels == 5
    with pytest.raises(InputError, match=r"label 2 at row index 2 .* outside the 2 classes \(0\.\.1\)"):
        LabelSpace.from_datasets(raw, "label", sources, num_labels=2)


def test_validation_labels_unseen_in_train_are_an_error(tmp_path):
    train = write_csv(tmp_path / "t.csv", [("a", "pos"), ("b", "neg")])
    dev = write_csv(tmp_path / "d.csv", [("a", "pos"), ("b", "mixed")])
    raw, sources = load(train_file=str(train), validation_file=str(dev))
    with pytest.raises(InputError, match=r"validation_file .*d\.csv: label 'mixed' at row index 1"):
        LabelSpace.from_datasets(raw, "label", sources)


def test_a_single_class_in_training_data_is_an_error_with_the_sorted_file_hint(tmp_path):
    rows = [(f"good {i}", 1) for i in range(30)] + [(f"bad {i}", 0) for i in range(30)]  # sorted by label
    train = write_csv(tmp_path / "sorted.csv", rows)
    raw, sources = load(train_file=str(train), validation_file=str(train), max_train_samples=20)
    with pytest.raises(
        InputError,
        match=r"train_file .*sorted\.csv: every training row has label 1 in column "
        r"'label'; .*at least two classes .*shuffle the file",
    ):
        LabelSpace.from_datasets(raw, "label", sources)
    raw, sources = load(train_file=str(train), validation_file=str(train))
    assert LabelSpace.from_datasets(raw, "label", sources).num_labels == 2


def test_empty_texts_are_counted_with_the_first_row(tmp_path):
    train = write_csv(tmp_path / "t.csv", [("fine", 1), ("", 0), ("ok", 1), ("  ", 0)])
    raw, sources = load(train_file=str(train), validation_file=str(train))
    with pytest.raises(InputError, match=r"2 row\(s\) with empty 'sentence', first at row index 1"):
        check_texts(raw, ["sentence"], sources)


def test_a_text_column_of_numbers_is_named(tmp_path):
    train = write_csv(tmp_path / "nums.csv", [(1, 0), (2, 1)])
    raw, sources = load(train_file=str(train), validation_file=str(train))
    with pytest.raises(InputError, match=r"train_file .*nums\.csv: column 'sentence' holds int64 values, not text"):
        check_texts(raw, ["sentence"], sources)


def test_sources_outlive_new_dataset_objects(tmp_path):
    """Filtering makes new DatasetDicts; errors still name the file (they used to say "split 'train'")."""
    path = tmp_path / "blank.jsonl"
    path.write_text('{"text": "  "}\n{"text": ""}\n')
    raw, sources = load_raw_datasets(
        DataArguments(train_file=str(path), validation_file=str(path)), extensions=(".jsonl",)
    )
    column = detect_text_column(raw, sources)
    with pytest.raises(InputError, match=r"^train_file .*blank\.jsonl holds no text in column 'text' \(only blank"):
        drop_blank_texts(raw.filter(lambda row: True), column, sources)


def test_max_samples_keep_the_first_rows(tmp_path):
    train = write_csv(tmp_path / "t.csv", [(f"s{i}", i % 2) for i in range(20)])
    raw, _ = load(train_file=str(train), validation_file=str(train), max_train_samples=5, max_eval_samples=3)
    assert raw["train"]["sentence"] == ["s0", "s1", "s2", "s3", "s4"] and len(raw["validation"]) == 3
