"Further pretraining (07_pretrain): masking statistics, the tied head, overfitting, HF-format output, resume, errors."
import json, os, signal, warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from minbert_nb.bert import BertModel, load_tokenizer, read_state_dict
from minbert_nb.config import preset, seed_everything
from minbert_nb.data import DataWarning
from minbert_nb.pretrain import (HEADS_FILE, REPORT_MASKING, TINY_PRETRAIN, MaskingConfig, MaskVocab, NonFiniteLossError,
                                 PretrainData, PretrainModel, Pretrainer, build_corpus, evaluate_pretrain, fill_mask,
                                 heldout_batches, mask_tokens, masking_stats, run_pretrain, special_tokens_mask)

torch.set_num_threads(1)   # a shared 2-core machine: two threads each are slower than one


@pytest.fixture(scope="module")
def tok(): return load_tokenizer()


@pytest.fixture(scope="module")
def vocab(tok): return MaskVocab.from_tokenizer(tok)


@pytest.fixture(scope="module")
def sample():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return build_corpus("sample", heldout_frac=0.1)


def random_batch(tok, B=64, T=128, seed=0):
    "Random word pieces framed by [CLS] … [SEP], then padding; lengths 8 … T."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (B, T), generator=g)
    lens = torch.randint(8, T + 1, (B,), generator=g)
    am = (torch.arange(T)[None] < lens[:, None]).long()
    ids = torch.where(am.bool(), ids, tok.pad_token_id)
    ids[:, 0] = tok.cls_token_id; ids[torch.arange(B), lens - 1] = tok.sep_token_id
    return ids, am


def tiny(seed=0):
    seed_everything(seed)
    return PretrainModel(BertModel(preset("tiny")))


# -- masking --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [MaskingConfig(), REPORT_MASKING, MaskingConfig(mlm_prob=0.3, mask_frac=0.5, random_frac=0.25)],
                         ids=["devlin-80-10-10", "report-80-20-0", "30pct-50-25-25"])
def test_masking_rates(tok, vocab, cfg):
    ids, am = random_batch(tok)
    st = masking_stats(ids, special_tokens_mask(ids, am, vocab), vocab, cfg, draws=20, seed=1)
    print(cfg, {k: round(v, 4) for k, v in st.items()})
    n_sel = 20 * 0.15 * int(am.sum())    # ≈ 60k selected tokens: 3σ of a share p is ≤ 3·sqrt(.25/60k) ≈ .006
    assert abs(st["selected"] - cfg.mlm_prob) < 0.006
    assert abs(st["mask"] - cfg.mask_frac) < 0.01
    assert abs(st["random"] - cfg.random_frac) < 0.01
    assert abs(st["unchanged"] - cfg.keep_frac) < 0.01
    assert st["special_hit"] == 0 and n_sel > 0


def test_special_and_padding_never_masked_labels_elsewhere(tok, vocab):
    ids, am = random_batch(tok, B=32, T=40, seed=3)
    sm = special_tokens_mask(ids, am, vocab)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        out, lab = mask_tokens(ids, sm, vocab, MaskingConfig(mlm_prob=0.5), g)
        assert (lab[sm] == -100).all()                        # [CLS], [SEP], [PAD] never selected ...
        assert (out[sm] == ids[sm]).all()                     # ... nor changed
        sel = lab != -100
        assert (lab[sel] == ids[sel]).all()                   # labels: the original id where selected
        assert (out[~sel] == ids[~sel]).all()                 # unselected tokens unchanged
        assert set(lab[~sel].unique().tolist()) == {-100}
        assert sel.any(1).all()                               # every row predicts at least one token
        assert not torch.isin(out[sel & (out != ids) & (out != vocab.mask_id)], vocab.special_ids).any()


def test_whole_word_masking_keeps_words_together(tok, vocab):
    texts = ["Unbelievably, the bioluminescent jellyfish kept photographing themselves.",
             "Antidisestablishmentarianism is a remarkably long word."]
    b = tok(texts, padding=True, return_tensors="pt")
    sm = special_tokens_mask(b.input_ids, b.attention_mask, vocab)
    g = torch.Generator().manual_seed(0)
    cfg = MaskingConfig(mlm_prob=0.3, whole_word=True)
    n_sel = 0
    for _ in range(200):
        _, lab = mask_tokens(b.input_ids, sm, vocab, cfg, g)
        for i in range(2):
            wids = b.word_ids(i)
            for w in {x for x in wids if x is not None}:
                states = {bool(lab[i, t] != -100) for t, x in enumerate(wids) if x == w}
                assert len(states) == 1, (texts[i], w)
        n_sel += int((lab != -100).sum())
    assert n_sel > 0


