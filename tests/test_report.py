"""The report from hand-made manifests: report.json rows, report.md table, the plot."""

from __future__ import annotations

import json
from pathlib import Path

from invoker.manifest import write_manifest
from pipelines.recipe import parse_variants
from pipelines.report import write_report

PARAMETERS = 1_000_000


def make_variant(out_dir: Path, name: str, *, fmt: str, variant: str, files: dict[str, int], call: float, names: float,
                 verified: bool, reason: str, decode: float, extra_eval: dict | None = None, fidelity: dict | None = None) -> None:
    directory = out_dir / name
    directory.mkdir(parents=True)
    write_manifest(directory, {
        "format": fmt, "variant": variant,
        "source": {"model": "models/tiny", "sha256": "ab" * 32, "parameters": PARAMETERS},
        "calibration": {}, "tools": {},
        "files": {file: {"sha256": "0" * 64, "bytes": size} for file, size in files.items()},
        "eval": {"synthetic": {"n": 10, "call_accuracy": call, "name_accuracy": names, "json_valid_rate": 0.95,
                               "schema_valid_rate": 0.9, "relevance_accuracy": 0.5, "output_valid_rate": 0.9,
                               **(extra_eval or {})}},
        "bench": {"cpu": {"prompt_tok_s": 1000.0, "decode_tok_s": decode, "threads": 2, "runtime": "x",
                          "hardware": {"cpu": "Test CPU"}}},
        "verified": verified, "gate": {"reason": reason},
        **({"fidelity": fidelity} if fidelity else {}),
    })


def test_report_has_a_row_per_variant_with_bits_size_deltas_and_verdict(tmp_path):
    out = tmp_path / "tiny"
    cases = "ab" * 32
    make_variant(out, "fp16", fmt="fp16", variant="fp16", files={"model.safetensors": 2_000_000, "config.json": 1000},
                 call=0.50, names=0.80, verified=True, reason="verified: baseline", decode=100.0,
                 extra_eval={"intervals": {"call_accuracy": [0.2366, 0.7634]},
                             "outcomes": {"cases_sha256": cases, "call_accuracy": "1111100000"}})
    make_variant(out, "gguf-Q4_K_M", fmt="gguf", variant="Q4_K_M",
                 files={"tiny-Q4_K_M.gguf": 600_000, "imatrix.gguf": 50_000, "Modelfile": 500},
                 call=0.40, names=0.75, verified=False, reason="not verified: call_accuracy 0.400 < 0.450", decode=300.0,
                 extra_eval={"intervals": {"call_accuracy": [0.1682, 0.6873]},
                             "outcomes": {"cases_sha256": cases, "call_accuracy": "1111000000"}},
                 fidelity={"answer": {"mean_kl": 0.0123, "p99_kl": 0.25, "top1_agreement": 0.97,
                                      "delta_loglik_per_token": -0.01}})
    (out / ".gguf-Q8_0.tmp-1234").mkdir()  # a killed run's temp dir is not a variant

    rows = write_report(out_dir=out, suite="synthetic")

    report = json.loads((out / "report.json").read_text())
    assert report == rows
    assert list(report) == ["fp16", "gguf-Q4_K_M"]
    q4 = report["gguf-Q4_K_M"]
    assert q4["format"] == "gguf" and q4["variant"] == "Q4_K_M"
    assert q4["bits_per_weight"] == 4.8  # 8 × 600 000 bytes of the model .gguf (imatrix excluded) / 1e6 parameters
    assert q4["size_bytes"] == 650_500
    assert q4["delta_call_accuracy"] == -0.1 and q4["delta_name_accuracy"] == -0.05
    assert q4["verified"] is False and q4["reason"].startswith("not verified: call_accuracy")
    assert q4["bench"]["cpu"]["decode_tok_s"] == 300.0
    assert q4["paired_call_accuracy"] == {"n": 10, "reference_rate": 0.5, "variant_rate": 0.4, "difference": -0.09999999999999998,
                                          "reference_only": 1, "variant_only": 0, "p_value": 1.0}
    assert q4["fidelity"]["mean_kl"] == 0.0123 and report["fp16"]["fidelity"]["mean_kl"] is None
    assert report["fp16"]["bits_per_weight"] == 16.0

    markdown = (out / "report.md").read_text()
    assert "| fp16 | fp16 | 16.00 | 2.0 MB | 0.500 [0.24, 0.76] | — | 0.800 | 0.950 | 0.500 | — | — | 1000 | 100 | yes |" in markdown
    assert ("| gguf-Q4_K_M | gguf | 4.80 | 0.7 MB | 0.400 [0.17, 0.69] | -0.100 (p=1) | 0.750 (-0.050) | 0.950 | 0.500 | "
            "0.0123 (0.250) | 0.970 | 1000 | 300 | no |") in markdown
    assert "prompt tok/s (cpu)" in markdown and "decode tok/s (cpu)" in markdown
    assert "- `gguf-Q4_K_M`: not verified: call_accuracy 0.400 < 0.450" in markdown

    png = (out / "accuracy_vs_size.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert not list(out.glob(".*.tmp*.png"))


def test_a_variant_without_eval_or_parameters_reports_dashes_not_errors(tmp_path):
    out = tmp_path / "m"
    make_variant(out, "fp16", fmt="fp16", variant="fp16", files={"model.safetensors": 10}, call=0.5, names=0.5,
                 verified=True, reason="ok", decode=1.0)
    directory = out / "awq-4bit-g128"
    directory.mkdir()
    write_manifest(directory, {"format": "awq", "variant": "4bit-g128", "source": {"model": "m"}, "calibration": {},
                               "tools": {}, "files": {"model.safetensors": {"sha256": "0" * 64, "bytes": 5}},
                               "eval": {}, "bench": {"cuda": {"error": "CUDA is not available"}},
                               "verified": False, "gate": {"reason": "not verified: not gated yet"}})
    rows = write_report(out_dir=out, suite="synthetic")
    assert rows["awq-4bit-g128"]["bits_per_weight"] is None
    assert rows["awq-4bit-g128"]["call_accuracy"] is None
    assert rows["awq-4bit-g128"]["bench"] == {"cuda": {"error": "CUDA is not available"}}
    assert "| awq-4bit-g128 | awq | — | 0.0 MB | — | — | — | — | — | — | — | — | — | — | — | no |" in (out / "report.md").read_text()


def test_the_plot_stays_readable_with_a_dozen_variants_at_nearly_the_same_place():
    """Names sit in one legend beside the panels, never next to the points: no text overlaps another or the data."""
    from pipelines.report import draw_accuracy_vs_size

    names = ["fp16"] + [f"gguf-Q{bits}_K_{kind}" for bits in (2, 3, 4, 5, 6) for kind in ("S", "M")] + \
            ["gptq-4bit-g128", "awq-4bit-g128"]
    rows = {name: {"size_bytes": 4_000_000 + index, "call_accuracy": 0.04, "name_accuracy": 0.5 + index / 1000,
                   "bits_per_weight": 4.5 + index / 100, "fidelity": {"mean_kl": 0.01 + index / 1000}}
            for index, name in enumerate(names)}
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = draw_accuracy_vs_size(rows, model="tiny")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # lays the figure out (constrained layout)
    renderer = canvas.get_renderer()
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [*names[1:], "fp16 (baseline)"]  # each named once
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in [legend.get_title(), *legend.get_texts()]]
    for index, (name, box) in enumerate(boxes):
        for other_name, other in boxes[index + 1:]:
            assert not box.overlaps(other), (name, other_name)
    assert [len(axes.collections) for axes in figure.axes] == [13, 13, 12]  # fp16 has no KLD: its own reference
    for axes in figure.axes:
        assert not axes.texts  # no name next to a point
        assert not legend.get_window_extent(renderer).overlaps(axes.get_window_extent(renderer))


