"""The decoder layouts the converters know: one entry per architecture, read by every algorithm.

Which tensors sit outside the decoder layers, a layer's norms and linears in execution order, which linears
read the same input (GPTQ calibrates them together; AWQ scales them together, folding ``1/s`` into the op
that produced that input), which linears are never clipped, transformers' decoder layer and rotary embedding
classes and gguf's architecture for tensor names. ``convert/checkpoint.py`` (the layer walk), ``_int4.py``
(the 4-bit checkpoint writer), ``gptq.py``, ``awq.py`` and ``imatrix.py`` read the entry of the source's
``config.json`` ``architectures`` (``architecture_of``) and name no module themselves — in the spirit of
GPTQModel's and llm-compressor's per-architecture maps. Another architecture of the same shape (Llama-3,
Qwen2: other class names, the same layout) is one more entry. Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScaleGroup:
    """Linears that read one input, the op whose output that input is (it absorbs AWQ's ``1/s``), and the
    module whose output the scale search scores."""

    previous: str
    linears: tuple[str, ...]
    inspect: str
    same_shape: bool = False  # scaled only when ``previous``'s weight has the shape of the first linear's (AutoAWQ:
    #                            v_proj -> o_proj, not under grouped-query attention)


@dataclass(frozen=True)
class Architecture:
    name: str
    hf_classes: tuple[str, ...]  # config.json "architectures" it covers
    model_type: str  # config.json "model_type", for a config that names no architectures
    decoder_layer: str  # transformers' decoder layer class, "module:Class"
    rotary_embedding: str  # transformers' rotary embedding class, "module:Class"
    gguf_arch: str  # gguf.MODEL_ARCH member whose tensor map names the GGUF tensors
    embed_tokens: str  # the checkpoint's tensors outside the layers, kept in fp16 by the 4-bit formats
    final_norm: str
    lm_head: str  # absent when tied to the embeddings
    layers: str  # a decoder layer's prefix, "{index}" for its number
    norms: tuple[str, ...]
    linears: tuple[str, ...]  # in execution order
    sequential: tuple[tuple[str, ...], ...]  # linears that read one input, in order (GPTQ's groups)
    scale_groups: tuple[ScaleGroup, ...]  # AWQ's
    no_clip: tuple[str, ...]  # linears AWQ does not clip (q/k: clipping distorts attention scores)
    attention: str  # the attention module (AWQ scores q/k/v scales on its output)

    @property
    def outside_layers(self) -> tuple[str, ...]:
        return (self.embed_tokens, self.final_norm, self.lm_head)

    def layer_prefix(self, index: int) -> str:
        return self.layers.format(index=index)

    def layer_tensor(self, index: int, module: str, key: str = "weight") -> str:
        """A layer's tensor name in the checkpoint: ``model.layers.3.self_attn.q_proj.weight``."""
        return f"{self.layer_prefix(index)}{module}.{key}"


LLAMA = Architecture(
    name="llama",
    hf_classes=("LlamaForCausalLM",),
    model_type="llama",
    decoder_layer="transformers.models.llama.modeling_llama:LlamaDecoderLayer",
    rotary_embedding="transformers.models.llama.modeling_llama:LlamaRotaryEmbedding",
    gguf_arch="LLAMA",
    embed_tokens="model.embed_tokens.weight",
    final_norm="model.norm.weight",
    lm_head="lm_head.weight",
    layers="model.layers.{index}.",
    norms=("input_layernorm", "post_attention_layernorm"),
    linears=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    sequential=(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
                ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",)),
    scale_groups=(
        ScaleGroup(previous="input_layernorm", linears=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                   inspect="self_attn"),
        ScaleGroup(previous="self_attn.v_proj", linears=("self_attn.o_proj",), inspect="self_attn.o_proj",
                   same_shape=True),
        ScaleGroup(previous="post_attention_layernorm", linears=("mlp.gate_proj", "mlp.up_proj"), inspect="mlp"),
        ScaleGroup(previous="mlp.up_proj", linears=("mlp.down_proj",), inspect="mlp.down_proj"),
    ),
    no_clip=("self_attn.q_proj", "self_attn.k_proj"),
    attention="self_attn",
)

ARCHITECTURES = {hf_class: arch for arch in (LLAMA,) for hf_class in arch.hf_classes}


def architecture_of(config) -> Architecture:
    """The entry of a ``config.json``'s ``architectures`` (a dict, or transformers' config object); a ``ValueError``
    names the supported ones."""
    def get(key: str):
        return config.get(key) if isinstance(config, dict) else getattr(config, key, None)

    classes = get("architectures") or []
    for hf_class in classes:
        if hf_class in ARCHITECTURES:
            return ARCHITECTURES[hf_class]
    if not classes:  # a config built in code (transformers' LlamaConfig()) names only its model type
        for arch in ARCHITECTURES.values():
            if get("model_type") == arch.model_type:
                return arch
    raise ValueError(f"architectures {classes} is not a Llama decoder (supported: {', '.join(ARCHITECTURES)})")


def load_class(path: str):
    """``"module:Class"`` -> the class (imported now)."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
