"Readers, validation, Hub mapping, sample, tokenization cache, collate, bucketing and multitask schedules (04_data)."
import math, warnings
from collections import Counter
from itertools import chain

import numpy as np
import pytest
import torch

from minbert_nb.data import TASKS, DataError, DataWarning, Example, ReadReport, read_task_file, load_split, parse_label, nli_split, in_dev_slice, sample_dir, task_file, HUB_SOURCES, map_hub_row, hub_examples, hub_split, check_data
from minbert_nb.batches import TaskDataset, tokenizer_hash, collate, to_device, RandomBatchSampler, LengthBucketSampler, make_loader, padding_stats, MultitaskSchedule, schedule_shares, plot_schedule

H_PARA = "\tid\tsentence1\tsentence2\tis_duplicate\n"

def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p

def read_quiet(*a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return read_task_file(*a, **k)

@pytest.fixture(scope="module")
def tok():
    from minbert_nb.bert import load_tokenizer
    return load_tokenizer(None)

# ---------------------------------------------------------------- real files

@pytest.mark.parametrize("rel,task,n_rows,n_ok", [
    ("sst/ids-sst-train.csv", "sst", 8544, 8544), ("sst/ids-sst-dev.csv", "sst", 1101, 1101),
    ("quora/quora-train.csv", "para", 14214, 14212), ("quora/quora-dev.csv", "para", 3000, 3000),
    ("sts/sts-train.csv", "sts", 6040, 6040), ("sts/sts-dev.csv", "sts", 863, 863),
    ("nli/sick.tsv", "nli", 9927, 9927)])
def test_real_row_counts(data_dir, rel, task, n_rows, n_ok):
    exs, rep = read_quiet(data_dir / rel, task)
    assert (rep.n_rows, rep.n_ok, len(exs)) == (n_rows, n_ok, n_ok)
    assert len({e.id for e in exs}) == n_ok
    spec_lo, spec_hi = {"sst": (0, 4), "para": (0, 1), "sts": (0, 5), "nli": (0, 2)}[task]
    assert all(spec_lo <= e.label <= spec_hi and e.text_a and (e.text_b is None) == (task == "sst") for e in exs)

def test_real_label_types(data_dir):
    sst, _ = read_quiet(data_dir / "sst/ids-sst-dev.csv", "sst")
    para, _ = read_quiet(data_dir / "quora/quora-dev.csv", "para")
    nli, _ = read_quiet(data_dir / "nli/sick.tsv", "nli")
    assert {type(e.label) for e in sst} == {int} and {e.label for e in sst} == {0, 1, 2, 3, 4}
    assert {e.label for e in para} == {0.0, 1.0} and {type(e.label) for e in para} == {float}
    assert Counter(e.label for e in nli) == {1: 5611, 0: 2857, 2: 1459}   # neutral, entailment, contradiction

def test_quora_train_bad_rows(data_dir):
    with pytest.warns(DataWarning) as w:
        exs, rep = read_task_file(data_dir / "quora/quora-train.csv", "para")
    assert len([x for x in w if issubclass(x.category, DataWarning)]) == 1
    msg = str(w[0].message)
    assert "kept 14212 of 14214 rows, skipped 2" in msg and "line 9624" in msg and "line 13428" in msg
    assert rep.skipped == [(9624, "missing label 'is_duplicate'; sentence2 has an unbalanced quote"),
                           (13428, "empty sentence2; missing label 'is_duplicate'; sentence1 has an unbalanced quote")]
    assert "ad118c967d683c93883bf072d" not in {e.id for e in exs}
    with pytest.raises(DataError, match=r"quora-train\.csv:9624: missing label 'is_duplicate'"):
        read_task_file(data_dir / "quora/quora-train.csv", "para", on_bad="raise")

def test_real_load_split(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        got = {(t, s): load_split(t, s, data_dir) for t in TASKS for s in ("train", "dev")}
    assert {k: len(v) for k, v in got.items()} == {
        ("sst", "train"): 8544, ("sst", "dev"): 1101, ("para", "train"): 14212, ("para", "dev"): 3000,
        ("sts", "train"): 6040, ("sts", "dev"): 863, ("nli", "train"): 8964, ("nli", "dev"): 963}
    tr, dv = got["nli", "train"], got["nli", "dev"]
    assert not {e.text_a for e in tr} & {e.text_a for e in dv}            # a premise stays on one side
    assert {e.id for e in tr} | {e.id for e in dv} == {e.id for e in read_quiet(data_dir / "nli/sick.tsv", "nli")[0]}
    assert set(Counter(e.label for e in dv)) == {0, 1, 2}

def test_check_data(data_dir, tmp_path):
    reps = check_data(data_dir)
    assert [(r.path.split("/")[-1], r.n_rows, r.n_ok) for r in reps] == [
        ("ids-sst-train.csv", 8544, 8544), ("ids-sst-dev.csv", 1101, 1101), ("quora-train.csv", 14214, 14212),
        ("quora-dev.csv", 3000, 3000), ("sts-train.csv", 6040, 6040), ("sts-dev.csv", 863, 863), ("sick.tsv", 9927, 9927)]
    assert [len(r.skipped) for r in check_data("sample", ["nli", "sst"])] == [0, 0, 0]
    with pytest.raises(FileNotFoundError, match="looked for"): check_data(tmp_path)

def test_flat_cs224n_layout(data_dir, tmp_path):
    (tmp_path / "ids-sst-dev.csv").write_bytes((data_dir / "sst/ids-sst-dev.csv").read_bytes())
    assert task_file("sst", "dev", tmp_path) == tmp_path / "ids-sst-dev.csv"
    assert len(load_split("sst", "dev", tmp_path)) == 1101

def test_nli_split_is_order_free():
    exs = [Example(str(i), f"premise {i % 250}", f"h {i}", i % 3) for i in range(500)]
    dev = nli_split(exs, "dev")
    assert 0 < len(dev) < 120 and nli_split(exs[::-1], "dev") == dev[::-1]
    assert len(dev) + len(nli_split(exs, "train")) == 500
    assert in_dev_slice("x", seed=1) == in_dev_slice("x", seed=1)

# ---------------------------------------------------------------- bad input, case by case

def test_malformed_rows_skipped_with_lines(tmp_path):
    p = write(tmp_path, "q.csv", H_PARA + "0\ta\tQ?\tQ!\t1.0\n"
              + '1\tb\t"""Q?"\t\t\n'                 # the real quora defect: stray quote, no label
              + '2\tc\t"Q?\tQ!\t0.0\n'               # a quote that never closes
              + "3\td\tQ?\tQ!\t0.0\n")
    with pytest.warns(DataWarning, match="skipped 2"):
        exs, rep = read_task_file(p, "para")
    assert [e.id for e in exs] == ["a", "d"]                      # the open quote did not swallow line 5
    assert rep.skipped == [(3, "empty sentence2; missing label 'is_duplicate'; sentence1 has an unbalanced quote"),
                           (4, "unbalanced quote: a quoted field does not close on this line")]
    assert rep.n_rows == 4 and rep.n_ok == 2

def test_quoted_fields_are_unquoted(tmp_path):
    p = write(tmp_path, "q.csv", H_PARA + '0\ta\t"He said ""hi"""\tQ!\t1.0\n1\tb\tsay "hi\tQ!\t0.0\n')
    exs, _ = read_task_file(p, "para")
    assert [e.text_a for e in exs] == ['He said "hi"', 'say "hi']

def test_malformed_quoting(tmp_path):
    p = write(tmp_path, "q.csv", H_PARA + '0\ta\t"Q"x\tQ!\t1.0\n')
    with pytest.raises(DataError, match=r"q\.csv:2: malformed quoting"):
        read_task_file(p, "para", on_bad="raise")

@pytest.mark.parametrize("row,why", [
    ("0\ta\t \tQ!\t1.0", "empty sentence1"), ("0\ta\tQ?\t\t1.0", "empty sentence2"), ("0\t \tQ?\tQ!\t1.0", "empty id"),
    ("0\ta\tQ?\tQ!\t", "missing label 'is_duplicate'"), ("0\ta\tQ?\tQ!\t2.0", "outside 0–1"),
    ("0\ta\tQ?\tQ!\t0.5", "not a whole number"), ("0\ta\tQ?\tQ!\tnan", "is NaN"), ("0\ta\tQ?\tQ!\tyes", "not a number"),
    ("0\ta\tQ?\tQ!", "expected 5 tab-separated fields, found 4"), ("0\ta\tQ?\tQ!\t1\textra", "found 6")])
def test_bad_row_reasons(tmp_path, row, why):
    p = write(tmp_path, "q.csv", H_PARA + row + "\n1\tz\tQ?\tQ!\t1.0\n")
    with pytest.warns(DataWarning):
        exs, rep = read_task_file(p, "para")
    assert [e.id for e in exs] == ["z"] and rep.skipped[0][0] == 2 and why in rep.skipped[0][1]
    with pytest.raises(DataError, match=r"q\.csv:2: "):
        read_task_file(p, "para", on_bad="raise")

@pytest.mark.parametrize("task,header,row,why", [
    ("sst", "\tid\tsentence\tsentiment", "0\ta\tgood\t5", "outside 0–4"),
    ("sst", "\tid\tsentence\tsentiment", "0\ta\tgood\t-1", "outside 0–4"),
    ("sst", "\tid\tsentence\tsentiment", "0\ta\tgood\t2.5", "not a whole number"),
    ("sts", "\tid\tsentence1\tsentence2\tsimilarity", "0\ta\tx\ty\t5.2", "outside 0–5"),
    ("sts", "\tid\tsentence1\tsentence2\tsimilarity", "0\ta\tx\ty\tNaN", "is NaN"),
    ("sts", "\tid\tsentence1\tsentence2\tsimilarity", "0\ta\tx\ty\tinf", "outside 0–5"),
    ("nli", "pair_id\tsentence1\tsentence2\tlabel\trelatedness", "1\tx\ty\tunsure\t3.0", "entailment/neutral/contradiction"),
    ("nli", "pair_id\tsentence1\tsentence2\tlabel\trelatedness", "1\tx\ty\t3\t3.0", "outside 0–2")])
def test_labels_out_of_range(tmp_path, task, header, row, why):
    "The only row is bad: the file has no usable example, and the error names the line and why."
    p = write(tmp_path, "f.tsv", header + "\n" + row + "\n")
    with pytest.raises(DataError) as e: read_quiet(p, task)
    assert "f.tsv: no usable examples: all 1 rows are malformed" in str(e.value) and "line 2: " in str(e.value) and why in str(e.value)

def test_non_utf8_bytes(tmp_path):
    p = write(tmp_path, "l1.csv", H_PARA.encode() + b"0\ta\tQ?\tQ!\t1.0\n" + "1\tb\tNa\xefve?\tQ!\t0.0\n".encode("latin-1"))
    exs, rep = read_quiet(p, "para")
    assert [e.id for e in exs] == ["a"] and rep.skipped == [(3, "bytes that are not UTF-8 (0xef at character 7)")]
    with pytest.raises(DataError, match=r"l1\.csv:3: bytes that are not UTF-8"):
        read_task_file(p, "para", on_bad="raise")
    bad_header = write(tmp_path, "h.csv", "\tid\tsentence\tsenti\xe9ment\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"h\.csv:1: header: bytes that are not UTF-8"):
        read_task_file(bad_header, "sst")

def test_missing_columns(tmp_path):
    p = write(tmp_path, "s.csv", "\tid\ttext\tsentiment\n0\ta\tok\t1\n")
    with pytest.raises(DataError, match=r"s\.csv:1: missing column\(s\) \['sentence'\]: a sst file needs tab-separated columns \['id', 'sentence', 'sentiment'\]"):
        read_task_file(p, "sst")
    p = write(tmp_path, "n.tsv", "sentence1\tsentence2\tlabel\nx\ty\tneutral\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['pair_id'\]"):
        read_task_file(p, "nli")

@pytest.mark.parametrize("sep,name", [(",", "comma"), (";", "semicolon")])
def test_wrong_delimiter(tmp_path, sep, name):
    p = write(tmp_path, "c.csv", sep.join(["", "id", "sentence", "sentiment"]) + "\n" + sep.join(["0", "a", "ok", "1"]) + "\n")
    with pytest.raises(DataError, match=rf"c\.csv:1: expected tab-separated columns .* no tab \(it looks {name}-separated\)"):
        read_task_file(p, "sst")

def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"): read_task_file(tmp_path / "nope.csv", "sst")
    with pytest.raises(FileNotFoundError, match="not a file"): read_task_file(tmp_path, "sst")
    with pytest.raises(FileNotFoundError, match="no such data folder"): load_split("sst", "train", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="looked for quora/quora-dev.csv, quora-dev.csv"): load_split("para", "dev", tmp_path)

def test_unknown_task_and_arguments(tmp_path):
    p = write(tmp_path, "s.csv", "\tid\tsentence\tsentiment\n0\ta\tok\t1\n")
    with pytest.raises(DataError, match="unknown task 'sentiment'; tasks are sst, para, sts, nli"): read_task_file(p, "sentiment")
    with pytest.raises(DataError, match="tasks are sst, para, sts, nli"): load_split("qqp", "train")
    with pytest.raises(DataError, match="on_bad must be 'skip' or 'raise'"): read_task_file(p, "sst", on_bad="ignore")
    with pytest.raises(DataError, match="split must be 'train' or 'dev'"): load_split("sst", "validation")

def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(DataError, match=r"e\.csv: empty file"): read_task_file(write(tmp_path, "e.csv", ""), "sst")
    with pytest.raises(DataError, match=r"h\.csv: no usable examples: a header but no rows"):
        read_task_file(write(tmp_path, "h.csv", "\tid\tsentence\tsentiment\n"), "sst")

def test_unlabelled_test_files(tmp_path):
    sst = write(tmp_path, "ids-sst-test-student.csv", "\tid\tsentence\n0\tt1\t A film .\n1\tt2\t Another .\n")
    exs, rep = read_task_file(sst, "sst", labelled=False)
    assert exs == [Example("t1", "A film .", None, None), Example("t2", "Another .", None, None)]
    sts = write(tmp_path, "sts-test-student.csv", "\tid\tsentence1\tsentence2\n0\tt1\ta\tb\n")
    assert read_task_file(sts, "sts", labelled=False)[0] == [Example("t1", "a", "b", None)]
    with pytest.raises(DataError, match=r"missing column\(s\) \['sentiment'\]"): read_task_file(sst, "sst")

def test_crlf_bom_blank_lines(tmp_path):
    p = write(tmp_path, "w.csv", "\ufeff\tid\tsentence\tsentiment\r\n0\ta\t ok \r\n".replace(" ok \r\n", " ok \t2\r\n") + "\r\n1\tb\tfine\t4\r\n\r\n")
    exs, rep = read_task_file(p, "sst")
    assert [(e.id, e.text_a, e.label) for e in exs] == [("a", "ok", 2), ("b", "fine", 4)] and rep.n_rows == 2

def test_summary_lists_first_lines():
    rep = ReadReport("f.csv", 10, 5, [(i, "bad") for i in range(2, 7)])
    assert rep.summary() == "f.csv: kept 5 of 10 rows, skipped 5 (line 2: bad; line 3: bad; line 4: bad; and 2 more)"

# ---------------------------------------------------------------- Hugging Face datasets (offline)

def test_hub_column_mapping():
    import datasets as hfds
    sst5 = hfds.Dataset.from_dict({"text": ["great .", "awful ."], "label": [4, 0], "label_text": ["very positive", "very negative"]})
    qqp = hfds.Dataset.from_dict({"question1": ["A?", "B?"], "question2": ["A!", "C?"], "label": [1, 0], "idx": [10, 11]})
    stsb = hfds.Dataset.from_dict({"sentence1": ["x", "y"], "sentence2": ["x.", "z"], "label": [5.0, 0.25], "idx": [0, 1]})
    snli = hfds.Dataset.from_dict({"premise": ["P", "P", "P"], "hypothesis": ["a", "b", "c"], "label": [0, -1, 2]})
    mnli = hfds.Dataset.from_dict({"promptID": [5], "pairID": ["5n"], "premise": ["P"], "premise_binary_parse": ["( P )"],
                                   "premise_parse": ["(ROOT P)"], "hypothesis": ["H"], "hypothesis_binary_parse": ["( H )"],
                                   "hypothesis_parse": ["(ROOT H)"], "genre": ["slate"], "label": [1]})
    assert hub_examples("sst", sst5) == [Example("0", "great .", None, 4), Example("1", "awful .", None, 0)]
    assert hub_examples("para", qqp) == [Example("10", "A?", "A!", 1.0), Example("11", "B?", "C?", 0.0)]
    assert [type(e.label) for e in hub_examples("para", qqp)] == [float, float]
    assert [e.label for e in hub_examples("sts", stsb)] == [5.0, 0.25]
    with pytest.warns(DataWarning, match="dropped 1 rows without a gold label"):
        assert hub_examples("nli", snli) == [Example("0", "P", "a", 0), Example("2", "P", "c", 2)]
    assert hub_examples("nli", mnli, HUB_SOURCES["multi_nli"]) == [Example("5n", "P", "H", 1)]

def test_hub_row_errors_and_scale():
    from dataclasses import replace
    assert map_hub_row("sts", {"sentence1": "a", "sentence2": "b", "score": 0, "label": 0.84}, 3,
                       replace(HUB_SOURCES["sts"], label_scale=5.0)).label == pytest.approx(4.2)
    with pytest.raises(DataError, match=r"row 3: label similarity=6.0 is outside 0–5"):
        map_hub_row("sts", {"sentence1": "a", "sentence2": "b", "label": 6.0, "idx": 3})
    with pytest.raises(DataError, match=r"missing column\(s\) \['premise'\]"):
        map_hub_row("nli", {"sentence": "a", "hypothesis": "b", "label": 0}, 0)
    with pytest.raises(DataError, match="empty text"):
        map_hub_row("sst", {"text": "  ", "label": 1}, 0)
    with pytest.raises(DataError, match="row 0: label sentiment is NaN"):
        map_hub_row("sst", {"text": "ok", "label": float("nan")}, 0)

def test_hub_split_offline_is_a_clear_error():
    import os
    if os.environ.get("HF_HUB_OFFLINE") != "1": pytest.skip("needs HF_HUB_OFFLINE=1 to fail fast")
    with pytest.raises(DataError, match=r"could not load nyu-mll/glue/qqp \(train\) from the Hugging Face Hub.*source='sample'"):
        hub_split("para", "train")
    with pytest.raises(DataError, match="could not load stanfordnlp/snli"):
        load_split("nli", "dev", "hub")

# ---------------------------------------------------------------- bundled sample

def test_sample_loads_offline():
    sizes = {}
    for t in TASKS:
        for s in ("train", "dev"):
            with pytest.warns(DataWarning, match="small bundled sample"):
                exs = load_split(t, s)
            sizes[t, s] = len(exs)
            assert len({e.id for e in exs}) == len(exs)
            assert all((e.text_b is None) == (t == "sst") for e in exs)
    assert all(20 <= sizes[t, "train"] <= 80 and 5 <= sizes[t, "dev"] <= 20 for t in TASKS), sizes
    with pytest.warns(DataWarning):
        assert {e.label for e in load_split("sst", "train")} == {0, 1, 2, 3, 4}
        assert {e.label for e in load_split("nli", "dev")} == {0, 1, 2}
    names = sorted(p.name for p in sample_dir().iterdir())
    assert names == ["README.md", "ids-sst-dev.csv", "ids-sst-train.csv", "nli.tsv", "quora-dev.csv", "quora-train.csv", "sts-dev.csv", "sts-train.csv"]

def test_sample_is_not_copied_from_the_data(data_dir):
    real = set()
    for rel, task in [("sst/ids-sst-train.csv", "sst"), ("sst/ids-sst-dev.csv", "sst"), ("quora/quora-train.csv", "para"),
                      ("quora/quora-dev.csv", "para"), ("sts/sts-train.csv", "sts"), ("sts/sts-dev.csv", "sts"), ("nli/sick.tsv", "nli")]:
        real |= {t.lower() for e in read_quiet(data_dir / rel, task)[0] for t in (e.text_a, e.text_b) if t}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ours = {t.lower() for task in TASKS for s in ("train", "dev") for e in load_split(task, s) for t in (e.text_a, e.text_b) if t}
    assert not ours & real, sorted(ours & real)[:5]

# ---------------------------------------------------------------- tokenization and collate

@pytest.fixture(scope="module")
def para_dev():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_split("para", "dev")

def test_task_dataset_modes(tok, para_dev):
    cross, siam = TaskDataset(para_dev, tok, "para", "cross"), TaskDataset(para_dev, tok, "para", "siamese")
    for i, e in enumerate(para_dev):
        a, b = tok(e.text_a)["input_ids"], tok(e.text_b)["input_ids"]
        assert cross[i]["input_ids"].tolist() == a + b[1:] and cross[i]["token_type_ids"].tolist() == [0] * len(a) + [1] * (len(b) - 1)
        assert siam[i]["input_ids_a"].tolist() == a and siam[i]["input_ids_b"].tolist() == b
        assert cross.lengths[i] == len(a) + len(b) - 1 and siam.lengths[i] == max(len(a), len(b))
        assert cross[i]["id"] == e.id and cross[i]["label"] == e.label
    short = TaskDataset(para_dev, tok, "para", "cross", max_len=10)
    assert max(short.lengths) == 10 and short.n_at_max_len == len(para_dev)
    assert all(short[i]["input_ids"][-1] == tok.sep_token_id for i in range(len(short)))
    with pytest.raises(DataError, match="needs pair_mode 'single'"): TaskDataset([Example("a", "x", None, 1)], tok, "sst", "cross")
    with pytest.raises(DataError, match="pair_mode must be"): TaskDataset(para_dev, tok, "para", "pair")
    with pytest.raises(DataError, match="max_len must be at least 4"): TaskDataset(para_dev, tok, "para", "cross", max_len=2)

def test_token_cache(tok, para_dev, tmp_path):
    d1 = TaskDataset(para_dev, tok, "para", "siamese", cache_dir=tmp_path)
    d2 = TaskDataset(para_dev, tok, "para", "siamese", cache_dir=tmp_path)
    assert (d1.from_cache, d2.from_cache) == (False, True) and d1.cache_path == d2.cache_path
    assert d1.cache_path.suffix == ".safetensors" and not list(tmp_path.glob("*.pkl"))
    assert all((d1[i]["input_ids_b"] == d2[i]["input_ids_b"]).all() for i in range(len(d1))) and d1.lengths == d2.lengths
    # a different mode, max_len or content is a different entry
    others = [TaskDataset(para_dev, tok, "para", "cross", cache_dir=tmp_path),
              TaskDataset(para_dev, tok, "para", "siamese", max_len=12, cache_dir=tmp_path),
              TaskDataset(para_dev[:-1], tok, "para", "siamese", cache_dir=tmp_path)]
    assert [o.from_cache for o in others] == [False] * 3 and len(list(tmp_path.glob("*.safetensors"))) == 4
    # a corrupt cache is reported and rebuilt
    d1.cache_path.write_bytes(b"not a safetensors file")
    with pytest.warns(DataWarning, match="unreadable or stale token cache"):
        d3 = TaskDataset(para_dev, tok, "para", "siamese", cache_dir=tmp_path)
    assert not d3.from_cache and d3.lengths == d1.lengths
    assert TaskDataset(para_dev, tok, "para", "siamese", cache_dir=tmp_path).from_cache

def test_tokenizer_hash_depends_on_vocab_not_call_settings(tok):
    h = tokenizer_hash(tok)
    tok(["a b c"], truncation=True, max_length=3, padding="max_length")
    assert tokenizer_hash(tok) == h
    from transformers import BertTokenizerFast
    import tempfile, pathlib
    with tempfile.TemporaryDirectory() as d:
        (pathlib.Path(d) / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]))
        assert tokenizer_hash(BertTokenizerFast(vocab_file=str(pathlib.Path(d) / "vocab.txt"))) != h

def test_collate_shapes_and_padding(tok, para_dev):
    cross = TaskDataset(para_dev, tok, "para", "cross")
    items = [cross[i] for i in range(5)]
    b = collate(items, pad_id=tok.pad_token_id)
    L = [len(it["input_ids"]) for it in items]
    assert list(b) == ["input_ids", "attention_mask", "token_type_ids", "labels", "ids"]
    assert b["input_ids"].shape == b["attention_mask"].shape == b["token_type_ids"].shape == (5, max(L))
    assert all(t.dtype == torch.long for t in (b["input_ids"], b["attention_mask"], b["token_type_ids"]))
    assert b["attention_mask"].sum(1).tolist() == L
    for i, n in enumerate(L):
        assert b["input_ids"][i, :n].tolist() == items[i]["input_ids"].tolist()
        assert (b["input_ids"][i, n:] == tok.pad_token_id).all() and (b["token_type_ids"][i, n:] == 0).all()
    assert b["labels"].dtype == torch.float32 and b["ids"] == [e.id for e in para_dev[:5]]
    s = collate([TaskDataset(para_dev, tok, "para", "siamese")[i] for i in range(3)], pad_id=7)
    assert s["input_ids_a"].shape[0] == s["input_ids_b"].shape[0] == 3 and s["input_ids_a"].shape[1] != s["input_ids_b"].shape[1]
    assert (s["input_ids_b"][s["attention_mask_b"] == 0] == 7).all()
    assert collate([{"id": "x", "label": 3, "input_ids": [101, 102]}])["labels"].dtype == torch.long
    unl = collate([{"id": "x", "label": None, "input_ids": [101, 5, 102]}, {"id": "y", "label": None, "input_ids": [101, 102]}])
    assert unl["labels"] is None and unl["input_ids"].tolist() == [[101, 5, 102], [101, 102, 0]]
    with pytest.raises(DataError, match="mixes labelled and unlabelled"):
        collate([{"id": "x", "label": None, "input_ids": [1]}, {"id": "y", "label": 1, "input_ids": [1]}])
    with pytest.raises(DataError, match="empty batch"): collate([])
    moved = to_device(b, "cpu")
    assert moved["ids"] == b["ids"] and moved["input_ids"].device.type == "cpu"

def test_label_dtypes_per_task(tok):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        for task, mode, dtype in [("sst", "single", torch.long), ("para", "cross", torch.float32),
                                  ("sts", "siamese", torch.float32), ("nli", "cross", torch.long)]:
            ds = TaskDataset(load_split(task, "dev"), tok, task, mode)
            assert next(iter(make_loader(ds, 4)))["labels"].dtype == dtype

# ---------------------------------------------------------------- bucketing

@pytest.mark.parametrize("cls_kw", [dict(bucket=True, shuffle=True), dict(bucket=True, shuffle=False),
                                    dict(bucket=False, shuffle=True), dict(bucket=False, shuffle=False)])
@pytest.mark.parametrize("n,bs,drop_last", [(1003, 32, False), (1003, 32, True), (64, 8, False), (5, 8, False)])
def test_samplers_cover_every_index_once(cls_kw, n, bs, drop_last):
    lens = np.random.default_rng(n).integers(3, 90, size=n)
    smp = (LengthBucketSampler(lens, bs, cls_kw["shuffle"], 0, bucket_mult=4, drop_last=drop_last) if cls_kw["bucket"]
           else RandomBatchSampler(n, bs, cls_kw["shuffle"], 0, drop_last))
    for epoch in range(3):
        smp.set_epoch(epoch)
        batches = list(smp)
        flat = list(chain.from_iterable(batches))
        assert len(batches) == len(smp) and len(flat) == len(set(flat))
        if drop_last: assert all(len(b) == bs for b in batches) and len(flat) == n // bs * bs
        else: assert sorted(flat) == list(range(n))
        assert sum(len(b) < bs for b in batches) <= 1

def test_sampler_seeded_epochs_and_resume():
    lens = np.random.default_rng(0).integers(3, 90, size=500)
    a, b = LengthBucketSampler(lens, 16, seed=5), LengthBucketSampler(lens, 16, seed=5)
    assert list(a) == list(b) and list(a) != list(LengthBucketSampler(lens, 16, seed=6))
    a.set_epoch(1); assert list(a) != list(b)
    for cls in (lambda: LengthBucketSampler(lens, 16, seed=5), lambda: RandomBatchSampler(500, 16, seed=5)):
        full = cls(); full.set_epoch(3); want = list(full)
        run = cls(); run.set_epoch(3); it = iter(run); got = [next(it) for _ in range(7)]
        state = run.state_dict()
        assert state == {"seed": 5, "epoch": 3, "batches_done": 7}
        resumed = cls(); resumed.load_state_dict(state)
        assert got + list(resumed) == want
        resumed.set_epoch(4); assert len(list(resumed)) == len(resumed)     # the offset applies to one pass only
    with pytest.raises(DataError, match="seed 5, this sampler 0"):
        LengthBucketSampler(lens, 16).load_state_dict({"seed": 5, "epoch": 0, "batches_done": 0})

def test_unshuffled_bucket_sorts_by_length():
    lens = [5, 1, 4, 2, 3, 9]
    assert list(LengthBucketSampler(lens, 2, shuffle=False)) == [[1, 3], [4, 2], [0, 5]]
    assert list(RandomBatchSampler(6, 4, shuffle=False)) == [[0, 1, 2, 3], [4, 5]]

def test_bucketing_cuts_padding_on_real_sst(data_dir, tok):
    exs, _ = read_quiet(data_dir / "sst/ids-sst-train.csv", "sst")
    ds = TaskDataset(exs, tok, "sst", "single")
    rnd, bkt = padding_stats(ds.lengths, 32, bucket=False), padding_stats(ds.lengths, 32, bucket=True)
    assert rnd > 0.4 and bkt < 0.06, (rnd, bkt)
    # the loader's batches agree with the statistic
    pad = real = 0
    for b in make_loader(ds, 32, seed=0):
        pad += b["attention_mask"].numel(); real += int(b["attention_mask"].sum())
    assert 1 - real / pad == pytest.approx(bkt)

def test_make_loader_epochs(tok, para_dev):
    ds = TaskDataset(para_dev, tok, "para", "siamese")
    dl = make_loader(ds, 4, seed=1)
    e0 = [b["ids"] for b in dl]; dl.batch_sampler.set_epoch(1); e1 = [b["ids"] for b in dl]
    assert sorted(chain.from_iterable(e0)) == sorted(chain.from_iterable(e1)) == sorted(e.id for e in para_dev)
    assert e0 != e1 and len(dl) == math.ceil(len(ds) / 4)
    dl2 = make_loader(ds, 4, seed=1); assert [b["ids"] for b in dl2] == e0

# ---------------------------------------------------------------- multitask schedules

N = {"sst": 8544, "para": 14212, "sts": 6040, "nli": 8964}

def test_round_robin():
    s = MultitaskSchedule(N)
    assert all(s.tasks_for_step(i) == list(N) for i in range(50))
    assert s.probs() == {t: 0.25 for t in N}

def test_proportional_frequencies_match():
    s = MultitaskSchedule(N, "proportional", seed=11)
    draws = Counter(chain.from_iterable(s.tasks_for_step(i) for i in range(6000)))
    total = sum(draws.values())
    assert total == 6000 * 4
    for t, p in s.probs().items():
        assert p == pytest.approx(N[t] / sum(N.values()))
        assert draws[t] / total == pytest.approx(p, abs=0.01)

def test_annealed_frequencies_match_per_epoch():
    s = MultitaskSchedule(N, "annealed", steps_per_epoch=2000, epochs=3, seed=2)
    assert [s.alpha(e) for e in range(3)] == pytest.approx([1.0, 0.6, 0.2])
    for e in range(3):
        p = s.probs(e)
        assert sum(p.values()) == pytest.approx(1)
        w = {t: n ** s.alpha(e) for t, n in N.items()}
        assert p == pytest.approx({t: v / sum(w.values()) for t, v in w.items()})
        draws = Counter(chain.from_iterable(s.tasks_for_step(i) for i in range(e * 2000, (e + 1) * 2000)))
        for t in N: assert draws[t] / 8000 == pytest.approx(p[t], abs=0.015)
    assert s.probs(0)["para"] > s.probs(2)["para"] and s.probs(0)["sts"] < s.probs(2)["sts"]
    assert s.epoch_of(10**6) == 2 and s.probs(99) == s.probs(2)

def test_schedules_are_reproducible_from_step_alone():
    a = MultitaskSchedule(N, "annealed", steps_per_epoch=50, epochs=4, seed=7)
    fwd = [a.tasks_for_step(i) for i in range(200)]
    b = MultitaskSchedule(N, "annealed", steps_per_epoch=50, epochs=4, seed=7)
    assert [b.tasks_for_step(i) for i in reversed(range(200))][::-1] == fwd       # any order: a pure function of (seed, step)
    assert [MultitaskSchedule(N, "annealed", steps_per_epoch=50, epochs=4, seed=8).tasks_for_step(i) for i in range(200)] != fwd

def test_schedule_errors():
    with pytest.raises(DataError, match="round_robin, proportional or annealed"): MultitaskSchedule(N, "uniform")
    with pytest.raises(DataError, match="needs steps_per_epoch"): MultitaskSchedule(N, "annealed", epochs=3)
    with pytest.raises(DataError, match="positive counts"): MultitaskSchedule({"sst": 0})
    with pytest.raises(DataError, match="positive counts"): MultitaskSchedule({})
    with pytest.raises(DataError, match="step must be >= 0"): MultitaskSchedule(N, "proportional").tasks_for_step(-1)

def test_plot_schedule_data():
    s = MultitaskSchedule(N, "annealed", steps_per_epoch=300, epochs=3, seed=0)
    x, shares = schedule_shares(s, 900, window=100)
    assert len(x) == 9 and np.allclose(sum(shares.values()), 1)
    fig = plot_schedule(s, 900, window=100)
    lines = fig.axes[0].lines
    assert len(lines) == 8 and [l.get_label() for l in lines[:4]] == list(N)
    assert np.allclose(lines[1].get_ydata(), shares["para"])
    assert lines[5].get_ydata()[0] == pytest.approx(s.probs(0)["para"]) and lines[5].get_ydata()[-1] == pytest.approx(s.probs(2)["para"])
    import matplotlib.pyplot as plt; plt.close(fig)
