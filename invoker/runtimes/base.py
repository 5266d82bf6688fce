"""What every runtime offers: text in, text deltas out.

A runtime loads one artifact (an fp16 checkpoint, a GPTQ/AWQ dir, a GGUF file) and generates from a
prompt that is already rendered (``invoker.prompt.render_prompt``; the runtime adds BOS). Eval, bench
and the server all go through ``Runtime.stream`` — ``generate`` below is the same stream, collected.

Shared here so every runtime behaves alike:
- ``GenerationParams`` — what a request may ask for, checked once.
- ``StopMatcher`` — stop strings: the output ends *before* the first stop string, and text that could
  still become one is held back until it is resolved, so a stop string never leaks into a stream.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one request. ``temperature == 0`` means greedy decoding.

    ``seed`` seeds this request's own random generator (no global seed); ``None`` draws a fresh one.
    ``stop`` accepts any sequence of non-empty strings and is stored as a tuple.
    ``grammar`` (GBNF text, see ``invoker.constrain``) constrains the output; ``None`` leaves it free.
    ``ignore_eos`` keeps generating past end-of-sequence tokens (they add no text), so that a
    benchmark generates exactly ``max_tokens`` tokens.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    grammar: str | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # a lone string is one stop string, not one per character
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {list(self.stop)!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")
        if self.grammar is not None and not (isinstance(self.grammar, str) and self.grammar.strip()):
            raise ValueError(f"grammar must be a non-empty GBNF string or None, got {self.grammar!r}")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be true or false, got {self.ignore_eos!r}")


@dataclass(frozen=True)
class Chunk:
    """A text delta. The last chunk of a stream carries ``finish_reason`` and the token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@runtime_checkable
class Runtime(Protocol):
    format: str  # a name of invoker.formats.ARTIFACTS
    runtime: str  # "transformers", ...
    packages: tuple[str, ...]  # the packages it computes with (bench records their versions)
    model_path: Path
    context_length: int

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes as a prompt, BOS included."""
        ...

    def stream(self, prompt: str, params: GenerationParams) -> Iterator[Chunk]:
        """Generate from ``prompt``, yielding text deltas; the last chunk has ``finish_reason``.

        Raises ``ValueError`` at once (before the first chunk) when the prompt exceeds the context.
        Closing the iterator stops generation.
        """
        ...


def generate(runtime: Runtime, prompt: str, params: GenerationParams) -> Generation:
    """Run ``runtime.stream`` to the end and collect it: the one code path, non-streaming."""
    parts: list[str] = []
    last = None
    for last in runtime.stream(prompt, params):
        parts.append(last.text)
    if last is None or last.finish_reason is None:
        raise RuntimeError(f"{runtime.runtime} runtime ended a stream without a finish_reason")
    return Generation(
        text="".join(parts),
        finish_reason=last.finish_reason,
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
    )


class StopMatcher:
    """Cut a growing text at the first stop string, holding back what might begin one.

    ``feed(delta)`` returns ``(text_to_emit, stopped)``. Once ``stopped`` is true the text before the
    stop string has been emitted and the rest must be dropped. At the natural end of a stream,
    ``flush()`` returns the held-back text (it turned out not to be a stop string).
    """

    def __init__(self, stop: tuple[str, ...]) -> None:
        self._stop = tuple(stop)
        self._held = ""
        self.stopped = False

    def feed(self, delta: str) -> tuple[str, bool]:
        if self.stopped:
            raise RuntimeError("StopMatcher.feed after a stop string was found")
        if not self._stop:
            return delta, False
        text = self._held + delta
        hits = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        if hits:
            self._held = ""
            self.stopped = True
            return text[: min(hits)], True
        keep = self._longest_stop_prefix_suffix(text)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        """Length of the longest end of ``text`` that is the start of some stop string."""
        for size in range(min(len(text), max(len(s) for s in self._stop) - 1), 0, -1):
            tail = text[-size:]
            if any(s.startswith(tail) for s in self._stop):
                return size
        return 0


def final_chunk(*, stops: StopMatcher, decoder, text: str, finish_reason: str, prompt_tokens: int,
                completion_tokens: int) -> Chunk:
    """A stream's last chunk: what the stop matcher and the incremental UTF-8 ``decoder`` still hold, with
    the counts. ``text`` is what the last ``feed`` returned when it found a stop string."""
    if stops.stopped:
        tail = text
    else:
        tail, stopped = stops.feed(decoder.decode(b"", final=True))
        tail += "" if stopped else stops.flush()
        finish_reason = "stop" if stopped else finish_reason
    return Chunk(text=tail, finish_reason=finish_reason, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


class RowText:
    """One sequence's text as a stream emits it: token bytes -> incremental UTF-8 -> stop strings."""

    def __init__(self, token_bytes: list[bytes], stop: tuple[str, ...]) -> None:
        self._token_bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = StopMatcher(stop)
        self._last = ""

    def feed(self, token: int) -> tuple[str, bool]:
        """(text to emit now, whether a stop string ended the sequence)."""
        piece = self._token_bytes[token] if token < len(self._token_bytes) else b""
        self._last, stopped = self._stops.feed(self._utf8.decode(piece))
        return self._last, stopped

    def final(self, *, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> Chunk:
        return final_chunk(stops=self._stops, decoder=self._utf8, text=self._last, finish_reason=finish_reason,
                           prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


class BatchRows:
    """The bookkeeping of batched greedy generation (``generate_batch``), shared by the runtimes: each row's
    text, token count, budget and finish reason, ending as ``generate`` would end it one by one. A prompt over
    the context is a ``ValueError``, as in ``stream``."""

    def __init__(self, *, token_bytes: list[bytes], params: GenerationParams, prompt_lengths: list[int],
                 context_length: int, is_eos) -> None:
        for length in prompt_lengths:
            if length > context_length:
                raise ValueError(f"prompt is {length} tokens, longer than the model's context of {context_length} tokens")
        self._params, self._is_eos, self._prompt_lengths = params, is_eos, prompt_lengths
        self.budgets = [min(params.max_tokens, context_length - length) for length in prompt_lengths]
        self._rows = [RowText(token_bytes, params.stop) for _ in prompt_lengths]
        self._texts: list[list[str]] = [[] for _ in prompt_lengths]
        self.counts = [0] * len(prompt_lengths)
        self.finish: list[str | None] = ["length" if budget < 1 else None for budget in self.budgets]

    def active(self) -> list[int]:
        """The rows still decoding."""
        return [row for row, reason in enumerate(self.finish) if reason is None]

    def feed(self, row: int, token: int) -> bool:
        """Row ``row`` generated ``token``; whether that finished it (EOS, a stop string, its budget)."""
        self.counts[row] += 1
        if self._is_eos(token) and not self._params.ignore_eos:
            self.finish[row] = "stop"
            return True
        text, stopped = self._rows[row].feed(token)
        self._texts[row].append(text)
        if stopped:
            self.finish[row] = "stop"
        elif self.counts[row] >= self.budgets[row]:
            self.finish[row] = "length"
        return self.finish[row] is not None

    def results(self) -> list[Generation]:
        results = []
        for row, text in enumerate(self._rows):
            tail = text.final(finish_reason=self.finish[row], prompt_tokens=self._prompt_lengths[row],
                              completion_tokens=self.counts[row])
            results.append(Generation(text="".join(self._texts[row]) + tail.text, finish_reason=tail.finish_reason,
                                      prompt_tokens=tail.prompt_tokens, completion_tokens=tail.completion_tokens))
        return results
