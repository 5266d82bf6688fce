"""Model cards for the published repos, generated from the variants' manifests (``pipelines/templates``).

``render_card`` fills ``templates/model_card.md.jinja`` through ``huggingface_hub.ModelCard.from_template``
with the YAML metadata (``ModelCardData``), the prompt format with an example (``render_prompt``),
the results table, the plot, the calibration recipe, the provided files and usage snippets that name
the repo's real files; ``validate_card`` checks the written card the way publish relies on.
"""

from __future__ import annotations

import json
from pathlib import Path

from invoker.examples import GET_TIME, GET_TIME_QUESTION
from invoker.prompt import render_assistant_turn, render_prompt

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md.jinja"
TAGS = {"gptq": ["gptq", "4-bit"], "awq": ["awq", "4-bit"], "gguf": ["gguf", "llama.cpp", "ollama"]}
LIBRARY = {"gptq": "transformers", "awq": "transformers", "gguf": "gguf"}
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin")
EXAMPLE_CALL = {"name": "get_time", "arguments": json.dumps({"location": "Singapore", "format": "12-hour"})}
RELATIONS = ("adapter", "merge", "quantized", "finetune")


def render_card(*, release, plan, plans, base_model: str, license_id: str) -> str:
    """The README.md of ``plan``'s repo; raises ``ValueError`` if the result would not validate."""
    from huggingface_hub import ModelCard

    card = ModelCard.from_template(
        card_data(plan=plan, base_model=base_model, license_id=license_id, namespace=plan.repo_id.split("/")[0]),
        template_path=str(TEMPLATE),
        title=plan.repo_id.split("/")[1],
        repo_id=plan.repo_id,
        format_name=plan.format.upper(),
        base_model=base_model,
        pipeline=pipeline_name(plan=plan),
        siblings=[p.repo_id for p in plans if p.repo_id != plan.repo_id],
        results=results_rows(release=release, plan=plan),
        suite=eval_suite(plan.variants[0].manifest),
        plot=release.plot is not None,
        prompt_example=render_prompt(GET_TIME_QUESTION, functions=[GET_TIME]),
        output_example=" " + render_assistant_turn(content=None, function_call=EXAMPLE_CALL) + "</s>",
        calibrations=calibration_sections(plan=plan),
        provenance=provenance(plan=plan),
        files=[{"name": f.path_in_repo, "size": human_bytes(f.bytes), "sha256": f.sha256} for f in plan.files],
        snippets=usage_snippets(plan=plan, model=release.model),
    )
    text = str(card)
    problems = validate_card(text)
    if problems:
        raise ValueError(f"model card of {plan.repo_id} does not validate: {'; '.join(problems)}")
    return text


def card_data(*, plan, base_model: str, license_id: str, namespace: str):
    from huggingface_hub import ModelCardData

    return ModelCardData(
        base_model=base_model,
        base_model_relation="quantized",
        license=license_id,
        library_name=LIBRARY[plan.format],
        pipeline_tag="text-generation",
        tags=[*TAGS[plan.format], "function-calling", "invoker", "invoker-pack"],
        quantized_by=namespace,
    )


def validate_card(text: str) -> list[str]:
    """Problems of a card's metadata, as ``"<key>: <problem>"`` ([] when it parses and every field is sound)."""
    from huggingface_hub import ModelCard

    try:
        data = ModelCard(text).data.to_dict()
    except (ValueError, TypeError) as err:
        return [f"metadata: {err}"]
    problems = []
    base = data.get("base_model")
    if not isinstance(base, str) or "/" not in base:
        problems.append(f"base_model: {base!r} is not a Hub model id")
    if data.get("base_model_relation") not in RELATIONS:
        problems.append(f"base_model_relation: {data.get('base_model_relation')!r} is not one of {', '.join(RELATIONS)}")
    for key in ("license", "library_name", "pipeline_tag", "quantized_by"):
        if not isinstance(data.get(key), str) or not data[key]:
            problems.append(f"{key}: missing")
    tags = data.get("tags")
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
        problems.append("tags: must be a non-empty list of strings")
    return problems


# --- results ------------------------------------------------------------------------------------


def eval_suite(manifest: dict) -> str | None:
    suites = sorted(manifest.get("eval") or {})
    return "synthetic" if "synthetic" in suites else (suites[0] if suites else None)


def results_rows(*, release, plan) -> list[dict]:
    """One row per variant of the repo, then the fp16 baseline, as formatted strings.

    Size: the weight files (model ``.gguf``/``.safetensors``/``.bin``, not the imatrix); bits/weight from
    report.json, else 8 × that size / the source's parameter count (report.py's definition).
    """
    suite = eval_suite(plan.variants[0].manifest)
    baseline = metric(release.fp16.manifest, suite, "call_accuracy") if release.fp16 else None
    rows = [result_row(release=release, variant=v, suite=suite, baseline=baseline) for v in plan.variants]
    if release.fp16 is not None:
        rows.append(result_row(release=release, variant=release.fp16, suite=suite, baseline=None))
    return rows


