"""What the GPTQ, AWQ and compressed-tensors tests share: converting, reading a checkpoint's tensors and proving it with the ecosystem's loader."""

from __future__ import annotations

from pathlib import Path

import torch


def convert_calibrated(converter, *, source: Path, out: Path, variant: str, n_samples: int = 8, max_length: int = 128) -> dict:
    """Run a calibrating converter module (``convert.gptq``, ``convert.awq``, ``convert.ct``) on ``source`` into the
    new dir ``out``, on CPU, with a small calibration set from the generator; its manifest details back."""
    from convert.calibration import CalibrationSpec, build_calibration

    calibration = build_calibration(tokenizer_dir=source, spec=CalibrationSpec(n_samples=n_samples, max_length=max_length))
    out.mkdir()
    return converter.convert(source_dir=source, out_dir=out, variant=variant, calibration=calibration, progress=False,
                             device="cpu")


def read_tensors(out: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors shard in ``out``."""
    from safetensors import safe_open

    tensors = {}
    for shard in out.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            tensors.update({name: handle.get_tensor(name) for name in handle.keys()})
    return tensors


def load_with_transformers(out: Path):
    """``AutoModelForCausalLM.from_pretrained(out)`` on CPU, after checking every weight was matched."""
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    return model


def assert_generates(model, out: Path, prompt: str) -> None:
    """The loaded model generates 8 greedy tokens from ``prompt`` and its logits are finite."""
    from transformers import AutoTokenizer

    inputs = AutoTokenizer.from_pretrained(str(out))(prompt, return_tensors="pt")
    with torch.inference_mode():
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        logits = model(**inputs).logits
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 8
    assert torch.isfinite(logits).all()


def assert_runtime_serves_4bit(out: Path, *, format: str, module: str, prompt: str) -> None:
    """``load_runtime(out)`` is the transformers runtime running ``module`` as a GPTQModel 4-bit kernel
    (not dequantized to a float Linear), and it generates exactly the tokens asked for."""
    from invoker.runtimes import GenerationParams, generate, load_runtime

    runtime = load_runtime(out)
    assert (runtime.runtime, runtime.format) == ("transformers", format)
    assert type(runtime.model.get_submodule(module)).__module__.startswith("gptqmodel.")
    generation = generate(runtime, prompt, GenerationParams(max_tokens=6, ignore_eos=True))
    assert (generation.finish_reason, generation.completion_tokens) == ("length", 6)
