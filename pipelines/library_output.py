"""The libraries' own chatter goes to the run's log file, so the terminal shows only the pipeline's lines.

A pipeline run imports torch, torchao, transformers and friends in its own process and in every worker;
left alone they print, between the stage bars: torchao's "Failed to load …/_C_mxfp8….so" (a logger
warning), torch's ``_pytree`` deprecation warnings (torch's logging, with its own stderr handler),
Python ``FutureWarning``/``UserWarning``s, and transformers' "Loading weights" progress bars.
``library_output_to(log_path)`` sends, for the run, the log records and warnings to ``log_path``
(appended, with a time and the logger's name) and turns the libraries' progress bars off; it sets
``$INVOKER_PIPELINE_LOG`` so that spawned workers, which inherit the environment, do the same
(``from_environment``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

LOG_ENV = "INVOKER_PIPELINE_LOG"
PROGRESS_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"


@contextlib.contextmanager
def library_output_to(log_path: Path) -> Iterator[None]:
    """Within the block, library log records and warnings of this process (and of the workers it spawns) go to
    ``log_path``; afterwards everything is as it was."""
    saved_env = {name: os.environ.get(name) for name in (LOG_ENV, PROGRESS_ENV)}
    root = logging.getLogger()
    saved_level, saved_capture = root.level, logging.getLogger("py.warnings").handlers[:]
    handler, redirected = route_library_output(log_path)
    try:
        yield
    finally:
        for stream_handler, stream in redirected:
            stream_handler.setStream(stream)
        root.removeHandler(handler)
        handler.close()
        root.setLevel(saved_level)
        logging.captureWarnings(False)
        logging.getLogger("py.warnings").handlers[:] = saved_capture
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        from huggingface_hub.utils import enable_progress_bars
        from transformers.utils import logging as transformers_logging

        if saved_env[PROGRESS_ENV] is None:
            enable_progress_bars()
            transformers_logging.enable_progress_bar()


def route_library_output(log_path: Path) -> tuple[logging.Handler, list[tuple[logging.StreamHandler, object]]]:
    """Send this process's library log records and warnings to ``log_path`` and turn library progress bars off;
    returns the new handler and the torch handlers redirected, with the stream each had."""
    import torch  # noqa: F401  (torch installs its own stderr handler when imported: redirect it too)
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()  # its "Loading weights" bars; read from the environment at import
    os.environ[LOG_ENV] = str(log_path)
    os.environ[PROGRESS_ENV] = "1"  # so workers, which import these afresh, start with their bars off
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    redirected = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] == "torch":
            for stream_handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
                redirected.append((stream_handler, stream_handler.setStream(handler.stream)))
    return handler, redirected


def from_environment() -> None:
    """In a spawned worker: route its library output like its parent's (when the parent did), for its lifetime."""
    path = os.environ.get(LOG_ENV)
    if path:
        route_library_output(Path(path))
