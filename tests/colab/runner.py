"""Runs a lesson notebook as Colab would, for tests/test_colab_check.py (and by hand: `python tests/colab/runner.py -h`).

- `build_site(repo, dest)`: a wheel of the working tree (tracked and untracked-but-not-ignored files, as a commit of it
  would hold), built with `pip wheel --no-deps` (the build `pip install git+URL` runs on Colab; without build
  isolation where this environment has the build requirements, so that it works offline) and installed with
  `pip install --no-deps --target` into `dest/site`; the stand-ins of `site/` are copied to `dest/standins`.
- `run_notebook(nb, site, workroot)`: copies the notebook alone into an empty folder and runs it in a fresh IPython
  kernel (ipykernel, driven by nbclient: Colab is an IPython kernel too), cell by cell, going on after errors, skipping
  the cells nbdev-test skips (`#| notest`, `#| slow`, `#| cuda`, `#| eval: false`). The kernel gets a clean
  environment: the wheel's folder and the stand-ins (google.colab, the Hub, the blocker of the checkout and of
  dev-only packages: see `site/sitecustomize.py`) on PYTHONPATH, an empty HF_HOME, OMP_NUM_THREADS=1, and none of
  MINBERT_DATA, MINBERT_MODEL, IN_TEST, HF_HUB_OFFLINE, MPLBACKEND. Third-party packages (torch, transformers,
  datasets, ipykernel, ...) come from the interpreter running this, standing in for the ones Colab preinstalls.
- `origin_problems(result, site)`, `request_problems(result)`, `failure_report(result)`: what is wrong with a run:
  `minbert_nb` not from the wheel or the setup cell off its Colab path, Hub requests other than bert-base-uncased and
  the `HUB_SOURCES` datasets, cells that pass `env.model` / `env.data` to a loader but did not reach the Hub (or used
  the offline checkpoint / bundled sample instead), files of the checkout opened; failing cells with tracebacks.
"""
from __future__ import annotations