def test_the_calibration_section_sets_one_quantization_side_by_side_by_calibration_data(tmp_path):
    out = tmp_path / "study"
    make_variant(out, "fp16", fmt="fp16", variant="fp16", files={"model.safetensors": 2_000_000}, call=0.9, names=0.9,
                 verified=True, reason="verified: baseline", decode=1.0)
    for name, variant, calibration, call in (("gguf-Q4_K_M", "Q4_K_M", {"sha256": "a", "set": None}, 0.88),
                                             ("gguf-Q4_K_M@generic", "Q4_K_M", {"sha256": "b", "set": "generic"}, 0.80),
                                             ("gguf-Q4_K_M-noimatrix", "Q4_K_M-noimatrix", {}, 0.70),
                                             ("gguf-Q8_0", "Q8_0", {}, 0.9)):
        make_variant(out, name, fmt="gguf", variant=variant, files={"m.gguf": 600_000}, call=call, names=0.9,
                     verified=True, reason="verified", decode=1.0)
        manifest = json.loads((out / name / "manifest.json").read_text())
        write_manifest(out / name, {**manifest, "calibration": calibration})
    variants = parse_variants(["gguf:Q4_K_M", "gguf:Q4_K_M@generic", "gguf:Q4_K_M-noimatrix", "gguf:Q8_0"],
                              sets=("generic",))  # the typed variants say which one is an ablation of which
    markdown = write_report(out_dir=out, suite="synthetic", variants=variants) and (out / "report.md").read_text()
    section = markdown.split("## Calibration")[1].split("## Gate")[0]
    assert "| quantization | default | generic | none |" in section
    assert "| gguf:Q4_K_M | 0.880 (-0.020) · — · — | 0.800 (-0.100) · — · — | 0.700 (-0.200) · — · — |" in section
    assert "Q8_0" not in section  # one row only: nothing to compare
