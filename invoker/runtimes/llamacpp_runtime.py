"""The llama.cpp runtime: GGUF files through llama-cpp-python, with the transformers runtime's semantics.

The same ``GenerationParams`` mean the same thing here: ``temperature == 0`` is greedy (argmax);
otherwise logits are divided by the temperature, then ``top_p`` keeps the smallest set of most
likely tokens reaching that mass, then one token is drawn with a generator seeded by ``seed`` (a
sampler chain of our own — llama-cpp-python's ``generate`` would add top-k 40 and min-p 0.05 and
apply top-p before the temperature). ``grammar`` (GBNF) constrains the output with llama.cpp's own
grammar sampler. Stop strings end the output before them and are never streamed (``StopMatcher``);
EOS ends it unless ``ignore_eos``. Text comes from new tokens only: each id maps to the bytes it
stands for and an incremental UTF-8 decoder holds back incomplete characters.

The prompt is tokenized as the HF tokenizer does (BOS added, special-token text parsed); the KV
cache is reused for the longest common prefix with the previous request, so multi-turn chats do
not re-read their history. Closing the stream stops generation: the next token is never decoded.
"""

from __future__ import annotations

import codecs
import ctypes
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from invoker.formats import get as get_format, is_companion
from invoker.runtimes.base import BatchRows, Chunk, Generation, GenerationParams, StopMatcher, final_chunk, generate
from invoker.runtimes.llamacpp_batch import BatchContext, decode, fill, read_prompt, shared_prefix
from invoker.runtimes.llamacpp_cpu import open_llama
from invoker.runtimes.llamacpp_parallel import ParallelDecoder
from invoker.runtimes.parallel import ParallelStreams