import json, os, re, shutil, subprocess, sys, time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "site"
REPO = HERE.parents[1]
MODEL_ID = "bert-base-uncased"
SKIP = ("notest", "slow", "cuda")      # as `tst_flags` in pyproject.toml
DEV_ONLY = ("nbdev", "execnb", "pytest", "_pytest", "xdist", "nbconvert", "jupyter_server_mathjax")
# a cell that passes env.model / env.data to one of these should reach the Hub (one level of nested parentheses)
_ARG = r"\((?:[^()]|\([^()]*\))*?"
MODEL_CALL = re.compile(r"\b(from_pretrained|load_tokenizer|resolve_model|load_run_config|load_multitask|snapshot_download)" + _ARG + r"\benv\.model\b")
DATA_CALL = re.compile(r"\b(load_split|hub_split|corpus|load_run_config|load_dataset|build_sets)" + _ARG + r"\benv\.data\b")
OFFLINE_EXPLICIT = re.compile(r"offline_model_dir\(|OFFLINE_MODEL|[\"']minilm[\"']|\b(from_pretrained|load_tokenizer|resolve_model)\(\s*(None)?\s*\)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def lessons(nbs_dir: Path = REPO / "nbs") -> list[Path]:
    "The numbered lesson notebooks: `NN_name.ipynb` and inserted ones like `04b_name.ipynb`."
    return sorted(p for p in Path(nbs_dir).glob("[0-9][0-9]*.ipynb") if re.match(r"^\d\d[a-z]?_", p.name))


# -------------------------------------------------------------------------------------------------- the wheel
def _source_files(repo: Path) -> list[str]:
    "The package's files and the top-level build files, as git would commit them (every file outside git)."
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True, check=True).stdout
        files = out.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        files = [p.relative_to(repo).as_posix() for p in repo.rglob("*") if "__pycache__" not in p.parts]
    keep = lambda f: f.startswith("minbert_nb/") or "/" not in f and (f in ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in") or f.startswith(("README", "LICENSE")))
    return [f for f in files if f and keep(f) and (repo / f).is_file()]


def _build_deps_installed(pyproject: Path) -> bool:
    "Whether this environment satisfies `build-system.requires` (then the wheel builds offline, without isolation)."
    from importlib.metadata import PackageNotFoundError, version
    try:
        import tomllib
        from packaging.requirements import Requirement
    except ImportError: return False            # Python 3.10: let pip set up the build environment
    for r in tomllib.loads(pyproject.read_text()).get("build-system", {}).get("requires", []):
        req = Requirement(r)
        try:
            if not req.specifier.contains(version(req.name), prereleases=True): return False
        except PackageNotFoundError: return False
    return True


def build_site(repo: Path, dest: Path) -> Path:
    "Build a wheel of `repo`'s working tree and install it, without dependencies, into `dest/site` (returned); the stand-ins go to `dest/standins`."
    src, dist, site = dest / "src", dest / "dist", dest / "site"
    for f in _source_files(repo):
        (src / f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(repo / f, src / f)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    isolation = ["--no-build-isolation"] if _build_deps_installed(src / "pyproject.toml") else []   # else pip fetches them
    r = subprocess.run(pip + ["wheel", "--no-deps", *isolation, "-w", str(dist), str(src)], capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f"building the wheel failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    wheel, = dist.glob("minbert_nb-*.whl")
    shutil.copytree(STANDINS, dest / "standins", ignore=shutil.ignore_patterns("__pycache__"))   # the kernel touches no file of the checkout
    r = subprocess.run(pip + ["install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)], capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f"installing the wheel failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return site


# ------------------------------------------------------------------------------------------------- one notebook
@dataclass
class CellFailure:
    index: int        # position among all the notebook's cells
    cell_id: str
    line: str         # the cell's first line of code
    ename: str
    evalue: str
    traceback: str

    def __str__(self):
        return f"cell {self.index} (id {self.cell_id}, `{self.line}`): {self.ename}: {self.evalue}"


@dataclass
class Result:
    notebook: str
    ran: list[int] = field(default_factory=list)        # indices of the cells run
    skipped: list[int] = field(default_factory=list)    # code cells not run (flags)
    failures: list[CellFailure] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)    # the stand-ins' log, each with "cell" (index) where known
    probe: dict = field(default_factory=dict)
    seconds: float = 0.0
    sources: dict = field(default_factory=dict)         # index → source of every code cell

    def requests(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["kind"] == kind]

    def summary(self) -> str:
        "What ran and what it asked for, one line per kind."
        fmt = {"model": lambda e: f"{e['repo_id']}" + ("" if e.get("ok") else " (refused)"),
               "data": lambda e: f"{e['path']}{'/' + e['name'] if e.get('name') else ''}[{e['split']}]" + ("" if e.get("ok") else " (refused)"),
               "offline": lambda e: "offline checkpoint",
               "file": lambda e: ("sample/" if e.get("sample") else "") + Path(e["path"]).name,
               "leak": lambda e: e["path"], "colab": lambda e: e["what"]}
        lines = [f"{self.notebook}: {len(self.ran)} cells run, {len(self.skipped)} skipped, {len(self.failures)} failed, {self.seconds:.0f} s"]
        for kind, f in fmt.items():
            by_cell: dict = {}
            for e in self.requests(kind): by_cell.setdefault(e.get("cell"), []).append(f(e))
            if by_cell:
                lines.append(f"  {kind}: " + "; ".join(f"cell {c}: " + ", ".join(dict.fromkeys(v)) for c, v in by_cell.items()))
        return "\n".join(lines)


def _directives(src: str) -> dict[str, str]:
    "nbdev directives (`#| name value`) at the top of a cell."
    out = {}
    for line in src.splitlines():
        s = line.strip()
        if not s: continue
        if not s.startswith("#|"): break
        words = s[2:].strip().split(None, 1)
        if words: out[words[0].rstrip(":").lower()] = words[1].strip() if len(words) > 1 else ""
    return out


def skipped(src: str, flags=SKIP) -> bool:
    d = _directives(src)
    return any(f in d for f in flags) or d.get("eval", "").lower() == "false"


def kernel_env(site: Path, work: Path, log: Path) -> dict:
    "A clean environment for the kernel (see the module docstring)."
    env = {k: os.environ[k] for k in ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TERM", "SYSTEMROOT") if k in os.environ}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    (work / "hf").mkdir(exist_ok=True)
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(site.parent / "standins")]), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1",
               HF_HOME=str(work / "hf"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               COLAB_CHECK_LOG=str(log), COLAB_CHECK_REPO=str(REPO), COLAB_CHECK_SITE=str(site), COLAB_CHECK_BLOCK=",".join(DEV_ONLY))
    return env


def run_notebook(nb_path, site: Path, workroot: Path, flags=SKIP, cell_timeout: float = 600) -> Result:
    "Run `nb_path` alone in an empty folder under `workroot`, in a fresh kernel with the Colab stand-ins."
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    nb_path = Path(nb_path)
    work = Path(workroot) / nb_path.stem
    shutil.rmtree(work, ignore_errors=True)
    folder = work / "content"          # Colab's working folder is /content; the notebook is alone in it
    folder.mkdir(parents=True)
    shutil.copy2(nb_path, folder / nb_path.name)
    log = work / "requests.jsonl"; log.touch()
    kdir = work / "kernels" / "colabcheck"; kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                                  "display_name": "Colab check", "language": "python"}))
    nb = nbformat.read(folder / nb_path.name, as_version=4)
    res = Result(nb_path.name, sources={i: c.source for i, c in enumerate(nb.cells) if c.cell_type == "code"})
    km = KernelManager(kernel_name="colabcheck", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(work / "kernels")]),
                       transport="ipc", ip=str(work / "kernel"))   # local sockets: no TCP ports, no plain-text warning
    client = NotebookClient(nb, km=km, timeout=cell_timeout, allow_errors=True, interrupt_on_timeout=False,
                            record_timing=False, resources={"metadata": {"path": str(folder)}})
    counts, probe_count = {}, None
    t0 = time.time()
    try:
        with client.setup_kernel(env=kernel_env(site, work, log), cwd=str(folder)):
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code": continue
                if skipped(cell.source, flags): res.skipped.append(i); continue
                res.ran.append(i)
                try:
                    client.execute_cell(cell, i)
                except (CellTimeoutError, DeadKernelError) as e:
                    res.failures.append(CellFailure(i, cell.get("id", ""), _first_line(cell.source), type(e).__name__, str(e)[:500], ""))
                    break
                if cell.get("execution_count") is not None: counts[cell.execution_count] = i
                for o in cell.get("outputs", []):
                    if o.get("output_type") == "error":
                        tb = _ANSI.sub("", "\n".join(o.get("traceback", [])))
                        res.failures.append(CellFailure(i, cell.get("id", ""), _first_line(cell.source), o["ename"], o["evalue"], tb))
            else:
                nb.cells.append(nbformat.v4.new_code_cell("import colab_standins as _cs; _cs.probe(globals())"))
                try: client.execute_cell(nb.cells[-1], len(nb.cells) - 1); probe_count = nb.cells[-1].execution_count
                finally: nb.cells.pop()
    finally:                           # the client does not own `km`: the kernel is ours to stop
        if km.has_kernel: km.shutdown_kernel(now=True)
    res.seconds = time.time() - t0
    events = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    res.probe = next((e for e in events if e["kind"] == "probe"), {})
    # the shell's execution_count while a cell runs, minus the count in its reply: measured by the probe (1 with IPython 9)
    shift = res.probe["count"] - probe_count if res.probe.get("count") is not None and probe_count is not None else 1
    for e in events:
        if e["kind"] == "probe": continue
        e["cell"] = counts.get(e["count"] - shift) if e.get("count") is not None else None
        res.events.append(e)
    return res