def result_row(*, release, variant, suite: str | None, baseline: float | None) -> dict:
    report = release.report.get(variant.name) or {}
    manifest = variant.manifest
    accuracy = metric(manifest, suite, "call_accuracy")
    delta = "" if baseline is None or accuracy is None else f" ({accuracy - baseline:+.3f})"
    size = weights_bytes(manifest)
    parameters = (manifest.get("source") or {}).get("parameters")
    bits = report.get("bits_per_weight") or (8 * size / parameters if parameters and size else None)
    return {
        "variant": "fp16 (reference)" if manifest["format"] == "fp16" else f"{manifest['format']} {manifest['variant']}",
        "size": human_bytes(size) if size else "—",
        "bits": f"{bits:.2f}" if isinstance(bits, (int, float)) else "—",
        "accuracy": "—" if accuracy is None else f"{accuracy:.3f}{delta}",
        "json_valid": fmt(metric(manifest, suite, "json_valid_rate")),
        "speed": speed(manifest.get("bench") or {}),
        "verified": "baseline" if manifest["format"] == "fp16" else ("yes" if manifest.get("verified") else "no"),
    }


def metric(manifest: dict, suite: str | None, key: str) -> float | None:
    value = ((manifest.get("eval") or {}).get(suite) or {}).get(key)
    return value if isinstance(value, (int, float)) else None


def weights_bytes(manifest: dict) -> int:
    return sum(entry["bytes"] for name, entry in manifest["files"].items()
               if name.endswith(WEIGHT_SUFFIXES) and not Path(name).name.startswith("imatrix"))


def speed(bench: dict) -> str:
    """Decode tokens/sec per device with the hardware named, e.g. ``41.2 (cpu: AMD EPYC 7B13, 2 threads)``."""
    parts = []
    for device, result in sorted(bench.items()):
        decode = result.get("decode_tok_s")
        if not isinstance(decode, (int, float)):
            continue
        hardware = result.get("hardware") or {}
        name = hardware.get("gpu") or hardware.get("cpu") or "unknown hardware"
        threads = f", {result['threads']} threads" if result.get("threads") else ""
        parts.append(f"{decode:.1f} ({device}: {name}{threads})".replace("|", "/"))
    return "; ".join(parts) or "—"


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def human_bytes(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


# --- how it was made ----------------------------------------------------------------------------


def calibration_sections(*, plan) -> list[dict]:
    """Each distinct calibration recipe of the repo's variants, with the variants that used it."""
    sections: dict[str, dict] = {}
    for variant in plan.variants:
        calibration = variant.manifest.get("calibration") or {}
        key = calibration.get("sha256") or ""
        section = sections.setdefault(key, {"variants": [], "spec": calibration.get("spec") or {},
                                            "sha256": calibration.get("sha256"),
                                            "counts": {k: calibration[k] for k in ("n_samples", "n_tokens", "n_documents")
                                                       if k in calibration}})
        section["variants"].append(variant.manifest["variant"])
    return list(sections.values())


def provenance(*, plan) -> dict:
    manifest = plan.variants[0].manifest
    source = manifest.get("source") or {}
    return {
        "source_model": source.get("model"),
        "source_revision": source.get("revision") or "not pinned (local dir)",
        "source_sha256": source.get("sha256"),
        "tools": ", ".join(f"{name} {version}" for name, version in sorted((manifest.get("tools") or {}).items())
                           if version),
        "quantization": [{"variant": v.manifest["variant"], "settings": quantization_settings(v.manifest)}
                         for v in plan.variants if quantization_settings(v.manifest)],
        "gates": [{"variant": v.manifest["variant"], "reason": (v.manifest.get("gate") or {}).get("reason", ""),
                   "thresholds": json.dumps((v.manifest.get("gate") or {}).get("thresholds", {}))}
                  for v in plan.variants],
    }


def quantization_settings(manifest: dict) -> str:
    """The converter's quantization settings (``conversion.quantization``), scalars only, e.g. ``bits=4, group_size=128``."""
    settings = ((manifest.get("conversion") or {}).get("quantization") or {})
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in settings.items()
                     if isinstance(value, (str, int, float, bool)) or value is None)


def pipeline_name(*, plan) -> str:
    from pipelines.publish import pipeline_version

    return f"invoker-pack {pipeline_version()}"


# --- usage snippets -----------------------------------------------------------------------------

TOOLS_PY = """tools = [{"type": "function", "function": {
    "name": "get_time",
    "description": "Get the current time",
    "parameters": {"type": "object",
                   "properties": {"location": {"type": "string", "description": "The city and state, e.g. New York City, NY"},
                                  "format": {"type": "string", "enum": ["12-hour", "24-hour"]}},
                   "required": ["location"]}}}]
messages = [{"role": "user", "content": "Can you check what is the time in Singapore?"}]"""


