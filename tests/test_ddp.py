"""Scale-out (issue #7): 2 CPU processes (gloo) end with the same weights as 1 process with the combined batch,
for the weighted sum and for PCGrad; without the gradient averaging they do not."""
import time

import torch

from minbert_nb.distributed import launch_local
from minbert_nb.pcgrad import PCGrad
from minbert_nb.evaluate import read_history
from helpers import max_param_diff, sample_run

STEPS, PER_PROCESS = 3, 6
SIZES = {"para": 35, "sts": 25}   # global batches of 12: para's third splits 6 + 5, sts's third 1 + 0 (weight 0)
TOL = 1e-5                        # max |Δθ|; measured ~6e-7 (float rounding: the shares pad to other lengths)


def pcgrad(model):
    return PCGrad(model.shared_parameters(), generator=torch.Generator().manual_seed(0), tasks=model.cfg.tasks)


def no_averaging(params, world, bucket_numel=0): pass


def worker(root):
    "Runs in each of the 2 processes: the weighted sum, PCGrad, then the weighted sum with the averaging switched off."
    sample_run(f"{root}/ws2", PER_PROCESS, STEPS, None, SIZES)
    sample_run(f"{root}/pc2", PER_PROCESS, STEPS, pcgrad, SIZES)
    import minbert_nb.train as tr         # the trainer calls average_gradients by the name it imported from distributed
    tr.average_gradients = no_averaging   # each process steps on its own share: what the test must catch
    sample_run(f"{root}/noavg2", PER_PROCESS, STEPS, None, SIZES)


def test_two_processes_equal_one_process_with_the_combined_batch(tmp_path):
    t0 = time.time()
    launch_local(worker, 2, str(tmp_path))
    t_two = time.time() - t0
    for name, make in (("ws", None), ("pc", pcgrad)):
        one = sample_run(tmp_path / f"{name}1", 2 * PER_PROCESS, STEPS, make, SIZES)
        d = max_param_diff(tmp_path / f"{name}2", tmp_path / f"{name}1")
        print(f"{name}: max |Δθ| 2 processes vs 1 = {d:.2e} (2-process runs: {t_two:.1f} s for 3 runs)")
        assert d < TOL, (name, d)
        two_log = [r for r in read_history(tmp_path / f"{name}2") if "loss/sts" in r]
        one_log = [r for r in one.history if "loss/sts" in r]
        assert len(two_log) == len(one_log) == STEPS
        assert all(abs(a["loss/sts"] - b["loss/sts"]) < TOL for a, b in zip(two_log, one_log))   # the combined batch's loss
    wrong = max_param_diff(tmp_path / "noavg2", tmp_path / "ws1")
    print(f"without averaging: max |Δθ| = {wrong:.2e}")
    assert wrong > 100 * TOL, wrong


def distill_worker(root):
    "Runs in each of the 2 processes: the distillation run of `14_distill`'s sample example, teachers and student."
    import warnings
    from minbert_nb.run import RunConfig, run_train
    from minbert_nb.train import TrainConfig
    warnings.simplefilter("ignore")                                 # "this is the small bundled sample"
    tiny = dict(max_steps=2, batch_size=8, max_len=48, log_every=1, eval_every=2, device="cpu")
    run_train(RunConfig(out=root, train=TrainConfig(**tiny), distill={"teacher_steps": 2}), progress=False)


def test_distillation_trains_its_teachers_and_student_data_parallel(tmp_path):
    "Under 2 processes the teachers (a run inside the run) train data-parallel once each, then the student."
    from minbert_nb.checkpoint import read_json
    launch_local(distill_worker, 2, str(tmp_path))
    for d in [tmp_path/"teachers"/t for t in ("sst", "para", "sts")] + [tmp_path]:
        m = read_json(d/"metrics.json")
        assert (m["processes"], m["steps"], m["interrupted"]) == (2, 2, False), (d, m)
        assert (d/"best"/"model.safetensors").exists(), d
    assert list(read_json(tmp_path/"metrics.json")["prepare_seconds"]) == ["distill"]
    logged = [r for r in read_history(tmp_path/"teachers"/"sst") if "loss/sst" in r]
    assert [r["step"] for r in logged] == [1, 2], logged                          # one log, not one per process
