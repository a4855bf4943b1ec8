"""A small stand-in for `MultitaskBert` (notebook 05_heads) with the same contract, for the SMART and PCGrad
tests and benchmarks: `bert`, `shared_parameters()`, `head_parameters()`, `task_embeds`, `task_forward`,
`output_kind`. 'sst' is single-sentence (5 classes), 'para' a cross-encoder pair (one logit), 'sts' a siamese
pair (a regression score), 'nli' a cross-encoder pair (3 classes)."""
from __future__ import annotations
import torch
import torch.nn as nn
import torch.nn.functional as F
from minbert_nb.bert import BertModel, mean_pool

KINDS = {"sst": ("multiclass", 5), "para": ("binary", 1), "sts": ("regression", 1), "nli": ("multiclass", 3)}
SIAMESE = {"sts"}


class StandIn(nn.Module):
    "BERT + one linear head per task, on mean-pooled tokens."
    def __init__(self, bert: BertModel, tasks=("sst", "para", "sts")):
        super().__init__()
        self.bert, self.tasks = bert, tuple(tasks)
        C = bert.config.hidden_size
        self.heads = nn.ModuleDict({t: nn.Linear(3 * C if t in SIAMESE else C, KINDS[t][1]) for t in self.tasks})

    def shared_parameters(self): return list(self.bert.parameters())
    def head_parameters(self): return list(self.heads.parameters())
    def output_kind(self, task): return KINDS[task][0]

    def task_embeds(self, task, batch):
        we = self.bert.embeddings.word_embeddings
        return [we(batch["input_ids_a"]), we(batch["input_ids_b"])] if task in SIAMESE else [we(batch["input_ids"])]

    def _encode(self, ids, am, tt, emb):
        return mean_pool(self.bert(ids, am, tt, inputs_embeds=emb).last_hidden_state, am)   # (B, C)

    def task_forward(self, task, batch, inputs_embeds=None):
        e = inputs_embeds if inputs_embeds is not None else [None, None]
        if task in SIAMESE:
            u = self._encode(batch["input_ids_a"], batch["attention_mask_a"], None, e[0])
            v = self._encode(batch["input_ids_b"], batch["attention_mask_b"], None, e[1])
            out = self.heads[task](torch.cat([u, v, (u - v).abs()], -1))                   # (B, 1)
        else:
            out = self.heads[task](self._encode(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), e[0]))
        return out if KINDS[task][1] > 1 else out.squeeze(-1)                                  # (B, K) or (B,)

    def task_loss(self, task, out, batch):
        "Cross-entropy, BCE on the logit, or squared error (MultitaskBert's argument order)."
        kind, y = KINDS[task][0], batch["labels"]
        if kind == "multiclass": return F.cross_entropy(out, y)
        if kind == "binary": return F.binary_cross_entropy_with_logits(out, y.float())
        return F.mse_loss(out, y.float())


def random_batch(task: str, B: int = 4, T: int = 12, vocab: int = 1000, generator=None) -> dict:
    "A batch of random token ids in the stand-in's layout (the last quarter of each row is padding)."
    g = generator
    ids = lambda: torch.randint(1, vocab, (B, T), generator=g)
    am = torch.ones(B, T, dtype=torch.long); am[:, T - T // 4:] = 0
    kind, K = KINDS[task]
    y = (torch.randint(0, K, (B,), generator=g) if kind == "multiclass" else
         torch.randint(0, 2, (B,), generator=g).float() if kind == "binary" else 5 * torch.rand(B, generator=g))
    if task in SIAMESE:
        return {"input_ids_a": ids() * am, "attention_mask_a": am, "input_ids_b": ids() * am, "attention_mask_b": am, "labels": y}
    tt = torch.zeros(B, T, dtype=torch.long); tt[:, T // 2:] = 1
    return {"input_ids": ids() * am, "attention_mask": am, "token_type_ids": tt, "labels": y}


def multitask_batch(model, task: str, generator=None) -> dict:
    "A random batch in the layout `MultitaskBert` expects for `task` (siamese pairs get `_a`/`_b` keys)."
    b = random_batch("sst", generator=generator)
    if model.cfg.pair_mode(task) == "siamese":
        b2 = random_batch("sst", generator=generator)
        b = {"input_ids_a": b["input_ids"], "attention_mask_a": b["attention_mask"],
             "input_ids_b": b2["input_ids"], "attention_mask_b": b2["attention_mask"]}
    b["labels"] = random_batch(task, generator=generator)["labels"]
    return b
