"""Test helpers: random batches in the layout `MultitaskBert` expects (`random_batch`, `multitask_batch`), and the tiny
CPU training run that the scale-out test compares (`sample_run`, `max_param_diff`)."""
from __future__ import annotations
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from minbert_nb.heads import HeadsConfig

LABELS = {"sst": lambda B, g: torch.randint(0, 5, (B,), generator=g),           # SST-5 class
          "para": lambda B, g: torch.randint(0, 2, (B,), generator=g).float(),  # duplicate or not
          "sts": lambda B, g: 5 * torch.rand(B, generator=g),                   # similarity score in [0, 5]
          "nli": lambda B, g: torch.randint(0, 3, (B,), generator=g)}           # entailment / neutral / contradiction


def random_batch(task: str, B: int = 4, T: int = 12, vocab: int = 1000, generator=None, pair_mode: str | None = None) -> dict:
    """A batch of random token ids for `task` (the last quarter of each row is padding). `pair_mode` (default: that of
    `HeadsConfig()`) 'siamese' gives `_a`/`_b` keys; otherwise `input_ids`, `attention_mask`, `token_type_ids`.
    Labels: sst int 0–4, para float 0/1, sts float in [0, 5], nli int 0–2."""
    g = generator
    mode = pair_mode or HeadsConfig().pair_mode(task)
    am = torch.ones(B, T, dtype=torch.long); am[:, T - T // 4:] = 0
    ids = lambda: torch.randint(1, vocab, (B, T), generator=g) * am
    y = LABELS[task](B, g)
    if mode == "siamese":
        return {"input_ids_a": ids(), "attention_mask_a": am, "input_ids_b": ids(), "attention_mask_b": am, "labels": y}
    tt = torch.zeros(B, T, dtype=torch.long)
    if mode == "cross": tt[:, T // 2:] = 1                        # a second segment
    return {"input_ids": ids(), "attention_mask": am, "token_type_ids": tt * am, "labels": y}


def multitask_batch(model, task: str, generator=None, **kw) -> dict:
    "A random batch in the layout `model` (a `MultitaskBert`) expects for `task`."
    return random_batch(task, generator=generator, pair_mode=model.cfg.pair_mode(task), **kw)


def sample_run(out_dir, batch_size: int = 4, # per process
               max_steps: int = 3, make_strategy=None, # model → Strategy; None: the weighted sum
               sizes: dict[str, int] | None = None, # keep the first n training examples of a task
               seed: int = 0):
    "A tiny BERT without dropout, trained on the CPU on the bundled sample; returns the `TrainResult`."
    from minbert_nb.bert import BertModel, load_tokenizer
    from minbert_nb.config import preset, seed_everything
    from minbert_nb.data import load_split
    from minbert_nb.batches import TaskDataset
    from minbert_nb.heads import MultitaskBert
    from minbert_nb.train import TrainConfig, Trainer
    tok, hc = load_tokenizer(), HeadsConfig(dropout=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                              # "this is the small bundled sample"
        rows = {t: load_split(t, "train", "sample")[:(sizes or {}).get(t)] for t in hc.tasks}
    sets = {t: TaskDataset(r, tok, t, hc.pair_mode(t), max_len=32) for t, r in rows.items()}
    seed_everything(seed)
    model = MultitaskBert(BertModel(preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)), hc)
    cfg = TrainConfig(max_steps=max_steps, batch_size=batch_size, max_len=32, lr_encoder=1e-3, lr_heads=1e-3, warmup_frac=0.0,
                      log_every=1, checkpoint_every=max_steps, seed=seed, device="cpu")
    strategy = make_strategy(model) if make_strategy else None
    return Trainer(model, cfg, sets, out_dir, strategy=strategy, progress=False).fit()


def max_param_diff(a, b) -> float:
    "max |Δ| over every tensor of two run folders' resumable checkpoints (`OUT/last/model.safetensors`)."
    sa, sb = (load_file(str(Path(x)/"last"/"model.safetensors")) for x in (a, b))
    assert sa.keys() == sb.keys(), f"{a} and {b} hold different tensors"
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)
