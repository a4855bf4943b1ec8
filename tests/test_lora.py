"LoRA: merge states agree, only LoRA + heads train, adapters round-trip, and our LoRA agrees with PEFT's on MiniLM."
import json
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from minbert_nb.config import ConfigError, preset, seed_everything, offline_model_dir
from minbert_nb.bert import BertModel
from minbert_nb.checkpoint import CheckpointError
from minbert_nb.heads import HeadsConfig, MultitaskBert
from minbert_nb.lora import (LoRAConfig, LoRALinear, add_lora, merge_lora, unmerge_lora, merge_and_unload, lora_layers,
                             lora_parameters, set_lora_weights, save_adapters, load_adapters,
                             export_peft, import_peft, lora_state_dict, resolve_targets, ADAPTER_FILE, PEFT_PREFIX)
from minbert_nb.run import RunConfig, count_parameters

TOL = 1e-5  # max |Δ|, fp32
CASES = [(1, "query"), (4, "query+value"), (8, "all-linear"), (2, ("dense",))]


def multitask(cfg):
    "A MultitaskBert with two heads that have weights: sst (5 logits) and para (one logit, cross-encoder)."
    return MultitaskBert(BertModel(cfg), HeadsConfig(tasks=("sst", "para"), dropout=0.0))


def outputs(m, ids, am):
    "The two heads' outputs for one batch of inputs."
    b = {"input_ids": ids, "attention_mask": am}
    return m.task_forward("sst", b), m.task_forward("para", b)


