"""Stand-in for Colab's `google.colab` package, for minbert-nb's Colab check (tests/test_colab_check.py).

Only what the lessons touch: importing it makes `"google.colab" in sys.modules` true (Colab imports it when the kernel
starts; here `sitecustomize` does), and `output.enable_custom_widget_manager()` is a no-op that records the call.
Anything else a notebook asks of it raises AttributeError/ImportError, and the check reports that cell.
(`google` itself stays a namespace package, so `google.protobuf` and friends still import.)"""
from . import output

__all__ = ["output"]
