"""Stand-in for `google.colab.output`: the custom widget manager switches, as no-ops that record each call."""


def _record(what: str):
    import colab_standins
    colab_standins.record("colab", what=what)


def enable_custom_widget_manager():
    "Colab: let ipywidgets 8 render through Colab's custom widget manager. Here: recorded, nothing else."
    _record("output.enable_custom_widget_manager")


def disable_custom_widget_manager():
    "Colab: back to the built-in widget manager. Here: recorded, nothing else."
    _record("output.disable_custom_widget_manager")
