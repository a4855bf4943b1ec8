"Golden tests: our BertModel against transformers.BertModel, fp32, eval mode."
import json
import pytest
import torch
import transformers
from minbert_nb.config import BertConfig, ConfigError, offline_model_dir, load_config
from minbert_nb.bert import BertModel, read_state_dict
from minbert_nb.checkpoint import CheckpointError
from safetensors.torch import save_file

TOL = 1e-5  # max |Δ| allowed, fp32


def random_batch(vocab, B=4, T=24, type_vocab=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    lens = torch.randint(3, T + 1, (B,), generator=g); lens[0] = T
    am = (torch.arange(T)[None] < lens[:, None]).long()
    ids = ids * am                                   # pad id 0 after each length
    tt = torch.randint(0, type_vocab, (B, T), generator=g) * am
    return ids, am, tt


def max_diffs(ours, hf, ids, am, tt):
    with torch.no_grad():
        a = ours(ids, am, tt); b = hf(input_ids=ids, attention_mask=am, token_type_ids=tt)
    m = am.bool()
    return ((a.last_hidden_state - b.last_hidden_state)[m].abs().max().item(),
            (a.pooler_output - b.pooler_output).abs().max().item())


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minilm_parity(impl, seed):
    d = offline_model_dir()
    ours = BertModel.from_pretrained(d, attn_impl=impl).eval()
    hf = transformers.BertModel.from_pretrained(str(d)).eval()
    ids, am, tt = random_batch(ours.config.vocab_size, seed=seed)
    dh, dp = max_diffs(ours, hf, ids, am, tt)
    print(f"MiniLM {impl} seed {seed}: max|Δ| hidden {dh:.2e} pooler {dp:.2e}")
    assert dh <= TOL and dp <= TOL


def test_hf_random_unusual_size_loads_in_ours(tmp_path):
    torch.manual_seed(0)
    hcfg = transformers.BertConfig(vocab_size=517, hidden_size=60, num_hidden_layers=3, num_attention_heads=5,
                                   intermediate_size=100, max_position_embeddings=40, type_vocab_size=3,
                                   layer_norm_eps=1e-7, hidden_act="gelu")
    hf = transformers.BertModel(hcfg).eval()
    hf.save_pretrained(tmp_path)
    ours = BertModel.from_pretrained(tmp_path)
    assert ours.config.hidden_size == 60 and ours.config.type_vocab_size == 3 and ours.config.layer_norm_eps == 1e-7
    ids, am, tt = random_batch(517, B=3, T=17, type_vocab=3, seed=5)
    dh, dp = max_diffs(ours, hf, ids, am, tt)
    assert dh <= TOL and dp <= TOL


def test_ours_round_trip_into_transformers(tmp_path):
    torch.manual_seed(1)
    ours = BertModel(BertConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                                intermediate_size=80, max_position_embeddings=64)).eval()
    ours.save_pretrained(tmp_path)
    hf = transformers.BertModel.from_pretrained(str(tmp_path)).eval()
    ids, am, tt = random_batch(300, B=3, T=20, seed=7)
    dh, dp = max_diffs(ours, hf, ids, am, tt)
    assert dh <= TOL and dp <= TOL
    # and back: byte-identical tensors
    again = BertModel.from_pretrained(tmp_path)
    for k, v in ours.state_dict().items(): assert torch.equal(v, again.state_dict()[k]), k


def test_bert_prefix_and_gamma_beta_names(tmp_path):
    ours = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=16))
    ours.save_pretrained(tmp_path)
    sd = {("bert." + k).replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
          for k, v in read_state_dict(tmp_path).items()}
    sd["cls.predictions.bias"] = torch.zeros(50)
    save_file(sd, str(tmp_path / "model.safetensors"))
    again = BertModel.from_pretrained(tmp_path)
    for k, v in ours.state_dict().items(): assert torch.equal(v, again.state_dict()[k]), k


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope: no such checkpoint folder"):
        BertModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    with pytest.raises(ConfigError, match="model_type is 'gpt2'"):
        BertModel.from_pretrained(tmp_path / "gpt")
    cfg = json.loads((offline_model_dir() / "config.json").read_text()); del cfg["num_hidden_layers"]
    (tmp_path / "nokey").mkdir(); (tmp_path / "nokey" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="nokey/config.json: missing key\\(s\\) num_hidden_layers"):
        load_config(tmp_path / "nokey")
    cfg = json.loads((offline_model_dir() / "config.json").read_text()); cfg["intermediate_size"] = 1000
    (tmp_path / "shape").mkdir(); (tmp_path / "shape" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "shape" / "model.safetensors").symlink_to(offline_model_dir() / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"shape mismatch: encoder.layer.0.intermediate.dense.weight: checkpoint \(1536, 384\) vs model \(1000, 384\)"):
        BertModel.from_pretrained(tmp_path / "shape")
    (tmp_path / "noweights").mkdir(); (tmp_path / "noweights" / "config.json").write_text((offline_model_dir() / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        BertModel.from_pretrained(tmp_path / "noweights")


def test_pytorch_bin_loads_weights_only(tmp_path):
    ours = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=16))
    ours.save_pretrained(tmp_path); (tmp_path / "model.safetensors").unlink()
    torch.save(ours.state_dict(), tmp_path / "pytorch_model.bin")
    again = BertModel.from_pretrained(tmp_path)
    assert torch.equal(again.pooler.dense.weight, ours.pooler.dense.weight)
    class Evil:  # a pickle that would run code is refused by weights_only=True
        def __reduce__(self): return (print, ("pwned",))
    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(Exception):
        BertModel.from_pretrained(tmp_path)


def test_checkpoint_files_follow_the_umask(tmp_path):
    import os
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16)).save_pretrained(tmp_path)
    mask = os.umask(0); os.umask(mask)
    for f in ("model.safetensors", "config.json"):
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o666 & ~mask, f
