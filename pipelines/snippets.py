"""The model cards' usage snippets, naming the repo's id and its real files.

A format's registry entry lists which snippets its cards carry (``FormatSpec.snippets``), in order;
each is one function here. They name the repo's recommended variant (``RepoPlan.recommended``: for
GGUF the Q4_K_M the recipe asked for, never a comparison variant). Checked: the transformers snippet
runs in a test against the bundled model; the others are written against the tools' documented APIs
(docs/PUBLISH.md says which were run by hand).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from invoker.examples import GET_TIME, GET_TIME_QUESTION
from invoker.prompt import render_prompt

MODELFILE = "Modelfile"  # the Ollama Modelfile a variant may carry (its name in the repo: FormatSpec.repo_path)

TOOLS_PY = """tools = [{"type": "function", "function": {
    "name": "get_time",
    "description": "Get the current time",
    "parameters": {"type": "object",
                   "properties": {"location": {"type": "string", "description": "The city and state, e.g. New York City, NY"},
                                  "format": {"type": "string", "enum": ["12-hour", "24-hour"]}},
                   "required": ["location"]}}}]
messages = [{"role": "user", "content": "Can you check what is the time in Singapore?"}]"""


@dataclass(frozen=True)
class Usage:
    """What a snippet names: the repo, its folder once downloaded, the recommended variant and its files."""

    repo_id: str
    model: str
    variant: str  # the recommended variant
    weight_file: str  # its weight file in the repo
    files: frozenset[str]  # every file of the repo
    whole_repo: bool  # the repo is one model dir (one variant per repo): download it whole, serve the folder
    install: str  # extra pip packages for transformers

    @property
    def folder(self) -> str:
        return self.repo_id.split("/")[1]

    @property
    def modelfile(self) -> str | None:
        for name in (f"{MODELFILE}.{self.variant}", MODELFILE):
            if name in self.files:
                return name
        return None


def usage_snippets(*, plan, model: str) -> list[dict]:
    """``[{"title", "language", "code"}]`` for ``plan``'s repo, as its format's registry entry lists them."""
    recommended = plan.recommended
    usage = Usage(repo_id=plan.repo_id, model=model, variant=recommended.manifest.variant,
                  weight_file=plan.weight_file(recommended), files=frozenset(f.path_in_repo for f in plan.files),
                  whole_repo=plan.spec.default_variant is not None, install=plan.spec.install)
    return [snippet for name in plan.spec.snippets if (snippet := SNIPPETS[name](usage)) is not None]


def transformers(usage: Usage) -> dict:
    return {"title": "transformers", "language": "python", "code": f"""# pip install transformers accelerate {usage.install}
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{usage.repo_id}")
model = AutoModelForCausalLM.from_pretrained("{usage.repo_id}", device_map="auto")
{TOOLS_PY}
inputs = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True).to(model.device)
output = model.generate(**inputs, max_new_tokens=128, do_sample=False)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
# ```{{"content": null, "function_call": {{"name": "get_time", "arguments": "{{\\"location\\": \\"Singapore\\"}}"}}}}```"""}


def vllm(usage: Usage) -> dict:
    from pipelines.release import VLLM_PLUGIN_DIR

    plugin = f"{usage.folder}/{VLLM_PLUGIN_DIR}/invoker/vllm_tool_parser.py"
    request = json.dumps({"model": usage.repo_id, "messages": GET_TIME_QUESTION, "temperature": 0, "max_tokens": 128,
                          "tools": [{"type": "function", "function": GET_TIME}]}, ensure_ascii=False)
    return {"title": "vLLM", "language": "shell", "code": f"""# pip install vllm   (the quantization is read from config.json; CUDA, or vLLM's CPU build)
# Invoker's answers become OpenAI tool_calls through the parser plugin this repo ships in {VLLM_PLUGIN_DIR}/
hf download {usage.repo_id} --include '{VLLM_PLUGIN_DIR}/*' --local-dir {usage.folder}
vllm serve {usage.repo_id} --tool-parser-plugin {plugin} \\
    --tool-call-parser invoker --enable-auto-tool-choice &
curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' -d @- <<'EOF'
{request}
EOF"""}


def llama_cpp_python(usage: Usage) -> dict:
    return {"title": "llama-cpp-python", "language": "python", "code": f"""# pip install llama-cpp-python huggingface_hub
from llama_cpp import Llama

llm = Llama.from_pretrained(repo_id="{usage.repo_id}", filename="{usage.weight_file}", n_ctx=2048)
{TOOLS_PY}
# the chat template inside the GGUF renders Invoker's prompt; the answer is the model's JSON in backticks
out = llm.create_chat_completion(messages=messages, tools=tools, temperature=0, max_tokens=128)
print(out["choices"][0]["message"]["content"])"""}


def llama_server(usage: Usage) -> dict:
    request = json.dumps({"prompt": render_prompt(GET_TIME_QUESTION, functions=[GET_TIME]),
                          "n_predict": 128, "temperature": 0}, ensure_ascii=False)
    return {"title": "llama.cpp (llama-server)", "language": "shell", "code": f"""hf download {usage.repo_id} {usage.weight_file} --local-dir {usage.folder}
llama-server -m {usage.folder}/{usage.weight_file} --port 8080 &
curl -s http://127.0.0.1:8080/completion -H 'Content-Type: application/json' -d @- <<'EOF'
{request}
EOF"""}


def ollama(usage: Usage) -> dict | None:
    if usage.modelfile is None:
        return None
    tag = f"{usage.model}:{usage.variant.lower()}"
    return {"title": "Ollama", "language": "shell", "code": f"""hf download {usage.repo_id} {usage.weight_file} {usage.modelfile} --local-dir {usage.folder}
cd {usage.folder} && ollama create {tag} -f {usage.modelfile}
ollama run {tag} "Can you check what is the time in Singapore?"
# with functions: POST http://localhost:11434/api/chat with "tools"; the reply's content is the model's
# JSON in backticks (parse it with invoker.parse.parse_completion, or serve with invoker-pack below)"""}


def serve(usage: Usage) -> dict:
    """The whole repo when it is one model dir; else the recommended variant's weight file."""
    if usage.whole_repo:
        download, path = f"hf download {usage.repo_id} --local-dir {usage.folder}", usage.folder
    else:
        download = f"hf download {usage.repo_id} {usage.weight_file} --local-dir {usage.folder}"
        path = f"{usage.folder}/{usage.weight_file}"
    return {"title": "invoker-pack serve + the openai client", "language": "shell", "code": f"""pip install invoker-pack huggingface_hub openai
{download}
invoker-pack serve {path} --port 8000 &
python - <<'EOF'
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
{TOOLS_PY}
response = client.chat.completions.create(model="{usage.model}", messages=messages, tools=tools)
print(response.choices[0].message.tool_calls)
EOF"""}


SNIPPETS: dict[str, Callable[[Usage], dict | None]] = {
    "transformers": transformers,
    "vllm": vllm,
    "llama-cpp-python": llama_cpp_python,
    "llama-server": llama_server,
    "ollama": ollama,
    "serve": serve,
}
