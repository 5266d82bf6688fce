"""The run's report, from the variant manifests alone: report.json, report.md and accuracy_vs_size.png.

Accuracies carry their 95 % Wilson intervals; each variant's call accuracy is compared with fp16's on the
same cases (difference and exact McNemar p, ``pipelines.stats``); the fidelity stage's KL divergence and
top-1 agreement on answer tokens sit beside them, and the plot's third panel draws that KLD against
bits per weight.

report.json maps each variant dir name to one flat entry (schema: docs/PIPELINE.md). Every figure is
the manifest's own definition (``invoker.manifest.Manifest``): the gated suite, the weight bytes and
bits per weight (8 × bytes of the weight files — ``*.safetensors``, ``*.bin``, the model ``.gguf``, not
``imatrix.gguf`` — / the source's parameter count, so embeddings and other tensors kept in fp16 count
at their real cost).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from convert.formats import BASELINE
from invoker.files import atomic_file, write_json_atomic, write_text_atomic
from invoker.manifest import MANIFEST_NAME, Manifest, load_manifest
from pipelines.metrics import paired_outcomes
from pipelines.stats import paired_comparison

if TYPE_CHECKING:
    from pipelines.recipe import VariantSpec

REPORT_FILES = ("report.md", "report.json", "accuracy_vs_size.png")
METRICS = ("call_accuracy", "name_accuracy", "json_valid_rate", "schema_valid_rate", "relevance_accuracy", "output_valid_rate")


def variant_dirs(out_dir: Path) -> list[Path]:
    """The dirs of ``out_dir`` that hold a manifest, fp16 first, then by name."""
    dirs = [p for p in Path(out_dir).iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()]
    return sorted(dirs, key=lambda p: (p.name != BASELINE.name, p.name))


def report_rows(*, out_dir: Path, suite: str | None = None) -> dict[str, dict]:
    """``{dir name: entry}`` for every variant dir of ``out_dir``, on ``suite`` (default: the gated suite, as
    fp16's manifest records it); deltas are against fp16."""
    manifests = {d.name: load_manifest(d) for d in variant_dirs(out_dir)}
    base = manifests.get(BASELINE.name)
    if suite is None:
        suite = next((m.gated_suite for m in manifests.values() if m.gated_suite), None)
    base_metrics = base.metrics(suite) if base and suite else {}
    return {name: report_entry(manifest=m, suite=suite, base_metrics=base_metrics) for name, m in manifests.items()}


def report_entry(*, manifest: Manifest, suite: str | None, base_metrics: dict) -> dict:
    metrics = manifest.metrics(suite) if suite else {}
    entry = {
        "format": manifest.format,
        "variant": manifest.variant,
        "calibration_set": manifest.calibration.get("set"),  # a named set: gguf:Q4_K_M@generic
        "bits_per_weight": manifest.bits_per_weight,
        "size_bytes": manifest.size_bytes,
        "weight_bytes": manifest.weight_bytes,
        "parameters": manifest.parameters,
        "suite": suite,
        "compute_dtype": metrics.get("compute_dtype"),  # what the eval's runtime multiplied in
        "n": metrics.get("n"),
        **{key: metrics.get(key) for key in METRICS},
    }
    entry["intervals"] = {key: (metrics.get("intervals") or {}).get(key) for key in METRICS}
    for key in ("call_accuracy", "name_accuracy"):
        value, reference = metrics.get(key), base_metrics.get(key)
        entry[f"delta_{key}"] = round(value - reference, 6) if value is not None and reference is not None else None
        pairs = paired_outcomes(metrics, base_metrics, key) if manifest.format != BASELINE.name else None
        entry[f"paired_{key}"] = paired_comparison(*pairs).to_dict() if pairs and pairs[0] else None
    answer = manifest.fidelity.get("answer") or {}
    entry["fidelity"] = {key: answer.get(key) for key in ("mean_kl", "p99_kl", "top1_agreement", "delta_loglik_per_token")}
    entry["eval"] = {name: {key: result.get(key) for key in ("n", *METRICS)} for name, result in manifest.eval.items()}
    entry["bench"] = {device: bench_entry(result) for device, result in manifest.bench.items()}
    entry["verified"] = manifest.verified
    entry["reason"] = manifest.gate.get("reason")
    return entry


def bench_entry(result: dict) -> dict:
    if "error" in result:
        return {"error": result["error"]}
    return {"prompt_tok_s": result.get("prompt_tok_s"), "decode_tok_s": result.get("decode_tok_s"),
            "threads": result.get("threads"), "runtime": result.get("runtime"),
            "cpu": (result.get("hardware") or {}).get("cpu")}


def write_report(*, out_dir: Path, suite: str | None = None, variants: Iterable[VariantSpec] = ()) -> dict[str, dict]:
    """Write report.json, report.md and accuracy_vs_size.png into ``out_dir``; returns the rows. ``variants``: the
    run's typed variants, whose ``ablation_of`` sets an ablation beside what it ablates ("Calibration")."""
    out_dir = Path(out_dir)
    rows = report_rows(out_dir=out_dir, suite=suite)
    write_json_atomic(out_dir / "report.json", rows)
    ablations = {v.dir_name: v.ablation_of for v in variants}
    write_text_atomic(out_dir / "report.md", render_markdown(rows, model=out_dir.name, ablations=ablations))
    plot_accuracy_vs_size(rows, path=out_dir / "accuracy_vs_size.png", model=out_dir.name)
    return rows


def devices(rows: dict[str, dict]) -> list[str]:
    return sorted({device for row in rows.values() for device in row["bench"]})


def table_cells(rows: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the report table (shared by report.md and the terminal table)."""
    header = ["variant", "format (computes in)", "bits/weight", "size", "call acc [95% CI]", "Δ fp16 (McNemar p)", "name acc (Δ fp16)",
              "JSON valid", "relevance", "KLD answer (99%)", "top-1"]
    for device in devices(rows):
        header += [f"prompt tok/s ({device})", f"decode tok/s ({device})"]
    header.append("verified")
    cells = []
    for name, row in rows.items():
        fidelity = row["fidelity"]
        fmt = row["format"] + (f" ({row['compute_dtype']})" if row.get("compute_dtype") else "")
        line = [name, fmt, _num(row["bits_per_weight"], 2), _size(row["size_bytes"]),
                rate_text(row["call_accuracy"], row["intervals"].get("call_accuracy")),
                "—" if name == BASELINE.name else paired_text(row["paired_call_accuracy"], row["delta_call_accuracy"]),
                _with_delta(row["name_accuracy"], row["delta_name_accuracy"], baseline=name == BASELINE.name),
                _num(row["json_valid_rate"], 3), _num(row["relevance_accuracy"], 3),
                "—" if fidelity["mean_kl"] is None else f"{fidelity['mean_kl']:.4f} ({fidelity['p99_kl']:.3f})",
                _num(fidelity["top1_agreement"], 3)]
        for device in devices(rows):
            bench = row["bench"].get(device) or {}
            line += [_num(bench.get("prompt_tok_s"), 0), _num(bench.get("decode_tok_s"), 0)]
        line.append("yes" if row["verified"] else "no")
        cells.append(line)
    return header, cells


def render_markdown(rows: dict[str, dict], *, model: str, ablations: Mapping[str, str | None] | None = None) -> str:
    header, cells = table_cells(rows)
    first = next(iter(rows.values()), {})
    lines = [f"# {model}: quantized variants", ""]
    if first:
        lines += [f"Eval suite `{first['suite']}` ({first['n']} cases), greedy. Accuracies with their 95 % Wilson "
                  "intervals; Δ is the difference from fp16 in absolute points, on the same cases, with the exact "
                  "McNemar test's p (p < 0.05: the sample resolves the difference); KLD is the mean KL divergence "
                  "from fp16 on answer tokens (and its 99th percentile), top-1 the share of answer positions where "
                  f"the variant's likeliest token is fp16's (fidelity stage); bits/weight = 8 × weight-file bytes / "
                  f"{first['parameters']} parameters; size is every file of the variant dir.", ""]
    lines += _table_lines(header, cells)
    others = [suite for suite in first.get("eval", {}) if suite != first.get("suite")]
    if others:
        lines += ["", "## Other suites", "", "Call accuracy (name accuracy where the suite expects no call; cases in "
                  "brackets) per suite:", ""]
        lines += _table_lines(["variant", *others], [[name, *(suite_cell(row["eval"].get(suite) or {}) for suite in others)]
                                                     for name, row in rows.items()])
    groups = calibration_groups(rows, ablations=ablations or {})
    if groups:
        lines += ["", "## Calibration", "", "The same quantization calibrated on different data: `default` is the recipe's "
                  "`[calibration]` (for the shipped recipes: function calls in Invoker's own prompt format), a name is "
                  "one of its `[calibrations.<name>]` sets, `none` quantized without calibration data. Call accuracy "
                  "[95% CI] (Δ fp16, McNemar p) · mean answer-token KLD · top-1 agreement.", ""]
        found = {label for group in groups.values() for label in group}
        labels = [label for label in ("default", *sorted(found - {"default", "none"}), "none") if label in found]
        lines += _table_lines(["quantization", *labels], [
            [base, *(_calibration_cell(group.get(label)) for label in labels)] for base, group in groups.items()])
    lines += ["", "## Gate", ""]
    lines += [f"- `{name}`: {row['reason']}" for name, row in rows.items()]
    lines += ["", "![accuracy against size](accuracy_vs_size.png)", ""]
    return "\n".join(lines)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def plot_accuracy_vs_size(rows: dict[str, dict], *, path: Path, model: str) -> Path:
    """Write ``draw_accuracy_vs_size`` as a PNG (atomically)."""
    figure = draw_accuracy_vs_size(rows, model=model)
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def draw_accuracy_vs_size(rows: dict[str, dict], *, model: str):
    """Call and name accuracy (one panel each, with their 95 % intervals) against size on disk, and the mean
    answer-token KL divergence from fp16 against bits per weight: one marker per variant, named in one legend
    beside the panels rather than next to the points, so a dozen variants at nearly the same place stay
    readable; fp16 is a black star with a dashed line at its accuracy (Agg, no pyplot state)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 4.8), dpi=120, layout="constrained")
    panels = figure.subplots(1, 3)  # each panel its own range: differences stay visible
    variants = [name for name in rows if name != BASELINE.name]
    colors = [f"C{index % 10}" for index in range(len(variants))]
    markers = [MARKERS[(index // 10) % len(MARKERS)] for index in range(len(variants))]
    base = rows.get(BASELINE.name)
    for axes, key, title in zip(panels, ("call_accuracy", "name_accuracy"), ("call accuracy", "name accuracy")):
        for index, name in enumerate(variants):
            row = rows[name]
            if row[key] is not None:
                axes.scatter([row["size_bytes"] / 1e6], [row[key]], color=colors[index], s=45,
                             marker=markers[index], label=name, alpha=0.85, zorder=2)
                interval = (row.get("intervals") or {}).get(key)
                if interval:
                    axes.vlines(row["size_bytes"] / 1e6, interval[0], interval[1], color=colors[index], linewidth=1,
                                alpha=0.5, zorder=1)
        if base is not None and base[key] is not None:
            axes.scatter([base["size_bytes"] / 1e6], [base[key]], marker="*", s=250, color="black", zorder=3,
                         label=f"{BASELINE.name} (baseline)")
            axes.axhline(base[key], color="grey", linewidth=0.6, linestyle="--")
        axes.set_title(title + " (95 % interval)", fontsize=10)
        axes.set_xlabel("size on disk (MB)")
        axes.grid(True, alpha=0.3)
    panels[0].set_ylabel("accuracy")
    kld = panels[2]
    for index, name in enumerate(variants):
        value, bits = (rows[name].get("fidelity") or {}).get("mean_kl"), rows[name].get("bits_per_weight")
        if value is not None and bits is not None:
            kld.scatter([bits], [max(value, 1e-6)], color=colors[index], s=45, marker=markers[index], label=name,
                        alpha=0.85, zorder=2)
    kld.set_yscale("log")
    kld.set_title("distance from fp16 (answer tokens)", fontsize=10)
    kld.set_xlabel("bits per weight")
    kld.set_ylabel("mean KL divergence (nats)")
    kld.grid(True, alpha=0.3, which="both")
    handles = {}
    for axes in panels:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        figure.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8, title="variant",
                      title_fontsize=8, ncols=1 + len(handles) // 24)
    figure.suptitle(f"{model}: accuracy against size, KL divergence against bits per weight")
    return figure


def calibration_groups(rows: dict[str, dict], *, ablations: Mapping[str, str | None]) -> dict[str, dict[str, dict]]:
    """Rows of the same quantization that differ only in calibration data: ``{"gguf:Q4_K_M": {"default": row,
    "generic": row, "none": row}}`` — a ``@<set>`` variant, and a format's ablation without calibration
    (``ablations``: dir name -> the variant it ablates, from the typed variants) beside the variant it ablates;
    quantizations with one row are left out."""
    groups: dict[str, dict[str, dict]] = {}
    for name, row in rows.items():
        if name == BASELINE.name:
            continue
        ablated = ablations.get(name)
        label = "none" if ablated else row["calibration_set"] or "default"
        groups.setdefault(f"{row['format']}:{ablated or row['variant']}", {})[label] = row
    return {base: group for base, group in groups.items() if len(group) > 1}


def _calibration_cell(row: dict | None) -> str:
    if row is None:
        return "—"
    kld, top1 = row["fidelity"]["mean_kl"], row["fidelity"]["top1_agreement"]
    return (f"{rate_text(row['call_accuracy'], row['intervals'].get('call_accuracy'))} "
            f"({paired_text(row['paired_call_accuracy'], row['delta_call_accuracy'])}) · "
            f"{'—' if kld is None else f'{kld:.4f}'} · {_num(top1, 3)}")


def _table_lines(header: list[str], cells: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
            *("| " + " | ".join(line) + " |" for line in cells)]


def suite_cell(metrics: dict) -> str:
    value = metrics.get("call_accuracy")
    if value is None:
        value = metrics.get("name_accuracy")
    return "—" if value is None else f"{value:.3f} ({metrics.get('n')})"


def rate_text(value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f} [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else f"{value:.3f}"


def paired_text(paired: dict | None, delta: float | None) -> str:
    if paired is not None:
        return f"{paired['difference']:+.3f} (p={paired['p_value']:.2g})"
    return "—" if delta is None else f"{delta:+.3f}"


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _size(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def _with_delta(value: float | None, delta: float | None, *, baseline: bool) -> str:
    if value is None:
        return "—"
    if baseline or delta is None:
        return f"{value:.3f}"
    return f"{value:.3f} ({delta:+.3f})"