GGUF_MAGIC = b"GGUF"
GGUF = get_format("gguf")  # imatrix*.gguf beside a quant (imatrix-<TYPE>.gguf in a release repo) is not a model
GREEDY_SCAN = 64  # greedy under a grammar: candidates checked one by one before masking the whole vocabulary


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF holds, read from its header without loading it."""

    path: Path
    file_bytes: int
    architecture: str | None
    file_type: int | None
    n_tensors: int
    tensor_bytes: int
    decode_bytes: int  # bytes of weights read per decoded token: all tensors but the token embedding (one row is read)
    matmul_weights: int  # elements of the decoder layers' matrices (blk.*): each costs 2 FLOP per prompt token
    has_tokenizer: bool
    has_chat_template: bool
    tensor_types: dict[str, str]  # tensor name -> ggml type name ("Q4_K", "F32", ...)


class LlamaCppRuntime(ParallelStreams):
    runtime = "llama.cpp"
    packages = ("llama-cpp-python", "gguf", "numpy")  # what it computes with: their versions go into bench results
    format = GGUF.name

    def __init__(self, *, llama, model_path: Path, gguf_file: Path, info: GGUFInfo, threads: int, device: str) -> None:
        import llama_cpp

        self.llama = llama
        self.model_path = model_path
        self.gguf_file = gguf_file
        self.info = info
        self.threads = threads
        self.device = device
        self.context_length = int(llama.n_ctx())
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._token_bytes = token_bytes_table(self._vocab, n_vocab=llama.n_vocab())
        self._streaming = False
        self._candidates = None  # the whole vocabulary as sampler candidates, for the rare masked draw
        self._batch_context: BatchContext | None = None  # generate_batch's own context, sized by its largest call

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", threads: int | None = None, n_ctx: int = 0,
             extra_buffers: bool | None = None) -> "LlamaCppRuntime":
        """Load the GGUF at ``path`` (a ``.gguf`` file or a variant dir holding one) with llama.cpp.

        ``n_ctx=0`` uses the model's trained context length; ``threads`` defaults to the CPUs this
        process may use. ``device="cuda"`` offloads every layer (needs a llama-cpp-python built with CUDA).
        ``extra_buffers``: llama.cpp's repacked/AMX weight layouts, decided per machine when None
        (``invoker.runtimes.llamacpp_cpu``).
        """
        model_path = Path(path)
        gguf_file = find_gguf(model_path)
        info = inspect_gguf(gguf_file)
        gpu_layers = _gpu_layers(device)
        threads = threads or len(os.sched_getaffinity(0))
        try:
            llama = open_llama(gguf_file, extra_buffers=extra_buffers, n_ctx=n_ctx, n_threads=threads,
                               n_threads_batch=threads, n_gpu_layers=gpu_layers, flash_attn=True, verbose=False)
        except ValueError as err:
            raise ValueError(f"{gguf_file}: llama.cpp could not load this GGUF ({err}); llama.cpp's log above says why") from None
        return cls(llama=llama, model_path=model_path, gguf_file=gguf_file, info=info, threads=threads, device=device)

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` CPU threads for prompt processing and decoding from now on."""
        import llama_cpp

        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        llama_cpp.llama_set_n_threads(self.llama.ctx, threads, threads)
        self.threads = threads

    @property
    def compute_dtype(self) -> str:
        """What its matrix products run in (``gguf_compute_dtype``)."""
        return gguf_compute_dtype(self.info.tensor_types)

    @property
    def matmul_weights(self) -> int:
        """Elements of the decoder layers' matrices, each multiplied once per prompt token (``GGUFInfo``)."""
        return self.info.matmul_weights

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text`` as a prompt, BOS first when the GGUF says so."""
        return self._encode(text)

    def logprobs(self, ids: list[int]) -> "np.ndarray":
        """Teacher forcing: the next-token log-softmax after every prefix of ``ids`` ([len(ids), vocab], float32).

        One llama.cpp batch per ``n_batch`` tokens with logits requested for every position; the KV
        cache is cleared before and after, so generation never sees this sequence as a shared prefix.
        """
        import llama_cpp
        import numpy as np

        self._check_idle()
        if not ids or len(ids) > self.context_length:
            raise ValueError(f"need 1 to {self.context_length} token ids, got {len(ids)}")
        ctx, n_vocab = self.llama.ctx, self.llama.n_vocab()
        step = llama_cpp.llama_n_batch(ctx)
        out = np.empty((len(ids), n_vocab), dtype=np.float32)
        memory = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_clear(memory, True)
        self.llama.n_tokens = 0
        try:
            batch = llama_cpp.llama_batch_init(min(step, len(ids)), 0, 1)
            try:
                for start in range(0, len(ids), step):
                    chunk = ids[start : start + step]
                    fill(batch, [(token, start + i, 0, True) for i, token in enumerate(chunk)])
                    decode(ctx, batch)
                    for i in range(len(chunk)):
                        out[start + i] = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(n_vocab,))
            finally:
                llama_cpp.llama_batch_free(batch)
        finally:
            llama_cpp.llama_memory_clear(memory, True)
        return _log_softmax(out)

    def stream(self, prompt: str, params: GenerationParams) -> Iterator[Chunk]:
        self._check_idle()
        prompt_ids = self._encode(prompt)
        if len(prompt_ids) > self.context_length:
            raise ValueError(
                f"prompt is {len(prompt_ids)} tokens, longer than the model's context of {self.context_length} tokens"
            )
        self._new_sampler(params).close()  # a bad grammar fails here, before the first chunk
        if self._parallel is not None:
            return self._parallel.stream(prompt_ids, params)
        return self._decode_loop(prompt_ids, params)

    def _decoder(self, slots: int):
        """``slots`` streams decoded together, one ``llama_decode`` per step (``invoker.runtimes.llamacpp_parallel``);
        costs a KV cache of ``slots`` × the context."""
        return ParallelDecoder(self, slots=slots)

    def generate_batch(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        """What ``generate`` returns for each prompt, computed together: greedy decoding of every prompt
        as its own sequence of one llama.cpp context, one token per unfinished sequence per
        ``llama_decode``, each stopping at its own EOS, stop string or budget (its cells leave the KV
        cache then). Decoding is memory-bound, so a step for 8 sequences costs little more than a step
        for one. Equal to one-by-one generation up to float rounding in near-ties. Sampling or a
        grammar: one by one (their per-request state does not batch).

        The context is separate from the one ``stream`` uses (whose prefix cache stays as it was):
        a unified KV cache holding every prompt and its budget, built on first use and kept while
        later calls fit in it."""
        import llama_cpp
        import numpy as np

        if params.temperature != 0 or params.grammar is not None or len(prompts) < 2:
            return [generate(self, prompt, params) for prompt in prompts]
        self._check_idle()
        encoded = [self._encode(prompt) for prompt in prompts]
        rows = BatchRows(token_bytes=self._token_bytes, params=params, prompt_lengths=[len(ids) for ids in encoded],
                         context_length=self.context_length, is_eos=lambda token: llama_cpp.llama_vocab_is_eog(self._vocab, token))
        context = self._context_for(sequences=len(encoded), cells=sum(len(ids) + budget for ids, budget in zip(encoded, rows.budgets)))
        ctx, n_vocab = context.ctx, self.llama.n_vocab()
        memory = llama_cpp.llama_get_memory(ctx)
        last = [0] * len(encoded)  # each sequence's newest token, decoded in the next step

        def take(row: int, index: int) -> None:  # the greedy token from output ``index`` of the last decode
            last[row] = int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(n_vocab,)).argmax())
            if rows.feed(row, last[row]):
                llama_cpp.llama_memory_seq_rm(memory, row, -1, -1)  # its cells leave the cache

        self._streaming = True
        batch = llama_cpp.llama_batch_init(max(context.n_batch, len(encoded)), 0, 1)
        try:
            llama_cpp.llama_memory_clear(memory, True)
            for row in rows.active():  # prompts one by one
                take(row, read_prompt(ctx, batch, encoded[row], sequence=row, n_batch=context.n_batch))
            while active := rows.active():
                fill(batch, [(last[row], len(encoded[row]) + rows.counts[row] - 1, row, True) for row in active])
                decode(ctx, batch)
                for index, row in enumerate(active):
                    take(row, index)
        finally:
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_memory_clear(memory, True)
            self._streaming = False
        return rows.results()

    def _context_for(self, *, sequences: int, cells: int) -> "BatchContext":
        """generate_batch's context: at least ``sequences`` sequences and ``cells`` KV cells, else a bigger one."""
        current = self._batch_context
        if current is not None and current.sequences >= sequences and current.cells >= cells:
            return current
        if current is not None:
            current.close()
        self._batch_context = BatchContext(self.llama.model, sequences=max(sequences, current.sequences if current else 0),
                                            cells=max(cells, current.cells if current else 0), threads=self.threads)
        return self._batch_context

    def _check_idle(self) -> None:
        if self._streaming:
            raise RuntimeError("the llama.cpp runtime runs one stream at a time (one KV cache); finish or close the other first")

    def _encode(self, text: str) -> list[int]:
        # add_bos: BOS first (the GGUF says add_bos_token); special: "<s>" in text is the BOS token, as in HF tokenizers.
        return self.llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def _new_sampler(self, params: GenerationParams) -> "_Sampler":
        import llama_cpp

        grammar = None
        if params.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(self._vocab, params.grammar.encode("utf-8"), b"root")
            if not grammar:
                raise ValueError("grammar: llama.cpp could not parse this GBNF grammar (root rule 'root')")
        sampler = _Sampler(llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params()), grammar,
                           greedy=params.temperature == 0)
        chain = sampler.chain
        if params.temperature == 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
            if params.top_p < 1.0:
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed % llama_cpp.LLAMA_DEFAULT_SEED
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return sampler

    def _sample(self, sampler: "_Sampler", *, ctx=None, index: int = -1) -> int:
        """The next token. Under a grammar, the token is drawn freely first and only checked against the
        grammar (one candidate, cheap); only when the grammar rejects it is the whole vocabulary masked
        and the token drawn again — as llama.cpp's own common sampler does. Greedy picks the same token
        as masking first would; sampling draws from exactly the masked distribution (a rejected draw
        is redrawn from it), but pays for the mask only on rejected tokens."""
        import llama_cpp

        ctx = self.llama.ctx if ctx is None else ctx
        token = llama_cpp.llama_sampler_sample(sampler.chain, ctx, index)
        if sampler.grammar is None:
            return token
        if not sampler.grammar_allows(token):
            token = self._sample_masked(sampler, ctx=ctx, index=index)
        llama_cpp.llama_sampler_accept(sampler.grammar, token)
        return token

    def _sample_masked(self, sampler: "_Sampler", *, ctx, index: int) -> int:
        import llama_cpp
        import numpy as np
        from llama_cpp._internals import LlamaTokenDataArray

        n_vocab = self.llama.n_vocab()
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(n_vocab,))
        if sampler.greedy:
            token = self._best_allowed(sampler, logits)
            if token is not None:
                llama_cpp.llama_sampler_accept(sampler.chain, token)
                return token
        if self._candidates is None:
            self._candidates = LlamaTokenDataArray(n_vocab=n_vocab)
        candidates = self._candidates
        candidates.copy_logits(logits)
        llama_cpp.llama_sampler_apply(sampler.grammar, ctypes.byref(candidates.candidates))
        llama_cpp.llama_sampler_apply(sampler.chain, ctypes.byref(candidates.candidates))
        token = int(candidates.candidates_data.id[candidates.candidates.selected])
        llama_cpp.llama_sampler_accept(sampler.chain, token)
        return token

    @staticmethod
    def _best_allowed(sampler: "_Sampler", logits: "np.ndarray") -> int | None:
        """Greedy under a grammar that rejected the top token: the most likely token the grammar allows among
        the ``GREEDY_SCAN`` most likely (ties to the lower id, as masking and taking the maximum does), or
        None when it allows none of them. Checking a few dozen candidates one by one costs a fraction of a
        millisecond; masking the whole vocabulary costs milliseconds at a 49,152-token vocabulary."""
        import numpy as np

        top = np.argpartition(logits, -GREEDY_SCAN)[-GREEDY_SCAN:] if len(logits) > GREEDY_SCAN else np.arange(len(logits))
        for token in top[np.lexsort((top, -logits[top]))]:
            if sampler.grammar_allows(int(token)):
                return int(token)
        return None

    def _decode_loop(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[Chunk]:
        import llama_cpp

        self._check_idle()
        sampler = self._new_sampler(params)
        self._streaming = True
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(params.stop)
        budget = min(params.max_tokens, self.context_length - len(prompt_ids))
        completion_tokens = 0
        finish_reason = "length"
        text = ""
        try:
            self._evaluate_prompt(prompt_ids)
            while completion_tokens < budget:
                token = self._sample(sampler)
                completion_tokens += 1
                if llama_cpp.llama_vocab_is_eog(self._vocab, token) and not params.ignore_eos:
                    finish_reason = "stop"
                    break
                text, stopped = stops.feed(utf8.decode(self._token_bytes[token]))
                if stopped:
                    finish_reason = "stop"
                    break
                if text:
                    yield Chunk(text=text)
                if completion_tokens < budget:
                    self.llama.eval([token])
            yield final_chunk(stops=stops, decoder=utf8, text=text, finish_reason=finish_reason,
                              prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens)
        finally:
            sampler.close()
            self._streaming = False

    def _evaluate_prompt(self, prompt_ids: list[int]) -> None:
        """Decode the prompt, reusing the KV cache for the prefix it shares with what was decoded last."""
        self.llama.n_tokens = shared_prefix(list(self.llama.input_ids[: self.llama.n_tokens]), prompt_ids)
        self.llama.eval(prompt_ids[self.llama.n_tokens :])


def _log_softmax(logits: "np.ndarray") -> "np.ndarray":
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class _Sampler:
    """Owns one request's llama.cpp sampler chain and, apart from it, its grammar sampler, until ``close``."""

    def __init__(self, chain, grammar=None, *, greedy: bool = False) -> None:
        self.chain = chain
        self.grammar = grammar
        self.greedy = greedy  # the chain takes the most likely token (temperature 0)

    def grammar_allows(self, token: int) -> bool:
        """Whether the grammar accepts ``token`` next: the grammar sampler applied to that one candidate."""
        import llama_cpp

        one = (llama_cpp.llama_token_data * 1)()
        one[0].id, one[0].logit, one[0].p = token, 0.0, 0.0
        array = llama_cpp.llama_token_data_array(data=ctypes.cast(one, llama_cpp.llama_token_data_p), size=1,
                                                 selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(array))
        return one[0].logit != float("-inf")

    def close(self) -> None:
        import llama_cpp

        for name in ("chain", "grammar"):
            sampler = getattr(self, name)
            if sampler is not None:
                llama_cpp.llama_sampler_free(sampler)
                setattr(self, name, None)


def find_gguf(path: Path) -> Path:
    """The model GGUF at ``path``: the file itself, or the one ``.gguf`` in a dir (``imatrix*.gguf`` is not a model;
    ``<model>-Q4_K_M-noimatrix.gguf`` is)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ValueError(f"{path}: no such GGUF file or directory")
    candidates = sorted(p for p in path.glob(f"*{GGUF.suffix}") if not is_companion(p.name) and not p.name.startswith("."))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise ValueError(f"{path}: expected exactly one model .gguf file, found {found}")
    return candidates[0]


def inspect_gguf(path: Path) -> GGUFInfo:
    """Read a GGUF's header and tensor table; a clear ``ValueError`` naming the file when it is not a whole GGUF model."""
    import gguf

    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    file_bytes = path.stat().st_size
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # the reader raises whatever numpy/struct raise on a cut or garbled file
        raise ValueError(f"{path}: corrupt or truncated GGUF ({file_bytes} bytes): {type(err).__name__}: {err}") from None
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > file_bytes:
        raise ValueError(f"{path}: truncated GGUF: its tensors need {end} bytes, the file has {file_bytes}")
    fields = reader.fields
    if "tokenizer.ggml.tokens" not in fields:
        raise ValueError(f"{path}: the GGUF has no tokenizer (no tokenizer.ggml.tokens); convert it with convert/gguf.py")
    tensor_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    embedding = sum(int(t.n_bytes) for t in reader.tensors if t.name == "token_embd.weight")
    return GGUFInfo(
        path=path,
        file_bytes=file_bytes,
        architecture=_field(fields, "general.architecture"),
        file_type=_field(fields, "general.file_type"),
        n_tensors=len(reader.tensors),
        tensor_bytes=tensor_bytes,
        decode_bytes=tensor_bytes - embedding,
        matmul_weights=sum(int(t.n_elements) for t in reader.tensors if t.name.startswith("blk.") and len(t.shape) == 2),
        has_tokenizer=True,
        has_chat_template="tokenizer.chat_template" in fields,
        tensor_types={t.name: t.tensor_type.name for t in reader.tensors},
    )


def gguf_compute_dtype(tensor_types: dict[str, str]) -> str:
    """llama.cpp on a CPU multiplies F16/F32 layer weights in float32, BF16 ones in bfloat16, and quantized ones as
    int8 dot products (the activations quantized to Q8 on the fly)."""
    kinds = {kind for name, kind in tensor_types.items()
             if name.startswith("blk.") and name.endswith(".weight") and "norm" not in name}
    return "float32" if kinds <= {"F16", "F32"} else "bfloat16" if kinds == {"BF16"} else "int8"


def gguf_special_tokens(path: Path) -> tuple[str | None, str | None]:
    """(BOS, EOS) as the GGUF's tokenizer metadata names them (None where it says none, or BOS is not added);
    a ``ValueError`` when the file is not a readable GGUF."""
    import gguf

    try:
        fields = gguf.GGUFReader(str(path)).fields
    except Exception as err:  # the reader raises whatever numpy/struct raise on a cut or garbled file
        raise ValueError(f"{path}: not a readable GGUF ({type(err).__name__}: {err})") from None
    if "tokenizer.ggml.tokens" not in fields:
        return None, None
    tokens = fields["tokenizer.ggml.tokens"].contents()

    def token(key: str) -> str | None:
        index = _field(fields, key)
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else None

    add_bos = _field(fields, "tokenizer.ggml.add_bos_token")
    return (None if add_bos is False else token("tokenizer.ggml.bos_token_id")), token("tokenizer.ggml.eos_token_id")


def _field(fields, key: str):
    return fields[key].contents() if key in fields else None


def token_bytes_table(vocab, *, n_vocab: int) -> list[bytes]:
    """The bytes each token id stands for (``▁`` as a space, ``<0xNN>`` as that byte, control tokens as nothing)."""
    import llama_cpp

    buffer = ctypes.create_string_buffer(256)
    table = []
    for token in range(n_vocab):
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
        if size < 0:
            raise ValueError(f"token {token} has a piece longer than {len(buffer)} bytes")
        table.append(buffer.raw[:size])
    return table


def _gpu_layers(device: str) -> int:
    """Layers to offload: 0 on CPU, all on CUDA (when this llama-cpp-python build can offload)."""
    import llama_cpp

    if device == "cpu":
        return 0
    if device == "cuda" or device.startswith("cuda:"):
        if not llama_cpp.llama_supports_gpu_offload():
            raise RuntimeError(
                f"device {device!r} requested but this llama-cpp-python build has no GPU offload; "
                "reinstall it with CMAKE_ARGS=-DGGML_CUDA=on, or use --device cpu"
            )
        return -1
    raise ValueError(f"unknown device {device!r}; use cpu or cuda")
