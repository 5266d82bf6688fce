"""The libraries' chatter goes to the run's log file, in the driver and in spawned workers; the terminal keeps
only the pipeline's own lines, and everything is as before once the run ends."""

from __future__ import annotations

import logging
import os
import warnings

from pipelines.library_output import LOG_ENV, PROGRESS_ENV, library_output_to
from pipelines.workers import run_isolated


def chatter(tag: str) -> str:
    """What torch, torchao, transformers and Python warnings print when a run loads a model, tagged."""
    import torch  # noqa: F401
    from transformers.utils import logging as transformers_logging

    logging.getLogger("torch.utils._pytree").warning("%s: register_constant() on Enum subclasses is deprecated", tag)
    logging.getLogger("torchao").warning("%s: Failed to load _C_mxfp8.so", tag)
    warnings.warn(f"{tag}: `is_gradient_checkpointing` is deprecated", FutureWarning, stacklevel=1)
    for _ in transformers_logging.tqdm(range(3), desc=f"{tag}: Loading weights"):
        pass
    return tag


def test_library_output_goes_to_the_log_in_the_driver_and_in_workers(tmp_path, capfd):
    log = tmp_path / "run.log"
    before = {name: os.environ.get(name) for name in (LOG_ENV, PROGRESS_ENV)}
    with library_output_to(log):
        chatter("driver")
        assert [result for _, result, _ in run_isolated(chatter, ["worker"], jobs_n=1)] == ["worker"]
    captured = capfd.readouterr()
    terminal, written = captured.out + captured.err, log.read_text()
    for tag in ("driver", "worker"):
        for line in ("register_constant()", "Failed to load _C_mxfp8.so", "`is_gradient_checkpointing` is deprecated"):
            assert f"{tag}: {line}" in written, written
            assert f"{tag}: {line}" not in terminal, terminal
        assert f"{tag}: Loading weights" not in terminal + written  # library progress bars are off
    # afterwards: the environment, the handlers and warnings as they were
    assert {name: os.environ.get(name) for name in (LOG_ENV, PROGRESS_ENV)} == before
    from transformers.utils import logging as transformers_logging

    assert transformers_logging.is_progress_bar_enabled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chatter("after")
    assert "after: Failed to load" not in log.read_text() and any("after:" in str(w.message) for w in caught)
