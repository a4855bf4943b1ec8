"Further pretraining (09_pretrain): masking statistics, the tied head, overfitting, HF-format output, resume, errors — on the one trainer."
import json, os, signal, warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from minbert_nb.bert import BertModel, load_tokenizer, read_state_dict
from minbert_nb.config import preset, seed_everything
from minbert_nb.data import DataWarning, load_split
from minbert_nb.heads import HeadsConfig, MultitaskBert, load_multitask
from minbert_nb.pretrain import (REPORT_MASKING, EVAL_MASKING, MaskingConfig, MaskVocab, MaskedLM, MLMTexts, corpus, fill_mask,
                                 load_mlm_head, mask_tokens, masking_stats, special_tokens_mask)
from minbert_nb.run import RunConfig, build_sets, load_run_config, run_train
from minbert_nb.train import NonFiniteLossError, Trainer, TrainConfig
from minbert_nb.evaluate import loss_trace

torch.set_num_threads(1)   # a shared 2-core machine: two threads each are slower than one


@pytest.fixture(scope="module")
def tok(): return load_tokenizer()


@pytest.fixture(scope="module")
def vocab(tok): return MaskVocab.from_tokenizer(tok)


TINY = TrainConfig(max_steps=40, batch_size=8, max_len=32, lr_encoder=1e-2, lr_heads=1e-2, warmup_frac=0.0,
                   loss_weights={"mlm": 0.7, "nli": 0.3}, eval_every=20, log_every=5, checkpoint_every=10, keep="last", device="cpu")
RC = RunConfig(heads=HeadsConfig(tasks=("mlm", "nli")), mlm={"heldout_frac": 0.1}, train=TINY)


@pytest.fixture(scope="module")
def sample(tok):
    "The pretraining data of the bundled sample: (train sets, held-apart sets) as a run builds them."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return build_sets(RC, tok, "train"), build_sets(RC, tok, "dev")


def random_batch(tok, B=64, T=128, seed=0):
    "Random word pieces framed by [CLS] … [SEP], then padding; lengths 8 … T."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (B, T), generator=g)
    lens = torch.randint(8, T + 1, (B,), generator=g)
    am = (torch.arange(T)[None] < lens[:, None]).long()
    ids = torch.where(am.bool(), ids, tok.pad_token_id)
    ids[:, 0] = tok.cls_token_id; ids[torch.arange(B), lens - 1] = tok.sep_token_id
    return ids, am


def tiny(seed=0, tasks=("mlm", "nli")):
    seed_everything(seed)
    return MultitaskBert(BertModel(preset("tiny")), HeadsConfig(tasks=tasks))


def pretrain(model, out, sample, cfg=TINY, **kw):
    "The trainer on the MLM + NLI data, as `minbert pretrain` runs it."
    train, dev = sample
    return Trainer(model, cfg, train, out, dev_sets=dev if cfg.eval_every else None, progress=False, **kw).fit()


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
    same = lambda m: m.heads["mlm"].decoder_weight is m.bert.embeddings.word_embeddings.weight
    assert same(m)
    assert "mlm.decoder.weight" not in m.heads.state_dict()                           # stored once, as the embeddings
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in set(m.parameters()))
    pretrain(m, tmp_path, sample, replace(TINY, max_steps=3, eval_every=None))         # training, a save and a reload: still one tensor
    assert same(m)
    again = load_multitask(tmp_path)
    assert same(again)
    assert torch.equal(again.heads["mlm"].transform.dense.weight, m.heads["mlm"].transform.dense.weight)
    fresh = MultitaskBert(BertModel.from_pretrained(tmp_path), HeadsConfig(tasks=("mlm",)))
    assert load_mlm_head(fresh.heads["mlm"], tmp_path / "best") == "run"                # a pretraining run's head carries over
    assert torch.equal(fresh.heads["mlm"].bias, m.heads["mlm"].bias)


def test_fresh_head_is_initialised_cleanly():
    m = MultitaskBert(BertModel.from_pretrained(), HeadsConfig(tasks=("mlm",)))   # the offline MiniLM has no cls.* tensors
    from minbert_nb.config import offline_model_dir
    h = m.heads["mlm"]
    assert load_mlm_head(h, offline_model_dir()) == "fresh"
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
    ours = MultitaskBert(BertModel.from_pretrained(tmp_path), HeadsConfig(tasks=("mlm",))).eval()
    assert load_mlm_head(ours.heads["mlm"], tmp_path) == "checkpoint"
    ids = torch.randint(1, 300, (3, 11)); am = torch.ones_like(ids); am[1, 7:] = 0
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=am).prediction_logits
        got = ours.heads["mlm"](ours.bert(ids, am).last_hidden_state)
    assert (got - ref)[am.bool()].abs().max().item() < 1e-4