def test_masking_is_reproducible_from_the_generator(tok, vocab):
    ids, am = random_batch(tok, B=4, T=30)
    sm = special_tokens_mask(ids, am, vocab)
    a = mask_tokens(ids, sm, vocab, generator=torch.Generator().manual_seed(5))
    b = mask_tokens(ids, sm, vocab, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# -- heads ----------------------------------------------------------------------------------------

def test_tied_decoder_shares_storage_with_word_embeddings(tmp_path, sample, tok):
    m = tiny()
    same = lambda m: m.mlm_head.decoder.weight is m.bert.embeddings.word_embeddings.weight
    assert same(m) and m.mlm_head.decoder.weight.data_ptr() == m.bert.embeddings.word_embeddings.weight.data_ptr()
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in set(m.parameters()))
    # after training steps, a save and a reload, still one tensor
    run_pretrain(replace(TINY_PRETRAIN, max_steps=3, eval_every=None), m, sample, tmp_path, tokenizer=tok, progress=False)
    assert same(m)
    again = PretrainModel.from_pretrained(tmp_path)
    assert same(again) and again.head_source == "pretrain_heads"
    assert torch.equal(again.mlm_head.transform.dense.weight, m.mlm_head.transform.dense.weight)


def test_fresh_head_is_initialised_cleanly():
    m = PretrainModel.from_pretrained()          # the offline MiniLM has no cls.* tensors
    h = m.mlm_head
    assert m.head_source == "fresh"
    assert torch.all(h.bias == 0) and torch.all(h.transform.dense.bias == 0)
    assert torch.all(h.transform.LayerNorm.weight == 1) and torch.all(h.transform.LayerNorm.bias == 0)
    assert abs(h.transform.dense.weight.std().item() - 0.02) < 0.002
    assert all(torch.isfinite(p).all() for p in m.parameters())


@pytest.mark.parametrize("old_names", [False, True])
def test_hf_pretraining_head_loads_and_matches(tmp_path, old_names):
    torch.manual_seed(0)
    hcfg = transformers.BertConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=96, max_position_embeddings=64)
    hf = transformers.BertForPreTraining(hcfg).eval()
    with torch.no_grad(): hf.cls.predictions.bias.normal_()
    hf.save_pretrained(tmp_path)
    if old_names:   # checkpoints from the TF conversion: gamma / beta, decoder weight stored
        sd = read_state_dict(tmp_path)
        sd = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v.contiguous() for k, v in sd.items()}
        sd["cls.predictions.decoder.weight"] = hf.bert.embeddings.word_embeddings.weight.detach().clone()
        save_file(sd, str(tmp_path/"model.safetensors"))
    ours = PretrainModel.from_pretrained(tmp_path)
    assert ours.head_source == "checkpoint"
    ids = torch.randint(1, 300, (3, 11)); am = torch.ones_like(ids); am[1, 7:] = 0
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=am).prediction_logits
        got = ours.mlm_logits(ids, am)
    assert (got - ref)[am.bool()].abs().max().item() < 1e-4


# -- training -------------------------------------------------------------------------------------

FEW = ["the cat sat on the mat .", "a man is playing a guitar .", "the stock market fell sharply today .",
       "she reads a book in the garden .", "two dogs run across the green field .", "he cooks pasta for dinner every friday ."]


def test_tiny_preset_overfits_a_few_sentences(tmp_path, sample, tok):
    data = PretrainData(FEW, [], sample.rte_train[:8], [])
    cfg = replace(TINY_PRETRAIN, max_steps=60, batch_size=6, mlm_weight=1.0, rte_weight=0.0, log_every=10, eval_every=None,
                  masking=MaskingConfig(mlm_prob=0.3))
    res = run_pretrain(cfg, tiny(), data, tmp_path, tokenizer=tok, progress=False)
    losses = [r["loss/mlm"] for r in res["history"] if "loss/mlm" in r]
    print("MLM loss per 10 steps:", [round(x, 2) for x in losses])
    assert losses[-1] < 0.5 * losses[0], losses


