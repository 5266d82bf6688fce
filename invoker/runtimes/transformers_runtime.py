"""The transformers runtime: fp16 checkpoints, and GPTQ/AWQ dirs that transformers can load.

Generation is our own loop over the model's forward pass with a KV cache, not ``model.generate``,
so that one request controls everything the server promises: stop strings, EOS, ``max_tokens``,
per-request seeds, and cancellation (close the stream and the next forward pass never runs).

Text is produced from new tokens only, never by slicing a decoded prompt: each token id maps to the
bytes it stands for (``invoker.tokenizer.token_bytes_table``: sentencepiece or byte-level BPE),
and an incremental UTF-8 decoder turns the byte stream into text, holding back an incomplete
multi-byte character until its last byte arrives. The leading space of the first
generated piece is kept (a continuation is decoded as a continuation, as llama.cpp does).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from invoker.formats import ModelFormatError, checkpoint_format
from invoker.runtimes.base import BatchRows, Chunk, Generation, GenerationParams, RowText, generate
from invoker.runtimes.parallel import ParallelStreams
from invoker.runtimes.transformers_decoding import new_cache, new_sampler
from invoker.runtimes.transformers_parallel import BatchedDecoder
from invoker.tokenizer import token_bytes_table


class TransformersRuntime(ParallelStreams):
    runtime = "transformers"
    packages = ("torch", "transformers", "numpy")  # what it computes with: their versions go into bench results

    def __init__(self, *, model, tokenizer, model_path: Path, format: str, device: torch.device) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_path = model_path
        self.format = format
        self.device = device
        self.context_length = int(model.config.max_position_embeddings)
        self._token_bytes = token_bytes_table(tokenizer)
        self._eos_ids = _eos_ids(model, tokenizer)
        self._vocabulary = None  # grammar masks (invoker.constrain), built on the first constrained request

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None) -> "TransformersRuntime":
        """Load tokenizer and model from a checkpoint dir, ready to generate on ``device``.

        On CPU the model computes in float32 unless ``dtype`` says otherwise (fp16 matmuls on CPU
        are ~40x slower); on an accelerator it keeps the checkpoint's dtype.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_path = Path(path)
        torch_device = _check_device(device)
        if dtype is None:
            dtype = torch.float32 if torch_device.type == "cpu" else "auto"
        config = check_checkpoint(model_path)
        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype)
        model.to(torch_device)
        model.eval()
        return cls(
            model=model,
            tokenizer=tokenizer,
            model_path=model_path,
            format=_checkpoint_format(config),
            device=torch_device,
        )

    @property
    def compute_dtype(self) -> str:
        """The model's dtype, which its matrix products run in (float32 on a CPU unless loaded otherwise)."""
        return str(self.model.dtype).removeprefix("torch.")

    @property
    def matmul_weights(self) -> int:
        """Elements of the decoder layers' matrices, each multiplied once per prompt token: every leaf module under
        ``.layers.`` with ``in_features``/``out_features`` (GPTQ and AWQ linears too)."""
        return sum(module.in_features * module.out_features for name, module in self.model.named_modules()
                   if ".layers." in name and hasattr(module, "in_features") and hasattr(module, "out_features")
                   and not any(True for _ in module.children()))

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text`` as a prompt, BOS first."""
        return self._encode(text)

    def logprobs(self, ids: list[int]):
        """Teacher forcing: the next-token log-softmax after every prefix of ``ids`` ([len(ids), vocab], float32 numpy)."""
        if not ids or len(ids) > self.context_length:
            raise ValueError(f"need 1 to {self.context_length} token ids, got {len(ids)}")
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], dtype=torch.long, device=self.device)).logits[0]
            return torch.log_softmax(logits[:, : len(self._token_bytes)].float(), dim=-1).cpu().numpy()

    def stream(self, prompt: str, params: GenerationParams) -> Iterator[Chunk]:
        prompt_ids = self._encode(prompt)
        if len(prompt_ids) > self.context_length:
            raise ValueError(
                f"prompt is {len(prompt_ids)} tokens, longer than the model's context of {self.context_length} tokens"
            )
        grammar = self._grammar_matcher(params.grammar)  # a bad grammar fails here, before any output
        if self._parallel is not None:
            return self._parallel.stream(prompt_ids, params, state=grammar)
        return self._decode_loop(prompt_ids, params, grammar)

    def _decoder(self, slots: int):
        """``slots`` streams decoded as one batch (``invoker.runtimes.transformers_parallel``)."""
        return BatchedDecoder(self, slots=slots)

    def _encode(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):  # BOS always, whatever the tokenizer config says
            ids.insert(0, bos)
        return ids

    def _grammar_matcher(self, grammar: str | None):
        if grammar is None:
            return None
        if self._vocabulary is None:
            from invoker.constrain import Vocabulary

            self._vocabulary = Vocabulary.from_hf_tokenizer(
                self.tokenizer, size=len(self._token_bytes), eos_ids=self._eos_ids
            )
        return self._vocabulary.matcher(grammar)

    def _decode_loop(self, prompt_ids: list[int], params: GenerationParams, grammar=None) -> Iterator[Chunk]:
        cache = new_cache(self.model)
        sampler = new_sampler(params)
        row = RowText(self._token_bytes, params.stop)
        budget = min(params.max_tokens, self.context_length - len(prompt_ids))
        next_input = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        completion_tokens = 0
        finish_reason = "length"
        while completion_tokens < budget:
            token = self._next_token(next_input, cache, params, sampler, grammar)
            completion_tokens += 1
            if token in self._eos_ids and not params.ignore_eos:
                finish_reason = "stop"
                break
            text, stopped = row.feed(token)
            if stopped:
                finish_reason = "stop"
                break
            if text:
                yield Chunk(text=text)
            next_input = torch.tensor([[token]], dtype=torch.long, device=self.device)
        yield row.final(finish_reason=finish_reason, prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens)

    def generate_batch(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        """What ``generate`` returns for each prompt, computed together: greedy decoding of the
        left-padded batch through one KV cache, each row stopping at its own EOS, stop string or
        budget. Equal to one-by-one generation up to float rounding in near-ties. Sampling or a
        grammar: one by one (their per-request state does not batch)."""
        if params.temperature != 0 or params.grammar is not None or len(prompts) < 2:
            return [generate(self, prompt, params) for prompt in prompts]
        encoded = [self._encode(prompt) for prompt in prompts]
        batch = BatchRows(token_bytes=self._token_bytes, params=params, prompt_lengths=[len(ids) for ids in encoded],
                          context_length=self.context_length, is_eos=self._eos_ids.__contains__)
        width = max(len(ids) for ids in encoded)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self._eos_ids)
        input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for index, ids in enumerate(encoded):
            input_ids[index, width - len(ids):] = torch.tensor(ids)
            mask[index, width - len(ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = new_cache(self.model)
        active = batch.active()
        step_input = input_ids[active]
        mask, positions = mask[active], positions[active]
        with torch.inference_mode():
            while active:
                logits = self.model(input_ids=step_input.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                                    logits_to_keep=1).logits
                tokens = logits[:, -1, : len(self._token_bytes)].float().argmax(-1).tolist()
                for index, token in zip(active, tokens):
                    batch.feed(index, token)
                keep = [row for row, index in enumerate(active) if batch.finish[index] is None]
                if len(keep) < len(active):  # finished rows leave the batch (and the cache)
                    cache.batch_select_indices(torch.tensor(keep, dtype=torch.long, device=self.device))
                    mask, positions = mask[keep], positions[keep]
                    active, tokens = [active[row] for row in keep], [tokens[row] for row in keep]
                step_input = torch.tensor([[token] for token in tokens], dtype=torch.long)
                mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
                positions = positions[:, -1:] + 1
        return batch.results()

    def _next_token(
        self, input_ids: torch.Tensor, cache, params: GenerationParams, sampler: torch.Generator, grammar=None
    ) -> int:
        # inference_mode per step, never across a yield: the caller's thread must not be left in it.
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
            return self._pick(logits[0, -1], params, sampler, grammar)

    def _pick(self, logits: torch.Tensor, params: GenerationParams, sampler: torch.Generator, grammar=None) -> int:
        """The next token from one position's logits: greedy or sampled, within the grammar if there is one."""
        logits = logits[: len(self._token_bytes)].float()  # ids the tokenizer cannot decode are never picked
        if grammar is not None:  # tokens the grammar does not allow next are never picked
            logits = logits.masked_fill(~torch.from_numpy(grammar.allowed()).to(logits.device), float("-inf"))
        if params.temperature == 0:
            token = int(torch.argmax(logits))
        else:
            probs = torch.softmax(logits.cpu() / params.temperature, dim=-1)
            if params.top_p < 1.0:
                probs = _nucleus(probs, params.top_p)
            token = int(torch.multinomial(probs, 1, generator=sampler))
        if grammar is not None:
            grammar.accept(token)
        return token


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p``."""
    sorted_probs, order = torch.sort(probs, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the tokens ranked above
    sorted_probs[before >= top_p] = 0.0
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def _eos_ids(model, tokenizer) -> frozenset[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None) if model.generation_config else None
    ids.update(configured if isinstance(configured, list) else [configured])
    return frozenset(i for i in ids if i is not None)


def _check_device(device: str) -> torch.device:
    try:
        torch_device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} requested but CUDA is not available to torch {torch.__version__}; use --device cpu"
        )
    return torch_device


def _checkpoint_format(config: dict) -> str:
    """The format ``config.json`` declares (``invoker.formats.checkpoint_format``); a quantization method no format
    declares, as transformers names it."""
    try:
        return checkpoint_format(config)
    except ModelFormatError:
        return str(config["quantization_config"]["quant_method"]).lower()


# config.json sizes a loader allocates by: each a positive integer below a bound no real model reaches, so a
# damaged or hostile config is a clear error instead of a multi-terabyte allocation or a negative-size crash
CONFIG_SIZES = {"hidden_size": 1 << 17, "intermediate_size": 1 << 20, "num_hidden_layers": 1 << 12,
                "num_attention_heads": 1 << 12, "num_key_value_heads": 1 << 12, "vocab_size": 1 << 24,
                "max_position_embeddings": 1 << 24, "head_dim": 1 << 12}


def check_checkpoint(model_path: Path) -> dict:
    """Before transformers reads a checkpoint dir: ``config.json`` is a JSON object whose sizes (``CONFIG_SIZES``)
    are sane, and every ``*.safetensors`` file has a header safetensors accepts (length, JSON, offsets within the
    file); returns the config. A ``ModelFormatError`` naming the file otherwise; reads headers only."""
    from safetensors import SafetensorError, safe_open

    config_path = model_path / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{config_path}: not readable JSON ({err})") from None
    if not isinstance(config, dict):
        raise ModelFormatError(f"{config_path}: must hold a JSON object")
    for key, bound in CONFIG_SIZES.items():
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= bound):
            raise ModelFormatError(f"{config_path}: {key} must be an integer in [1, {bound}], got {json.dumps(value)[:40]}")
    for weights in sorted(model_path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as err:
            raise ModelFormatError(f"{weights}: not a readable safetensors file ({err})") from None
    return config