def test_a_run_starts_from_the_checkpoints_head(tmp_path):
    "`build_run` loads `cls.predictions` when the model folder has it (bert-base-uncased does)."
    from minbert_nb.run import build_run
    torch.manual_seed(0)
    hcfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    hf = transformers.BertForPreTraining(hcfg).eval()
    with torch.no_grad(): hf.cls.predictions.bias.normal_()
    hf.save_pretrained(tmp_path); load_tokenizer().save_pretrained(str(tmp_path))
    run = build_run(RunConfig(model=str(tmp_path), heads=HeadsConfig(tasks=("mlm", "nli"))))
    assert torch.equal(run.model.heads["mlm"].bias, hf.cls.predictions.bias.detach())


# -- training -------------------------------------------------------------------------------------

FEW = ["the cat sat on the mat .", "a man is playing a guitar .", "the stock market fell sharply today .",
       "she reads a book in the garden .", "two dogs run across the green field .", "he cooks pasta for dinner every friday ."]


def test_tiny_preset_overfits_a_few_sentences(tmp_path, tok):
    texts = MLMTexts(FEW, tok, max_len=32, masking=MaskingConfig(mlm_prob=0.3))
    cfg = replace(TINY, max_steps=60, batch_size=6, loss_weights={"mlm": 1.0}, log_every=10, eval_every=None)
    res = Trainer(tiny(tasks=("mlm",)), cfg, {"mlm": texts}, tmp_path, progress=False).fit()
    losses = [r["loss/mlm"] for r in res.history if "loss/mlm" in r]
    print("MLM loss per 10 steps:", [round(x, 2) for x in losses])
    assert losses[-1] < 0.5 * losses[0], losses