def test_saved_checkpoint_loads_in_transformers_with_equal_outputs(tmp_path, sample, tok):
    m = tiny()
    run_pretrain(replace(TINY_PRETRAIN, max_steps=5, eval_every=None), m, sample, tmp_path, tokenizer=tok, progress=False)
    for f in ("config.json", "model.safetensors", "tokenizer.json", HEADS_FILE, "pretrain_metrics.json", "metrics.jsonl"):
        assert (tmp_path/f).exists(), f
    assert not any(k.startswith(("cls.", "rte.", "bert.")) for k in read_state_dict(tmp_path))   # encoder only, HF names
    hf, info = transformers.BertModel.from_pretrained(str(tmp_path), output_loading_info=True)
    assert info["missing_keys"] == set() or info["missing_keys"] == [], info
    assert not info["unexpected_keys"] and not info.get("mismatched_keys"), info
    hf.eval(); m.eval()
    b = tok(["a man plays a guitar", "dogs run"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = m.bert(b.input_ids, b.attention_mask, b.token_type_ids)
        r = hf(**b)
    assert (a.last_hidden_state - r.last_hidden_state)[b.attention_mask.bool()].abs().max() < 1e-5
    assert (a.pooler_output - r.pooler_output).abs().max() < 1e-5
    ours = BertModel.from_pretrained(tmp_path)         # what `minbert train --model OUT` does
    assert load_tokenizer(tmp_path)("a man").input_ids == tok("a man").input_ids
    assert torch.equal(ours.embeddings.word_embeddings.weight, m.bert.embeddings.word_embeddings.weight)


def test_finetune_starts_from_the_pretrained_checkpoint(tmp_path, sample, tok):
    from minbert_nb.experiments import RunConfig, run_train
    from minbert_nb.train import TrainConfig
    run_pretrain(replace(TINY_PRETRAIN, max_steps=3, eval_every=None), tiny(), sample, tmp_path/"pre", tokenizer=tok, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        m = run_train(RunConfig(model=str(tmp_path/"pre"), data="sample", out=str(tmp_path/"ft"),
                                train=TrainConfig(max_steps=2, batch_size=4, max_len=32, log_every=1)), progress=False)
    assert m["steps"] == 2 and set(m["dev"]) >= {"sst", "para", "sts"} or "overall" in m["dev"]


def _trace(h): return [(r["step"], round(r["loss/mlm"], 5), round(r["loss/rte"], 5)) for r in h if "loss/mlm" in r]


def test_sigint_checkpoints_and_resumes_exactly(tmp_path, sample, tok):
    cfg = replace(TINY_PRETRAIN, max_steps=12, eval_every=6, log_every=1, checkpoint_every=100)

    class Interrupt(PretrainModel):
        n = 0
        def mlm_loss(self, batch):
            self.n += 1
            if self.n == 5: os.kill(os.getpid(), signal.SIGINT)    # the real signal, as Ctrl-C sends it
            return super().mlm_loss(batch)

    full = run_pretrain(cfg, tiny(), sample, tmp_path/"a", tokenizer=tok, progress=False)
    seed_everything(0)
    part = run_pretrain(cfg, Interrupt(BertModel(preset("tiny"))), sample, tmp_path/"b", tokenizer=tok, progress=False)
    assert part["interrupted"] and part["steps"] == 5
    assert (tmp_path/"b"/"last"/"pretrain.json").exists() and not (tmp_path/"b"/"model.safetensors").exists()
    seed_everything(7)
    resumed = run_pretrain(cfg, tiny(seed=3), sample, tmp_path/"b", tokenizer=tok, progress=False)
    assert _trace(resumed["history"]) == _trace(full["history"])
    assert resumed["final"] == full["final"] and resumed["init"] == full["init"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nonfinite_loss_names_the_step(tmp_path, sample, tok):
    class Poison(PretrainModel):
        n = 0
        def rte_logits(self, *a, **k):
            self.n += self.training          # count training steps, not the held-apart evaluation
            out = super().rte_logits(*a, **k)
            return out * float("inf") if self.training and self.n == 4 else out
    seed_everything(0)
    with pytest.raises(NonFiniteLossError, match="step 4: loss/rte is"):
        run_pretrain(replace(TINY_PRETRAIN, max_steps=10, eval_every=None), Poison(BertModel(preset("tiny"))), sample, tmp_path,
                     tokenizer=tok, progress=False)


def test_head_only_steps_freeze_the_encoder(tmp_path, sample, tok):
    class StopAfter3(PretrainModel):
        n, trainer = 0, None
        def mlm_loss(self, batch):
            self.n += 1
            if self.n == 3: self.trainer.request_stop()
            return super().mlm_loss(batch)

    seed_everything(0)
    m = StopAfter3(BertModel(preset("tiny")))
    enc0 = {k: v.clone() for k, v in m.bert.state_dict().items()}
    head0 = m.mlm_head.transform.dense.weight.detach().clone()
    cfg = replace(TINY_PRETRAIN, max_steps=5, head_only_steps=3, eval_every=None)
    m.trainer = Pretrainer(m, cfg, sample, tok, tmp_path, progress=False)
    res = m.trainer.fit()
    assert res["interrupted"] and res["steps"] == 3 and res["probe"] is not None
    assert all(torch.equal(v, enc0[k]) for k, v in m.bert.state_dict().items())     # encoder (and tied decoder) frozen
    assert not torch.equal(m.mlm_head.transform.dense.weight, head0)                # heads trained
    assert all(p.requires_grad for p in m.parameters())                             # unfrozen again on return
    res = run_pretrain(cfg, m, sample, tmp_path, tokenizer=tok, progress=False)     # resume: steps 4-5 train everything
    assert res["steps"] == 5 and [r["phase"] for r in res["history"] if "eval" in r] == ["init", "probe", "final"]
    assert not torch.equal(m.bert.embeddings.word_embeddings.weight, enc0["embeddings.word_embeddings.weight"])


def test_fresh_heads_come_from_the_seed(tmp_path, sample, tok):
    "A checkpoint without heads gives the same run in any process: the heads' init is seeded."
    BertModel(preset("tiny")).save_pretrained(tmp_path/"enc")
    runs = []
    for i, junk in enumerate((1, 2)):
        torch.manual_seed(junk)                # another process, another global RNG state
        runs.append(run_pretrain(replace(TINY_PRETRAIN, max_steps=2, eval_every=None), str(tmp_path/"enc"), sample,
                                 tmp_path/f"r{i}", tokenizer=tok, progress=False))
    assert runs[0]["init"] == runs[1]["init"] and runs[0]["final"] == runs[1]["final"]


def test_errors_name_what_is_wrong(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_corpus(tmp_path/"nowhere")
    with pytest.raises(ValueError, match="has no \\[MASK\\]"):
        fill_mask(tiny(), tok, "nothing to guess")


# -- real data ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_corpus(data_dir, tok):
    d = build_corpus(data_dir)
    s = d.sizes()
    print(s)
    assert s["rte_train"] == 8964 and s["rte_heldout"] == 963
    assert s["mlm_train"] > 40_000 and 500 < s["mlm_heldout"] <= 2000
    assert not set(d.mlm_train) & set(d.mlm_heldout)
    assert not {x for e in d.rte_heldout for x in (e.text_a, e.text_b)} & set(d.mlm_train)
    m, r = heldout_batches(d, tok, max_len=64)
    ev = evaluate_pretrain(PretrainModel.from_pretrained(), m[:2], r[:2])
    assert ev["perplexity"] > 1000   # a fresh head on the MiniLM encoder: near-uniform over 30,522 pieces


# -- GPU ------------------------------------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_bf16_run_trains_and_saves(tmp_path, sample, tok):
    if not torch.cuda.is_available(): pytest.skip("no CUDA GPU")
    m = tiny()
    cfg = replace(TINY_PRETRAIN, device="cuda", amp="bf16", max_steps=60, log_every=10, eval_every=30)
    res = run_pretrain(cfg, m, sample, tmp_path, tokenizer=tok, progress=False)
    losses = [r["loss/mlm"] for r in res["history"] if "loss/mlm" in r]
    print("cuda bf16 MLM loss:", [round(x, 2) for x in losses], "held-apart:", res["init"]["perplexity"], "→", res["final"]["perplexity"])
    assert losses[-1] < 0.75 * losses[0]
    assert res["final"]["perplexity"] < res["init"]["perplexity"]
    assert m.mlm_head.decoder.weight is m.bert.embeddings.word_embeddings.weight
    assert all(p.dtype == torch.float32 for p in m.parameters())      # autocast, not a cast of the weights
    hf = transformers.BertModel.from_pretrained(str(tmp_path)).eval()
    b = tok(["a man plays a guitar"], return_tensors="pt")
    with torch.no_grad():
        ours = m.cpu().eval().bert(b.input_ids, b.attention_mask, b.token_type_ids).last_hidden_state
        assert (ours - hf(**b).last_hidden_state).abs().max() < 1e-5
