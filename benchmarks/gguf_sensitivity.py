"""Where a GGUF quant loses fidelity: the runtime or the weights, and which tensors.

For one quantized GGUF of a checkpoint, next-token KL(fp16 ‖ ·) and top-1 agreement on eval
conversations rendered whole (the measures of ``benchmarks/gguf_fidelity.py``), computed for

- ``llama.cpp``: the file as users run it;
- ``weights in torch``: the same file dequantized by transformers' own GGUF loader and run in torch
  float32 — the same weights without llama.cpp's kernels (which also quantize activations to 8 bits
  for k-quant matmuls). Equal to the line above: the loss is in the weights, not the runtime;
- one line per tensor group (``q_proj``, ``gate_proj``, …): the fp16 model with only that group's
  tensors replaced by the file's. Which groups carry the loss, and whether it adds up or compounds.

    python benchmarks/gguf_sensitivity.py out/tiny-invoker/gguf-Q4_K_M
    python benchmarks/gguf_sensitivity.py out/tiny-invoker/gguf-Q4_K_M --source models/tiny-invoker --conversations 8 --json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from gguf_fidelity import compare_log_probs, conversation_ids, gguf_log_probs
from invoker.runtimes.llamacpp_runtime import find_gguf, inspect_gguf

GROUPS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("gguf", type=Path, help="a quantized .gguf file or a variant dir holding one")
    p.add_argument("--source", type=Path, default=Path("models/tiny-invoker"), help="the fp16 checkpoint it was made from")
    p.add_argument("--conversations", type=int, default=4, help="eval conversations, rendered whole")
    p.add_argument("--groups", default=",".join(GROUPS), help="comma-separated name patterns of the HF tensors to swap in")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    gguf = find_gguf(args.gguf)
    ids = conversation_ids(tokenizer_dir=args.source, n=args.conversations)
    model = AutoModelForCausalLM.from_pretrained(str(args.source), dtype=torch.float32).eval()
    fp16 = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).state_dict()

    def log_probs() -> list[np.ndarray]:
        with torch.inference_mode():
            return [torch.log_softmax(model(torch.tensor([row])).logits[0].double(), -1).numpy() for row in ids]

    reference = log_probs()
    rows = {"llama.cpp": compare_log_probs(reference, gguf_log_probs(path=gguf, token_ids=ids, threads=args.threads))}
    model.load_state_dict(quantized)
    rows["weights in torch"] = compare_log_probs(reference, log_probs())
    for group in filter(None, args.groups.split(",")):
        names = [name for name in fp16 if re.search(group, name)]
        if not names:
            raise SystemExit(f"no tensor of {args.source} matches {group!r}")
        model.load_state_dict({name: quantized[name] if name in names else fp16[name] for name in fp16})
        rows[f"only {group} ({len(names)})"] = compare_log_probs(reference, log_probs())

    types = sorted(set(inspect_gguf(gguf).tensor_types.values()))
    if args.json:
        print(json.dumps({"gguf": gguf.name, "tensor_types": types, "rows": rows}, indent=1))
        return 0
    print(f"{gguf.name} ({', '.join(types)}) vs {args.source}, {rows['llama.cpp']['positions']} positions")
    print("| quantized | mean KL | top-1 agreement |\n| --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['mean_kl']:.4f} | {row['top1_agreement']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