def test_saved_checkpoint_loads_in_transformers_with_equal_outputs(tmp_path, sample, tok):
    m = tiny()
    pretrain(m, tmp_path, sample, replace(TINY, max_steps=5, eval_every=None), tokenizer=tok)
    best = tmp_path / "best"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "heads.safetensors", "heads.json", "manifest.json"):
        assert (best/f).exists(), f
    assert not any(k.startswith(("cls.", "heads.", "bert.")) for k in read_state_dict(best))   # encoder only, HF names
    hf, info = transformers.BertModel.from_pretrained(str(best), output_loading_info=True)
    assert info["missing_keys"] == set() or info["missing_keys"] == [], info
    assert not info["unexpected_keys"] and not info.get("mismatched_keys"), info
    hf.eval(); m.eval()
    b = tok(["a man plays a guitar", "dogs run"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = m.bert(b.input_ids, b.attention_mask, b.token_type_ids)
        r = hf(**b)
    assert (a.last_hidden_state - r.last_hidden_state)[b.attention_mask.bool()].abs().max() < 1e-5
    assert (a.pooler_output - r.pooler_output).abs().max() < 1e-5
    ours = BertModel.from_pretrained(tmp_path)         # what `minbert train --model OUT` does: the run folder's best/
    assert load_tokenizer(tmp_path)("a man").input_ids == tok("a man").input_ids
    assert torch.equal(ours.embeddings.word_embeddings.weight, m.bert.embeddings.word_embeddings.weight)


def test_finetune_starts_from_the_pretrained_checkpoint(tmp_path, sample, tok):
    pretrain(tiny(), tmp_path/"pre", sample, replace(TINY, max_steps=3, eval_every=None), tokenizer=tok)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        m = run_train(RunConfig(model=str(tmp_path/"pre"), data="sample", out=str(tmp_path/"ft"),
                                train=TrainConfig(max_steps=2, batch_size=4, max_len=32, log_every=1, device="cpu")), progress=False)
    assert m["steps"] == 2 and "overall" in m["dev"]
    assert json.loads((tmp_path/"ft"/"run_config.json").read_text())["model"] == str(tmp_path/"pre")


def test_masks_come_from_the_batch_key_so_resume_is_exact(tmp_path, sample, tok):
    "Interrupt a 12-step run with the real SIGINT during step 5; a fresh process resumes and logs what the full run logged."
    cfg = replace(TINY, max_steps=12, eval_every=6, log_every=1, checkpoint_every=100)
    full = pretrain(tiny(), tmp_path/"a", sample, cfg)

    class Interrupt(MaskedLM):
        n = 0
        def loss(self, output, batch):
            Interrupt.n += 1
            if Interrupt.n == 5: os.kill(os.getpid(), signal.SIGINT)    # the real signal, as Ctrl-C sends it
            return super().loss(output, batch)
    m = tiny()
    m.tasks["mlm"].__class__ = Interrupt
    part = pretrain(m, tmp_path/"b", sample, cfg)
    assert part.interrupted and part.step == 5
    assert (tmp_path/"b"/"last"/"trainer.json").exists()
    seed_everything(7)
    resumed = pretrain(tiny(seed=3), tmp_path/"b", sample, cfg)
    assert loss_trace(resumed.history) == loss_trace(full.history)
    assert resumed.best == full.best
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nonfinite_loss_names_the_step(tmp_path, sample):
    class Poison(MaskedLM):
        n = 0
        def loss(self, output, batch):
            Poison.n += 1
            out = super().loss(output, batch)
            return out * float("inf") if Poison.n == 4 else out
    m = tiny(); m.tasks["mlm"].__class__ = Poison
    with pytest.raises(NonFiniteLossError, match="step 4: the loss of task 'mlm' is"):
        pretrain(m, tmp_path, sample, replace(TINY, max_steps=10, eval_every=None, log_every=1))


def test_head_only_steps_freeze_the_encoder(tmp_path, sample):
    m = tiny()
    enc0 = {k: v.clone() for k, v in m.bert.state_dict().items()}
    head0 = m.heads["mlm"].transform.dense.weight.detach().clone()
    cfg = replace(TINY, max_steps=5, head_only_steps=3, eval_every=3)
    holder = {}
    class Stop:
        def __call__(self, *a): return torch.zeros(())
        def after_step(self, model, step):
            if step == 3: holder["t"]._on_signal(signal.SIGINT, None)
    holder["t"] = Trainer(m, cfg, *sample[:1], tmp_path, dev_sets=sample[1], regularizers={"nli": Stop()}, progress=False)
    res = holder["t"].fit()
    assert res.interrupted and res.step == 3 and [r["step"] for r in res.history if "eval" in r] == [3]   # the probe
    assert all(torch.equal(v, enc0[k]) for k, v in m.bert.state_dict().items())     # encoder (and tied decoder) frozen
    assert not torch.equal(m.heads["mlm"].transform.dense.weight, head0)            # heads trained
    assert all(p.requires_grad for p in m.parameters())                             # unfrozen again on return
    res = pretrain(m, tmp_path, sample, cfg)                                         # resume: steps 4-5 train everything
    assert res.step == 5 and [r["step"] for r in res.history if "eval" in r] == [3, 5]
    assert not torch.equal(m.bert.embeddings.word_embeddings.weight, enc0["embeddings.word_embeddings.weight"])


def test_fresh_heads_come_from_the_seed(tmp_path, tok):
    "A checkpoint without heads gives the same run in any process: the heads' init is seeded."
    from minbert_nb.run import build_run
    BertModel(preset("tiny")).save_pretrained(tmp_path/"enc"); tok.save_pretrained(str(tmp_path/"enc"))
    heads = []
    for junk in (1, 2):
        torch.manual_seed(junk)                # another process, another global RNG state
        heads.append(build_run(RunConfig(model=str(tmp_path/"enc"), heads=HeadsConfig(tasks=("mlm", "nli")))).model.heads.state_dict())
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_errors_name_what_is_wrong(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        corpus(tmp_path/"nowhere")
    with pytest.raises(ValueError, match="has no \\[MASK\\]"):
        fill_mask(tiny(), tok, "nothing to guess")
    from minbert_nb.config import ConfigError
    with pytest.raises(ConfigError, match="mlm: settings for masked language modelling, but the run's tasks are sst, para, sts"):
        RunConfig(mlm={})


# -- real data ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_corpus(data_dir, tok):
    train, held = corpus(data_dir, heldout_max=1000)
    print(len(train), len(held))
    assert len(train) > 40_000 and 500 < len(held) <= 1000
    assert not set(train) & set(held)
    nli_dev = load_split("nli", "dev", data_dir)
    assert len(nli_dev) == 963 and not {x for e in nli_dev for x in (e.text_a, e.text_b)} & set(train)
    m = MultitaskBert(BertModel.from_pretrained(), HeadsConfig(tasks=("mlm",)))
    ev = m.tasks["mlm"].evaluate(m, MLMTexts(held[:128], tok, 64, EVAL_MASKING))
    assert ev["perplexity"] > 1000   # a fresh head on the MiniLM encoder: near-uniform over 30,522 pieces


# -- GPU ------------------------------------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_bf16_run_trains_and_saves(tmp_path, sample, tok):
    if not torch.cuda.is_available(): pytest.skip("no CUDA GPU")
    m = tiny()
    res = pretrain(m, tmp_path, sample, replace(TINY, device="cuda", amp="bf16", max_steps=60, log_every=10, eval_every=30), tokenizer=tok)
    losses = [r["loss/mlm"] for r in res.history if "loss/mlm" in r]
    evals = [r["eval"]["perplexity"] for r in res.history if "eval" in r]
    print("cuda bf16 MLM loss:", [round(x, 2) for x in losses], "held-apart perplexity:", evals)
    assert losses[-1] < 0.75 * losses[0] and evals[-1] < evals[0]
    assert m.heads["mlm"].decoder_weight is m.bert.embeddings.word_embeddings.weight
    assert all(p.dtype == torch.float32 for p in m.parameters())      # autocast, not a cast of the weights
    hf = transformers.BertModel.from_pretrained(str(tmp_path/"best")).eval()
    b = tok(["a man plays a guitar"], return_tensors="pt")
    with torch.no_grad():
        ours = m.cpu().eval().bert(b.input_ids, b.attention_mask, b.token_type_ids).last_hidden_state
        assert (ours - hf(**b).last_hidden_state).abs().max() < 1e-5