def batch(vocab=1000, B=3, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    am = torch.ones(B, T, dtype=torch.long); am[1, 6:] = 0; am[2, 3:] = 0
    return ids * am, am


def tiny_lora(r, targets, dropout=0.0, seed=0):
    seed_everything(seed)
    return set_lora_weights(add_lora(multitask(preset("tiny")), r=r, alpha=2 * r, targets=targets, dropout=dropout), std=0.2, seed=seed)


@pytest.mark.parametrize("r,targets", CASES)
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_merge_unmerge_unload_agree(r, targets, dropout):
    m = tiny_lora(r, targets, dropout).eval()      # eval: LoRA dropout off, as merging requires
    ids, am = batch()
    with torch.no_grad():
        ref = outputs(m, ids, am)
        outs = {"merged": outputs(merge_lora(m), ids, am), "unmerged": outputs(unmerge_lora(m), ids, am)}
        outs["merge_and_unload"] = outputs(merge_and_unload(m), ids, am)
    for k, o in outs.items():
        d = max((a - b).abs().max().item() for a, b in zip(o, ref))
        print(f"r={r} {targets} dropout={dropout} {k}: max|Δ| {d:.1e}")
        assert d <= TOL, (k, d)
    assert not lora_layers(m) and not any(isinstance(x, LoRALinear) for x in m.modules())


def test_lora_changes_the_output_and_starts_as_identity():
    seed_everything(0)
    m = multitask(preset("tiny")).eval(); ids, am = batch()
    with torch.no_grad():
        y0 = outputs(m, ids, am); add_lora(m, r=4, alpha=8).eval(); y1 = outputs(m, ids, am)   # B = 0: same model
        set_lora_weights(m, std=0.2); y2 = outputs(m, ids, am)
    assert all(torch.equal(a, b) for a, b in zip(y0, y1))
    assert (y2[0] - y0[0]).abs().max() > 1e-3


@pytest.mark.parametrize("r,targets", CASES)
def test_only_lora_and_heads_get_gradients(r, targets):
    m = tiny_lora(r, targets).train()
    ids, am = batch()
    a, b = outputs(m, ids, am)
    (F.cross_entropy(a, torch.tensor([0, 3, 4])) + b.pow(2).mean()).backward()
    got = {n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    want = {n for n, _ in m.named_parameters() if ".lora_" in n or n.startswith("heads.")}
    assert got == want, (got ^ want)
    assert {n for n, p in m.named_parameters() if p.requires_grad} == want
    assert len(lora_parameters(m)) == 2 * len(lora_layers(m))
    n_heads = sum(p.numel() for n, p in m.named_parameters() if n.startswith("heads."))
    assert n_heads == sum(p.numel() for p in m.head_parameters()) > 0
    assert count_parameters(m)[0] == sum(p.numel() for p in lora_parameters(m)) + n_heads


def test_merged_model_refuses_training_and_double_merge():
    m = tiny_lora(4, "query+value").eval(); ids, am = batch()
    with pytest.raises(RuntimeError, match="unmerge_lora: not merged"): unmerge_lora(m)
    merge_lora(m)
    with pytest.raises(RuntimeError, match="merge_lora: already merged"): merge_lora(m)
    with pytest.raises(RuntimeError, match="before training"): outputs(m.train(), ids, am)


def test_lora_config_parse():
    assert LoRAConfig.parse("r=8,alpha=16,targets=query+value") == LoRAConfig(8, 16.0, ("query", "value"), 0.0)
    assert LoRAConfig.parse("targets=all-linear,r=2,dropout=0.05") == LoRAConfig(2, 16.0, ("all-linear",), 0.05)
    for spec, msg in [("r=8,beta=1", "unknown key 'beta'"), ("r=2.5", "r='2.5' is not an integer"), ("dropout=1.5", "dropout must be in"),
                      ("alpha=-1", "alpha must be > 0"), ("r", "'r' has no value"), ("r=0", "r must be >= 1, got 0")]:
        with pytest.raises(ConfigError, match=msg): LoRAConfig.parse(spec)
    assert RunConfig(lora="r=8,alpha=16,targets=query+value").lora == LoRAConfig(8, 16.0, ("query", "value"), 0.0)   # the --lora flag
    assert RunConfig(lora={"r": 2, "targets": "all-linear"}).lora == LoRAConfig(2, 16.0, ("all-linear",), 0.0)      # the YAML section
    with pytest.raises(ConfigError, match="lora.r must be >= 1, got 0"): RunConfig(lora={"r": 0})
    assert resolve_targets("all-linear") == ("query", "key", "value", "output.dense", "intermediate.dense")


def test_adapters_round_trip_and_load_onto_a_bare_encoder(tmp_path):
    m = tiny_lora(4, "all-linear").eval(); ids, am = batch()
    save_adapters(m, tmp_path)
    assert all(k.startswith("encoder.layer.") for k in load_file(str(tmp_path / ADAPTER_FILE)))
    seed_everything(0); m2 = multitask(preset("tiny")).eval()      # same seed: same base weights and heads
    load_adapters(m2, tmp_path)
    with torch.no_grad():
        assert all((a - b).abs().max() <= 1e-6 for a, b in zip(outputs(m, ids, am), outputs(m2, ids, am)))
        seed_everything(0); bare = load_adapters(multitask(preset("tiny")).bert, tmp_path).eval()
        assert (bare(ids, am).last_hidden_state - m.bert(ids, am).last_hidden_state).abs().max() <= 1e-6
    with pytest.raises(ConfigError, match="r: file 4 vs model 8"): load_adapters(add_lora(BertModel(preset("tiny")), 8, 8, "all-linear"), tmp_path)
    with pytest.raises(CheckpointError, match="no lora.safetensors"): load_adapters(BertModel(preset("tiny")), tmp_path / "nope")


def test_lora_technique_trains_adapters_and_exports_a_merged_copy():
    "RunConfig(lora=...) applied to a run: LoRA in the model being trained, and the kept model merged into a plain BERT."
    from minbert_nb.run import Run, technique
    rc = RunConfig(lora={"r": 4, "alpha": 8, "targets": "query+value"})
    seed_everything(0); m = multitask(preset("tiny"))
    run = Run(rc, m, tokenizer=None)
    technique("lora").apply(run, rc.lora)
    assert set(lora_layers(m)) == {f"bert.encoder.layer.{i}.attention.self.{t}" for i in range(2) for t in ("query", "value")}
    set_lora_weights(m, std=0.2); m.eval(); ids, am = batch()
    kept = run.export(m)
    assert kept is not m and not lora_layers(kept) and len(lora_layers(m)) == 4 and not any(l.merged for l in lora_layers(m).values())
    with torch.no_grad():
        assert all((a - b).abs().max() <= TOL for a, b in zip(outputs(kept, ids, am), outputs(m, ids, am)))


# --- against PEFT, on the offline MiniLM checkpoint ---------------------------------------------------------------

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
PEFT_CASES = [(4, ("query", "value")), (2, "all-linear"), (8, ("query", "key", "value", "dense"))]


def hf_minilm():
    return transformers.BertModel.from_pretrained(str(offline_model_dir())).eval()


def ours_minilm(r, targets):
    return set_lora_weights(add_lora(BertModel.from_pretrained(), r=r, alpha=2 * r, targets=targets), std=0.05).eval()


def outputs_diff(ours, theirs, ids, am):
    with torch.no_grad():
        a = ours(ids, am); b = theirs(input_ids=ids, attention_mask=am)
    m = am.bool()
    return max((a.last_hidden_state - b.last_hidden_state)[m].abs().max().item(), (a.pooler_output - b.pooler_output).abs().max().item())


@pytest.mark.parametrize("r,targets", PEFT_CASES)
def test_same_A_and_B_give_peft_outputs(r, targets):
    ours = ours_minilm(r, targets)
    ref = peft.get_peft_model(hf_minilm(), peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(resolve_targets(targets)))).eval()
    theirs = {n for n, mod in ref.base_model.model.named_modules() if isinstance(mod, peft.tuners.lora.LoraLayer)}
    assert theirs == set(lora_layers(ours))                          # the same layers are wrapped
    assert count_parameters(ours) == ref.get_nb_trainable_parameters()
    with torch.no_grad():
        for n, l in lora_layers(ours).items():
            t = ref.base_model.model.get_submodule(n)
            t.lora_A["default"].weight.copy_(l.lora_A.weight); t.lora_B["default"].weight.copy_(l.lora_B.weight)
    ids, am = batch(ours.config.vocab_size, B=4, T=20)
    d = outputs_diff(ours, ref, ids, am)
    print(f"ours vs PEFT r={r} {targets}: max|Δ| {d:.1e}")
    assert d <= TOL


@pytest.mark.parametrize("r,targets", PEFT_CASES[:2])
def test_export_peft_loads_in_peft(tmp_path, r, targets):
    ours = ours_minilm(r, targets)
    export_peft(ours, tmp_path, base_model_name_or_path=str(offline_model_dir()))
    # the file has exactly the keys PEFT itself writes for this config
    ref = peft.get_peft_model(hf_minilm(), peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(resolve_targets(targets))))
    ref.save_pretrained(tmp_path / "peft_own")
    ours_sd, peft_sd = load_file(str(tmp_path / "adapter_model.safetensors")), load_file(str(tmp_path / "peft_own/adapter_model.safetensors"))
    assert set(ours_sd) == set(peft_sd) and all(ours_sd[k].shape == peft_sd[k].shape for k in ours_sd)
    assert all(k.startswith(PEFT_PREFIX) for k in ours_sd)
    loaded = peft.PeftModel.from_pretrained(hf_minilm(), str(tmp_path)).eval()
    ids, am = batch(ours.config.vocab_size, B=4, T=20, seed=1)
    d = outputs_diff(ours, loaded, ids, am)
    print(f"export_peft r={r} {targets} loaded by PEFT: max|Δ| {d:.1e}")
    assert d <= TOL
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["peft_type"]) == (r, 2 * r, "LORA")


