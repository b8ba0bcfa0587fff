"""The web demo: ask a question about a video, see the answer and what UniSparse's attention selected.

Why it lives inside ``videoqa`` (and ``demo/app.py`` at the repository root is only a thin entry):
``pyproject.toml`` packages ``videoqa*`` and ``unisparse*`` only, so code here is installed with the
project and ``videoqa demo`` works from any directory and from a wheel; a top-level ``demo``
package would exist only in a checkout.

Modules, in the direction the data flows:

- :mod:`.samples`: the bundled sample videos (``videoqa/assets/samples``) and a suggested question for some;
- :mod:`.handlers`: what the page's buttons call: checks the inputs, runs :func:`videoqa.answer`
  (dense, UniSparse or both) with progress, and turns every expected failure into one readable line;
- :mod:`.summary`: the answer and the measurements as Markdown;
- :mod:`.plots`: matplotlib figures: density per layer, the selected blocks of one layer and head;
- :mod:`.ui`: the Gradio page (:func:`build_app`) and the server (:func:`launch`);
- :mod:`.cli`: the ``videoqa demo`` subcommand.

Nothing here imports gradio until a page is built or a handler is used, so ``videoqa --help`` and
``videoqa info`` stay fast.
"""

__all__ = ["build_app", "launch"]

DEFAULT_MAX_UPLOAD_MB = 500.0  # largest upload accepted unless told (videoqa demo --max-upload-mb)


def __getattr__(name):
    if name in __all__:
        from . import ui

        return getattr(ui, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