def _first_line(src: str) -> str:
    code = [l for l in src.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    return code[0].strip()[:100] if code else ""


# ------------------------------------------------------------------------------------------------------ the verdict
def origin_problems(res: Result, site: Path) -> list[str]:
    "`minbert_nb` not from the wheel, the setup cell not on its Colab path, hidden packages imported."
    p, probs = res.probe, []
    if not p: return [f"{res.notebook}: no probe after the run (the kernel did not reach the end)"]
    f = p.get("minbert_file") or ""
    if not f: probs.append(f"{res.notebook}: minbert_nb was never imported")
    elif not Path(f).resolve().is_relative_to(site.resolve()): probs.append(f"{res.notebook}: minbert_nb came from {f}, not from the wheel in {site}")
    if Path(f).resolve().is_relative_to(REPO): probs.append(f"{res.notebook}: minbert_nb was imported from the checkout ({f})")
    if not str(p.get("dist", "")).startswith(str(site)): probs.append(f"{res.notebook}: the minbert-nb metadata is not the wheel's ({p.get('dist')})")
    if p.get("editable"): probs.append(f"{res.notebook}: the editable finder is active: {p['editable']}")
    if p.get("blocked_imported"): probs.append(f"{res.notebook}: dev-only packages imported: {p['blocked_imported']}")
    env = p.get("env")
    if env is None: probs.append(f"{res.notebook}: no `env` from the setup cell")
    elif (env.get("on_colab"), env.get("model"), env.get("data")) != (True, MODEL_ID, "hub"):
        probs.append(f"{res.notebook}: the setup cell picked {env}, not on_colab/{MODEL_ID}/hub")
    if not any(e.get("what") == "output.enable_custom_widget_manager" for e in res.requests("colab")):
        probs.append(f"{res.notebook}: google.colab.output.enable_custom_widget_manager() was not called")
    return probs


def request_problems(res: Result) -> list[str]:
    "Hub requests that Colab would not serve or that miss bert-base-uncased / the Hub data, and files read from outside."
    from minbert_nb.data import HUB_SOURCES
    sources = {(s.path, s.name) for s in HUB_SOURCES.values()}
    nb, probs = res.notebook, []
    at = lambda e: f"{nb} cell {e.get('cell')} (`{e.get('line', '?')}`)"
    for e in res.requests("model"):
        if e["repo_id"] != MODEL_ID: probs.append(f"{at(e)}: asked the Hub for model {e['repo_id']!r}, not {MODEL_ID!r}")
    for e in res.requests("data"):
        failed = "" if e.get("ok") else f"load_dataset({e['path']!r}, {e.get('name')!r}, split={e['split']!r}) failed: {e.get('error')}"
        if (e["path"], e.get("name")) not in sources:
            probs.append(f"{at(e)}: asked for dataset {e['path']}/{e.get('name')}, not one of HUB_SOURCES" + (f" ({failed})" if failed else ""))
        elif failed: probs.append(f"{at(e)}: {failed}")
    for e in res.requests("leak"): probs.append(f"{at(e)}: opened {e['path']}, a file of the checkout or of ../shared (Colab has neither)")
    scratch = [Path(p) for p in (res.probe.get("tmp"), res.probe.get("cwd")) if p]   # files the notebook wrote itself
    for e in res.requests("file"):
        if not e.get("sample") and not any(Path(e["path"]).is_relative_to(d) for d in scratch):
            probs.append(f"{at(e)}: read the local task file {e['path']}")
    failing = {f.index for f in res.failures}
    for i in res.ran:
        src, mine = res.sources[i], lambda k: [e for e in res.requests(k) if e.get("cell") == i]
        if i in failing: continue         # reported as a failure already
        if MODEL_CALL.search(src):
            if not any(e["repo_id"] == MODEL_ID for e in mine("model")):
                probs.append(f"{nb} cell {i}: passes env.model to a loader but did not ask the Hub for {MODEL_ID}")
            if mine("offline") and not OFFLINE_EXPLICIT.search(src):
                probs.append(f"{nb} cell {i}: passes env.model to a loader but loaded the offline checkpoint")
        if DATA_CALL.search(src):
            if not mine("data"): probs.append(f"{nb} cell {i}: passes env.data to a loader but did not ask the Hub for data")
            if any(e.get("sample") for e in mine("file")): probs.append(f"{nb} cell {i}: passes env.data to a loader but read the bundled sample")
    return probs


def offline_uses(res: Result) -> dict[int, str]:
    "Cells that used the offline checkpoint: index → the line that asked (allowed where the cell does not pass env.model)."
    return {e.get("cell"): e.get("line", "") for e in res.requests("offline")}


def failure_report(res: Result, tb_lines: int = 30) -> str:
    "Every failing cell with the tail of its traceback; the first is the likely cause of the rest."
    out = []
    for k, f in enumerate(res.failures):
        tb = "\n".join(f.traceback.splitlines()[-tb_lines:])
        out.append(f"{res.notebook} {f}" + (" [the first failure]" if k == 0 and len(res.failures) > 1 else "") + (f"\n{tb}" if tb else ""))
    return "\n\n".join(out)


def main(argv=None):
    import argparse, tempfile
    ap = argparse.ArgumentParser(description="Run lesson notebooks as Colab would (see tests/test_colab_check.py).")
    ap.add_argument("notebooks", nargs="*", help="default: every nbs/NN_*.ipynb")
    ap.add_argument("--slow", action="store_true", help="also run the `#| slow` cells (CPU sizes of env.size)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    nbs = [Path(p) for p in a.notebooks] or lessons()
    flags = tuple(f for f in SKIP if not (a.slow and f == "slow"))
    with tempfile.TemporaryDirectory(prefix="colab-check-") as d:
        t = time.time(); site = build_site(REPO, Path(d) / "wheel"); print(f"wheel built and installed in {time.time() - t:.0f} s", flush=True)
        results = []
        for p in nbs:
            r = run_notebook(p, site, Path(d) / "runs", flags=flags); results.append(r)
            print(r.summary())
            for line in origin_problems(r, site) + request_problems(r): print("  PROBLEM", line)
            if r.failures: print(failure_report(r, 12))
            print(flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps([{**r.__dict__, "failures": [f.__dict__ for f in r.failures]} for r in results], indent=1, default=str))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