def test_import_peft_saved_adapter(tmp_path):
    torch.manual_seed(0)
    ref = peft.get_peft_model(hf_minilm(), peft.LoraConfig(r=4, lora_alpha=16, target_modules=["query", "value"])).eval()
    with torch.no_grad():
        for p in (p for n, p in ref.named_parameters() if "lora_B" in n): p.normal_(std=0.05)
    ref.save_pretrained(tmp_path)
    ours = import_peft(BertModel.from_pretrained(), tmp_path).eval()
    assert ours.lora_config == LoRAConfig(4, 16.0, ("query", "value"), 0.0)
    ids, am = batch(ours.config.vocab_size, B=4, T=20, seed=2)
    assert outputs_diff(ours, ref, ids, am) <= TOL
    cfg = json.loads((tmp_path / "adapter_config.json").read_text()); cfg["use_dora"] = True
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unsupported: use_dora"): import_peft(BertModel.from_pretrained(), tmp_path)


def test_merge_and_unload_saves_a_transformers_checkpoint(tmp_path):
    ours = ours_minilm(4, "all-linear")
    ids, am = batch(ours.config.vocab_size, B=3, T=12, seed=3)
    with torch.no_grad(): ref = ours(ids, am).last_hidden_state
    merge_and_unload(ours).save_pretrained(tmp_path)
    hf = transformers.BertModel.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad(): out = hf(input_ids=ids, attention_mask=am).last_hidden_state
    assert (out - ref)[am.bool()].abs().max() <= TOL
