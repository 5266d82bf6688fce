"""The run's report, from the variant manifests alone: report.json, report.md and accuracy_vs_size.png.

report.json maps each variant dir name to one flat entry (schema: docs/PIPELINE.md). Every figure is
the manifest's own definition (``invoker.manifest.Manifest``): the gated suite, the weight bytes and
bits per weight (8 × bytes of the weight files — ``*.safetensors``, ``*.bin``, the model ``.gguf``, not
``imatrix.gguf`` — / the source's parameter count, so embeddings and other tensors kept in fp16 count
at their real cost).
"""

from __future__ import annotations

from pathlib import Path

from convert.formats import BASELINE
from invoker.files import atomic_file, write_json_atomic, write_text_atomic
from invoker.manifest import MANIFEST_NAME, Manifest, load_manifest

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
        "bits_per_weight": manifest.bits_per_weight,
        "size_bytes": manifest.size_bytes,
        "weight_bytes": manifest.weight_bytes,
        "parameters": manifest.parameters,
        "suite": suite,
        "n": metrics.get("n"),
        **{key: metrics.get(key) for key in METRICS},
    }
    for key in ("call_accuracy", "name_accuracy"):
        value, reference = metrics.get(key), base_metrics.get(key)
        entry[f"delta_{key}"] = round(value - reference, 6) if value is not None and reference is not None else None
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


def write_report(*, out_dir: Path, suite: str | None = None) -> dict[str, dict]:
    """Write report.json, report.md and accuracy_vs_size.png into ``out_dir``; returns the rows."""
    out_dir = Path(out_dir)
    rows = report_rows(out_dir=out_dir, suite=suite)
    write_json_atomic(out_dir / "report.json", rows)
    write_text_atomic(out_dir / "report.md", render_markdown(rows, model=out_dir.name))
    plot_accuracy_vs_size(rows, path=out_dir / "accuracy_vs_size.png", model=out_dir.name)
    return rows


def devices(rows: dict[str, dict]) -> list[str]:
    return sorted({device for row in rows.values() for device in row["bench"]})


def table_cells(rows: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the report table (shared by report.md and the terminal table)."""
    header = ["variant", "format", "bits/weight", "size", "call acc (Δ fp16)", "name acc (Δ fp16)", "JSON valid",
              "relevance"]
    for device in devices(rows):
        header += [f"prompt tok/s ({device})", f"decode tok/s ({device})"]
    header.append("verified")
    cells = []
    for name, row in rows.items():
        line = [name, row["format"], _num(row["bits_per_weight"], 2), _size(row["size_bytes"]),
                _with_delta(row["call_accuracy"], row["delta_call_accuracy"], baseline=name == BASELINE.name),
                _with_delta(row["name_accuracy"], row["delta_name_accuracy"], baseline=name == BASELINE.name),
                _num(row["json_valid_rate"], 3), _num(row["relevance_accuracy"], 3)]
        for device in devices(rows):
            bench = row["bench"].get(device) or {}
            line += [_num(bench.get("prompt_tok_s"), 0), _num(bench.get("decode_tok_s"), 0)]
        line.append("yes" if row["verified"] else "no")
        cells.append(line)
    return header, cells


def render_markdown(rows: dict[str, dict], *, model: str) -> str:
    header, cells = table_cells(rows)
    first = next(iter(rows.values()), {})
    lines = [f"# {model}: quantized variants", ""]
    if first:
        lines += [f"Eval suite `{first['suite']}` ({first['n']} cases); Δ is the difference from fp16 in absolute "
                  f"points; bits/weight = 8 × weight-file bytes / {first['parameters']} parameters; size is every "
                  "file of the variant dir.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
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
    """Call and name accuracy (one panel each) against size on disk: one marker per variant, named in one
    legend beside the panels rather than next to the points, so a dozen variants at nearly the same place
    stay readable; fp16 is a black star with a dashed line at its accuracy (Agg, no pyplot state)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.8), dpi=120, layout="constrained")
    panels = figure.subplots(1, 2, sharex=True)  # each panel its own accuracy range: differences stay visible
    variants = [name for name in rows if name != BASELINE.name]
    colors = [f"C{index % 10}" for index in range(len(variants))]
    base = rows.get(BASELINE.name)
    for axes, key, title in zip(panels, ("call_accuracy", "name_accuracy"), ("call accuracy", "name accuracy")):
        for index, name in enumerate(variants):
            if rows[name][key] is not None:
                axes.scatter([rows[name]["size_bytes"] / 1e6], [rows[name][key]], color=colors[index], s=45,
                             marker=MARKERS[(index // 10) % len(MARKERS)], label=name, alpha=0.85, zorder=2)
        if base is not None and base[key] is not None:
            axes.scatter([base["size_bytes"] / 1e6], [base[key]], marker="*", s=250, color="black", zorder=3,
                         label=f"{BASELINE.name} (baseline)")
            axes.axhline(base[key], color="grey", linewidth=0.6, linestyle="--")
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("size on disk (MB)")
        axes.grid(True, alpha=0.3)
    panels[0].set_ylabel("accuracy")
    handles = {}
    for axes in panels:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        figure.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8, title="variant",
                      title_fontsize=8, ncols=1 + len(handles) // 24)
    figure.suptitle(f"{model}: accuracy against size")
    return figure


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
