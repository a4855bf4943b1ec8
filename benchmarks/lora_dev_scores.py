"""Dev scores of LoRA against full fine-tuning, same data, same steps, same seed.

    python benchmarks/lora_dev_scores.py --data-dir ../shared/data            # MiniLM, 200 steps, CPU
    python benchmarks/lora_dev_scores.py --data-dir DIR --steps 2000 --device cuda

A self-contained stand-in for the quick config until `minbert train --lora` exists: the offline
MiniLM encoder, three small heads (SST 5-way on the mean-pooled sentence; paraphrase and similarity
on the mean-pooled cross-encoded pair), each step one batch of every task with the losses summed,
AdamW with warm-up then linear decay. Then SST accuracy, paraphrase accuracy, STS Pearson and the
CS224N overall score on the full dev files. Full fine-tuning trains every encoder weight at
`--lr-full`; LoRA (r, alpha, targets as given) trains A and B at `--lr-lora`; the heads train at
`--lr-head` in both.
"""
from __future__ import annotations
import argparse, csv, json, time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from minbert_nb.config import seed_everything
from minbert_nb.bert import BertModel, load_tokenizer, mean_pool
from minbert_nb.optim import AdamW, get_scheduler
from minbert_nb.lora import LoRAConfig, add_lora, trainable_parameter_count

TASKS = {  # file stem, text columns, label column
    "sst": ("sst/ids-sst", ("sentence",), "sentiment"),
    "para": ("quora/quora", ("sentence1", "sentence2"), "is_duplicate"),
    "sts": ("sts/sts", ("sentence1", "sentence2"), "similarity"),
}


def read_rows(path: Path, text_cols, label_col):
    "Rows (texts, label) of a CS224N tab-separated file; rows with a missing field or label are skipped and counted."
    rows, bad = [], 0
    with open(path, encoding="utf-8", newline="") as f:
        for rec in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            try:
                texts = tuple(rec[c].strip() for c in text_cols)
                if not all(texts): raise ValueError
                rows.append((texts, float(rec[label_col])))
            except (KeyError, ValueError, TypeError, AttributeError):
                bad += 1
    return rows, bad


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.bert = BertModel.from_pretrained()
        H = self.bert.config.hidden_size
        self.heads = nn.ModuleDict(dict(sst=nn.Linear(H, 5), para=nn.Linear(H, 1), sts=nn.Linear(H, 1)))

    def forward(self, task, b):
        h = self.bert(b["input_ids"], b["attention_mask"], b.get("token_type_ids")).last_hidden_state   # (B, T, C)
        out = self.heads[task](mean_pool(h, b["attention_mask"]))
        return out if task == "sst" else out.squeeze(-1)


def loss_fn(task, out, y):
    if task == "sst": return F.cross_entropy(out, y.long())
    if task == "para": return F.binary_cross_entropy_with_logits(out, y)
    return F.mse_loss(out, y / 5)


def encode(tok, rows, max_len, device):
    cols = [list(c) for c in zip(*[r[0] for r in rows])]
    b = tok(*cols, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return {k: v.to(device) for k, v in b.items()}, torch.tensor([r[1] for r in rows], device=device)


@torch.no_grad()
def evaluate(model, tok, dev, args, device):
    model.eval(); res = {}
    for task, rows in dev.items():
        preds, golds = [], []
        for i in range(0, len(rows), 64):
            b, y = encode(tok, rows[i:i + 64], args.max_len, device)
            out = model(task, b)
            preds.append(out.argmax(-1).float() if task == "sst" else (out > 0).float() if task == "para" else out); golds.append(y)
        p, g = torch.cat(preds), torch.cat(golds)
        res[task] = (p == g).float().mean().item() if task != "sts" else torch.corrcoef(torch.stack([p, g]))[0, 1].item()
    res["overall"] = (res["sst"] + res["para"] + (res["sts"] + 1) / 2) / 3
    model.train()
    return res


def run(mode: str, train, dev, args, device) -> dict:
    seed_everything(args.seed)
    model = Model()
    if mode == "lora": add_lora(model, **vars(LoRAConfig.parse(args.lora)))
    model.to(device).train()
    heads = list(model.heads.parameters())
    enc = [p for p in model.bert.parameters() if p.requires_grad]
    opt = AdamW([dict(params=enc, lr=args.lr_full if mode == "full" else args.lr_lora), dict(params=heads, lr=args.lr_head)], weight_decay=0.01)
    sched = get_scheduler(opt, warmup_steps=args.steps // 10, total_steps=args.steps)
    tok = load_tokenizer()
    g = torch.Generator().manual_seed(args.seed)          # the same batches for both modes
    order = {t: torch.randperm(len(r), generator=g) for t, r in train.items()}
    t0, losses = time.time(), []
    for step in range(args.steps):
        total = 0.0
        for task, rows in train.items():
            idx = order[task][(step * args.batch) % len(rows):][:args.batch]
            b, y = encode(tok, [rows[i] for i in idx], args.max_len, device)
            total = total + loss_fn(task, model(task, b), y)
        opt.zero_grad(set_to_none=True); total.backward(); opt.step(); sched.step(); losses.append(total.item())
        if (step + 1) % 50 == 0: print(f"{mode} step {step + 1}: loss {sum(losses[-50:]) / 50:.3f} ({time.time() - t0:.0f}s)", flush=True)
    secs = time.time() - t0
    tr, tot = trainable_parameter_count(model)
    res = dict(mode=mode, train_s=secs, trainable=tr, total=tot, final_loss=sum(losses[-20:]) / len(losses[-20:]),
               dev=evaluate(model, tok, dev, args, device))
    print(json.dumps(res), flush=True)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16, help="examples per task per step")
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--lora", default="r=8,alpha=16,targets=query+value")
    p.add_argument("--lr-full", type=float, default=5e-5)
    p.add_argument("--lr-lora", type=float, default=1e-3)
    p.add_argument("--lr-head", type=float, default=1e-3)
    p.add_argument("--modes", default="full,lora")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    d, device = Path(args.data_dir), torch.device(args.device)
    train, dev = {}, {}
    for task, (stem, cols, lab) in TASKS.items():
        train[task], bad_t = read_rows(d / f"{stem}-train.csv", cols, lab)
        dev[task], bad_d = read_rows(d / f"{stem}-dev.csv", cols, lab)
        print(f"{task}: {len(train[task]):,} train ({bad_t} malformed rows skipped), {len(dev[task]):,} dev ({bad_d} skipped)")
    res = [run(m, train, dev, args, device) for m in args.modes.split(",")]
    print(f"\nMiniLM, {args.steps} steps × {args.batch} examples per task, max_len {args.max_len}, LoRA {args.lora}, "
          f"lr full {args.lr_full} / LoRA {args.lr_lora} / heads {args.lr_head}, seed {args.seed}, device {args.device}\n")
    print("| mode | trainable | SST acc | Quora acc | STS r | overall | train time (s) |\n|---|---|---|---|---|---|---|")
    for r in res:
        print(f"| {r['mode']} | {r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f}%) | {r['dev']['sst']:.3f} | {r['dev']['para']:.3f} | "
              f"{r['dev']['sts']:.3f} | {r['dev']['overall']:.3f} | {r['train_s']:.0f} |")
    if args.json: Path(args.json).write_text(json.dumps(dict(args=vars(args), results=res), indent=2))


if __name__ == "__main__":
    main()
