"""The docs and the CLI help say what the code does: every stage, every format's make target."""

from __future__ import annotations

import re
from pathlib import Path

from convert.formats import FORMATS
from pipelines.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]


def stage_names() -> list[str]:
    """The names a stage goes by in the docs: ``stage_shared_bases`` is ``<format>-base``."""
    return [{"shared_bases": "<format>-base"}.get(name, name)
            for name in (stage.__name__.removeprefix("stage_") for stage in STAGES)]


def test_the_pipeline_diagram_and_the_cli_help_name_every_stage_in_order():
    import argparse

    from pipelines.cli import add_quantize_command

    parser = argparse.ArgumentParser()
    add_quantize_command(parser.add_subparsers())
    description = parser._subparsers._group_actions[0].choices["quantize"].description
    diagram = (ROOT / "docs" / "PIPELINE.md").read_text(encoding="utf-8").split("```")[1]
    for text in (description, diagram):
        positions = [text.find(name) for name in stage_names()]
        assert -1 not in positions, (stage_names(), text)
        assert positions == sorted(positions), text


def test_every_format_has_its_make_target_and_the_docs_list_it():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = re.search(r"^((?:\w+ )+\w+): setup\n\t\$\(QUANTIZE\) --only \$@", makefile, flags=re.M).group(1).split()
    assert targets == list(FORMATS)
    listed = " | ".join(f"make {name}" for name in FORMATS)
    for doc in ("README.md", "docs/PIPELINE.md"):
        assert listed in (ROOT / doc).read_text(encoding="utf-8"), doc