def usage_snippets(*, plan, model: str) -> list[dict]:
    """``[{"title", "language", "code"}]`` naming this repo's id and its real file names."""
    if plan.format == "gguf":
        return gguf_snippets(plan=plan, model=model)
    return [
        {"title": "transformers", "language": "python", "code": transformers_snippet(repo_id=plan.repo_id, fmt=plan.format)},
        {"title": "vLLM", "language": "python", "code": vllm_snippet(repo_id=plan.repo_id)},
        {"title": "invoker-pack serve + the openai client", "language": "shell",
         "code": serve_snippet(download=f"hf download {plan.repo_id} --local-dir {plan.repo_id.split('/')[1]}",
                               path=plan.repo_id.split("/")[1], model=model)},
    ]


def transformers_snippet(*, repo_id: str, fmt: str) -> str:
    extra = "gptqmodel optimum" if fmt == "gptq" else "gptqmodel"
    return f"""# pip install transformers accelerate {extra}
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModelForCausalLM.from_pretrained("{repo_id}", device_map="auto")
{TOOLS_PY}
inputs = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True).to(model.device)
output = model.generate(**inputs, max_new_tokens=128, do_sample=False)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
# ```{{"content": null, "function_call": {{"name": "get_time", "arguments": "{{\\"location\\": \\"Singapore\\"}}"}}}}```"""


def vllm_snippet(*, repo_id: str) -> str:
    return f"""# pip install vllm   (a CUDA GPU; the quantization is read from config.json)
from vllm import LLM, SamplingParams

llm = LLM(model="{repo_id}")
{TOOLS_PY}
outputs = llm.chat(messages, SamplingParams(temperature=0, max_tokens=128), tools=tools)
print(outputs[0].outputs[0].text)"""


def serve_snippet(*, download: str, path: str, model: str) -> str:
    return f"""pip install invoker-pack huggingface_hub openai
{download}
invoker-pack serve {path} --port 8000 &
python - <<'EOF'
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
{TOOLS_PY}
response = client.chat.completions.create(model="{model}", messages=messages, tools=tools)
print(response.choices[0].message.tool_calls)
EOF"""


def gguf_snippets(*, plan, model: str) -> list[dict]:
    ggufs = [f.path_in_repo for f in plan.files if f.path_in_repo.endswith(".gguf") and not f.path_in_repo.startswith("imatrix")]
    default = next((name for name in ggufs if "Q4_K_M" in name), ggufs[0])
    quant = default.removesuffix(".gguf").removeprefix(f"{model}-")
    modelfile = f"Modelfile.{quant}"
    has_modelfile = any(f.path_in_repo == modelfile for f in plan.files)
    folder = f"{model}-gguf"
    request = json.dumps({"prompt": render_prompt(GET_TIME_QUESTION, functions=[GET_TIME]),
                          "n_predict": 128, "temperature": 0}, ensure_ascii=False)
    snippets = [
        {"title": "llama-cpp-python", "language": "python", "code": f"""# pip install llama-cpp-python huggingface_hub
from llama_cpp import Llama

llm = Llama.from_pretrained(repo_id="{plan.repo_id}", filename="{default}", n_ctx=2048)
{TOOLS_PY}
# the chat template inside the GGUF renders Invoker's prompt; the answer is the model's JSON in backticks
out = llm.create_chat_completion(messages=messages, tools=tools, temperature=0, max_tokens=128)
print(out["choices"][0]["message"]["content"])"""},
        {"title": "llama.cpp (llama-server)", "language": "shell", "code": f"""hf download {plan.repo_id} {default} --local-dir {folder}
llama-server -m {folder}/{default} --port 8080 &
curl -s http://127.0.0.1:8080/completion -H 'Content-Type: application/json' -d @- <<'EOF'
{request}
EOF"""},
    ]
    if has_modelfile:
        snippets.append({"title": "Ollama", "language": "shell", "code": f"""hf download {plan.repo_id} {default} {modelfile} --local-dir {folder}
cd {folder} && ollama create {model}:{quant.lower()} -f {modelfile}
ollama run {model}:{quant.lower()} "Can you check what is the time in Singapore?"
# with functions: POST http://localhost:11434/api/chat with "tools"; the reply's content is the model's
# JSON in backticks (parse it with invoker.parse.parse_completion, or serve with invoker-pack below)"""})
    snippets.append({"title": "invoker-pack serve + the openai client", "language": "shell",
                     "code": serve_snippet(download=f"hf download {plan.repo_id} {default} --local-dir {folder}",
                                           path=f"{folder}/{default}", model=model)})
    return snippets

