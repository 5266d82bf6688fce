"""The Ollama Modelfile written beside each GGUF, so ``ollama create NAME -f Modelfile`` works unedited.

Ollama does not run the GGUF's Jinja chat template; it needs a Go template (``TEMPLATE``) over its
own request shape (``.Tools``, ``.Messages`` with ``.Role``, ``.Content``, ``.ToolCalls``,
``.ToolName``). ``TEMPLATE`` below renders Invoker's prompt format from that shape: the same
layout and turns as ``invoker.prompt.render_prompt``, BOS added by Ollama's tokenizer. One
difference cannot be avoided: Go templates can only write JSON with Go's ``json`` function, which
is compact (``{"type":"string"}``), so nested schema objects and past call arguments are written
without the spaces Python's ``json.dumps`` puts in; the top level of each function, the turn
markers and the answer envelope are written exactly. See docs/GGUF.md ("Ollama").
"""

from __future__ import annotations

from pathlib import Path

from invoker.files import write_text_atomic
from invoker.prompt import SYSTEM_PROMPT

STOP_STRINGS = ("</s>", "USER:", "ASSISTANT:", "FUNCTION:")

# Go text/template. Every action trims the newline before it ({{-), so the text between actions is exact.
TEMPLATE = (
    """Available Functions:
{{- if .Tools }}
{{- range .Tools }}
```json
{"name": {{ json .Function.Name }}
{{- if .Function.Description }}, "description": {{ json .Function.Description }}{{ end -}}
, "parameters": {"type": {{ if .Function.Parameters.Type }}{{ json .Function.Parameters.Type }}{{ else }}"object"{{ end -}}
, "properties": {{ if .Function.Parameters.Properties }}{{ json .Function.Parameters.Properties }}{{ else }}{}{{ end }}
{{- if .Function.Parameters.Required }}, "required": {{ json .Function.Parameters.Required }}{{ end }}}}
```
{{- end }}
{{- else }}
None
{{- end }}

"""
    + SYSTEM_PROMPT
    + """
{{- $last := "" }}
{{- $called := "" }}
{{- range $m := .Messages }}
{{- $last = $m.Role }}
{{- if eq $m.Role "system" }}
SYSTEM: {{ $m.Content }}
{{- else if eq $m.Role "user" }}
USER: {{ $m.Content }}
{{- else if eq $m.Role "assistant" }}
{{- if $m.ToolCalls }}
{{- range $i, $call := $m.ToolCalls }}
{{- $called = $call.Function.Name }}
ASSISTANT: ```{"content": {{ if and (eq $i 0) $m.Content }}{{ json $m.Content }}{{ else }}null{{ end -}}
, "function_call": {"name": {{ json $call.Function.Name }}, "arguments": {{ json (json $call.Function.Arguments) }}}}```
{{- end }}
{{- else }}
ASSISTANT: ```{"content": {{ json $m.Content }}, "function_call": null}```
{{- end }}
{{- else if eq $m.Role "tool" }}
FUNCTION: ```{"name": {{ if $m.ToolName }}{{ json $m.ToolName }}{{ else }}{{ json $called }}{{ end }}, "content": {{ json $m.Content }}}```
{{- end }}
{{- end }}
{{- if ne $last "assistant" }}
ASSISTANT:
{{- end }}"""
)


def render_modelfile(*, gguf_name: str, context_length: int) -> str:
    """The Modelfile text for ``gguf_name`` (a file in the same directory)."""
    if '"""' in TEMPLATE:
        raise ValueError('the Ollama template must not contain """ (it ends a Modelfile value)')
    lines = [
        f"# Ollama Modelfile for {gguf_name}, written by invoker-pack (docs/GGUF.md, \"Ollama\").",
        "#   ollama create <name> -f Modelfile",
        "# The TEMPLATE renders Invoker's prompt format; the model answers with one JSON object in triple",
        "# backticks, which a client parses (invoker.parse.parse_completion does).",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{TEMPLATE}"""',
        *(f'PARAMETER stop "{stop}"' for stop in STOP_STRINGS),
        "PARAMETER temperature 0",
        "PARAMETER repeat_penalty 1",
        f"PARAMETER num_ctx {context_length}",
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(path: Path, *, gguf_name: str, context_length: int) -> Path:
    """Write the Modelfile (atomically) for the GGUF ``gguf_name`` beside it."""
    if "/" in gguf_name or not gguf_name.endswith(".gguf"):
        raise ValueError(f"gguf_name must be a .gguf file name in the same directory, got {gguf_name!r}")
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}")
    return write_text_atomic(path, render_modelfile(gguf_name=gguf_name, context_length=context_length))
