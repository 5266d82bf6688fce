"""The exllamav2 runtime: GPTQ checkpoints on a CUDA GPU (the fast path for a 13B), same semantics as the others.

Written against exllamav2's documented API (``ExLlamaV2Config`` / ``ExLlamaV2`` / ``ExLlamaV2Cache`` /
``ExLlamaV2Tokenizer`` and the dynamic generator's job queue, doc/dynamic.md and
examples/inference_stream.py of turboderp/exllamav2). Not exercised in CI: there is no GPU there;
``load`` says so clearly instead of failing deep inside exllamav2.

The same ``GenerationParams`` mean the same thing here: ``temperature == 0`` is greedy (exllamav2's
``Settings.greedy()``: top-k 1, no NaN from dividing by zero); otherwise only temperature and
``top_p`` apply — exllamav2's own defaults (top-k 50, top-p 0.8, repetition penalty 1.025) are
switched off. The prompt gets BOS. Stop strings end the output before them and are never streamed
(``StopMatcher``, as in every runtime); EOS ends it unless ``ignore_eos``. Grammar constraints are
not supported here (the transformers and llama.cpp runtimes have them). Closing the stream cancels
the job. Unpaged generator (no flash-attn needed): one stream at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from invoker.formats import ModelFormatError, checkpoint_format
from invoker.runtimes.base import Chunk, GenerationParams, StopMatcher

INSTALL_HINT = "pip install exllamav2 (a build matching your torch and CUDA)"


class ExLlamaV2Runtime:
    runtime = "exllamav2"
    packages = ("exllamav2", "torch")  # what it computes with: their versions go into bench results
    format = "gptq"
    max_concurrent_streams = 1  # the unpaged dynamic generator runs one job at a time (the server reads this)

    def __init__(self, *, model, cache, tokenizer, generator, model_path: Path, context_length: int) -> None:
        self.model = model
        self.cache = cache
        self.tokenizer = tokenizer
        self.generator = generator
        self.model_path = model_path
        self.context_length = context_length

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cuda") -> "ExLlamaV2Runtime":
        """Load the GPTQ checkpoint dir at ``path`` onto the GPU(s) (split automatically across them)."""
        model_path = Path(path)
        check_capability(device=device)
        check_gptq_dir(model_path)
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        config = ExLlamaV2Config(str(model_path))
        model = ExLlamaV2(config)
        cache = ExLlamaV2Cache(model, max_seq_len=config.max_seq_len, lazy=True)
        model.load_autosplit(cache)
        tokenizer = ExLlamaV2Tokenizer(config)
        generator = ExLlamaV2DynamicGenerator(model=model, cache=cache, tokenizer=tokenizer, paged=False)
        return cls(
            model=model,
            cache=cache,
            tokenizer=tokenizer,
            generator=generator,
            model_path=model_path,
            context_length=int(config.max_seq_len),
        )

    compute_dtype = "float16"  # exllamav2's kernels: fp16 activations on CUDA

    def count_tokens(self, text: str) -> int:
        return int(self._encode(text).shape[-1])

    def stream(self, prompt: str, params: GenerationParams) -> Iterator[Chunk]:
        if params.grammar is not None:
            raise ValueError("grammar: the exllamav2 runtime does not support grammar constraints (use the transformers runtime)")
        input_ids = self._encode(prompt)
        prompt_tokens = int(input_ids.shape[-1])
        if prompt_tokens > self.context_length:
            raise ValueError(f"prompt is {prompt_tokens} tokens, longer than the model's context of {self.context_length} tokens")
        return self._decode_loop(input_ids, params)

    def _encode(self, text: str):
        return self.tokenizer.encode(text, add_bos=True, encode_special_tokens=True)

    def _decode_loop(self, input_ids, params: GenerationParams) -> Iterator[Chunk]:
        from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

        prompt_tokens = int(input_ids.shape[-1])
        job = ExLlamaV2DynamicJob(
            input_ids=input_ids,
            max_new_tokens=min(params.max_tokens, self.context_length - prompt_tokens),
            gen_settings=ExLlamaV2Sampler.Settings(**sampler_settings(params)),
            seed=params.seed,
            stop_conditions=[] if params.ignore_eos else [self.tokenizer.eos_token_id],
        )
        stops = StopMatcher(params.stop)
        finish_reason, completion_tokens = "length", 0
        self.generator.enqueue(job)
        try:
            done = False
            while not done and self.generator.num_remaining_jobs():
                for result in self.generator.iterate():
                    if result.get("job") is not job or result.get("stage") != "streaming":
                        continue
                    text, stopped = stops.feed(result.get("text", ""))
                    if text:
                        yield Chunk(text=text)
                    if stopped or result.get("eos"):
                        finish_reason = "stop" if stopped else finish_reason_of(result)
                        completion_tokens = int(result.get("new_tokens", completion_tokens))
                        done = True
                        break
                    completion_tokens += int(result["token_ids"].shape[-1]) if "token_ids" in result else 0
            tail = "" if stops.stopped else stops.flush()
            yield Chunk(text=tail, finish_reason=finish_reason, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        finally:
            self.generator.cancel(job)  # no-op once finished; stops the GPU work when the client goes away


def sampler_settings(params: GenerationParams) -> dict:
    """``ExLlamaV2Sampler.Settings`` fields for ``params``: greedy at temperature 0, else temperature and
    top-p only (exllamav2's defaults would add top-k 50, top-p 0.8 and a repetition penalty)."""
    if params.temperature == 0:
        return {"temperature": 1.0, "top_k": 1, "top_p": 0.0, "token_repetition_penalty": 1.0}
    return {
        "temperature": float(params.temperature),
        "top_k": 0,  # 0 switches top-k off
        "top_p": float(params.top_p),  # 1.0 switches top-p off
        "min_p": 0.0,
        "top_a": 0.0,
        "typical": 0.0,
        "tfs": 0.0,
        "token_repetition_penalty": 1.0,
    }


def finish_reason_of(result: dict) -> str:
    """Our finish reason for the dynamic generator's ``eos_reason``: running out of tokens is ``length``."""
    return "length" if result.get("eos_reason") == "max_new_tokens" else "stop"


def check_capability(*, device: str) -> None:
    """A clear error unless exllamav2 can run here: a CUDA device and the exllamav2 package."""
    import importlib.util

    import torch

    if not device.startswith("cuda"):
        raise RuntimeError(f"the exllamav2 runtime runs on CUDA GPUs only, not on {device!r}; use the transformers runtime on CPU")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"the exllamav2 runtime needs a CUDA GPU, and torch {torch.__version__} sees none here; "
            "use the transformers runtime (--runtime transformers) on CPU"
        )
    if importlib.util.find_spec("exllamav2") is None:
        raise RuntimeError(f"the exllamav2 runtime needs the exllamav2 package: {INSTALL_HINT}")


def check_gptq_dir(model_path: Path) -> None:
    """exllamav2 reads GPTQ v1 checkpoints (4-bit): anything else is refused before loading."""
    config_path = model_path / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{model_path}: no config.json (expected a GPTQ checkpoint dir)")
    quantization = json.loads(config_path.read_text()).get("quantization_config") or {}
    try:
        fmt = checkpoint_format({"quantization_config": quantization}) if quantization else None
    except ModelFormatError:  # a quantization method no format declares
        fmt = None
    if fmt != ExLlamaV2Runtime.format or quantization.get("bits") != 4:
        raise ValueError(f"{config_path}: exllamav2 serves 4-bit GPTQ checkpoints; this one has quantization_config {quantization or None}")
