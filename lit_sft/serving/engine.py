"""The generation engine: one thread decodes all requests together, through one KV cache.

Requests wait in a bounded queue. When the thread is free it starts a batch of as many as fit
(at most `max_batch_size`, and together within the context: the longest prompt plus the largest
`max_tokens`) and decodes them as `lit_sft.generation` does (left-padded rows, one cache with a
column for every position the context allows). Between two steps, waiting requests join the
batch while it has room (`lit_sft.serving.joining`), and each request hands its text on as it
grows. A request that ends (end-of-text, a stop string, its `max_tokens`, or its client gone)
leaves the batch at once, so later steps compute only the rows still decoding.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lit_sft.generation import DecodingRows, last_logits, left_pad
from lit_sft.model import GPT
from lit_sft.prepack import prepacked_linears
from lit_sft.serving.joining import add_rows, can_join
from lit_sft.serving.sampling import SamplingParams, choose_tokens
from lit_sft.serving.text import TextStream
from lit_sft.tokenizer import END_OF_TEXT, Tokenizer


@dataclass(frozen=True)
class Piece:
    """Text a request's answer released."""

    text: str


@dataclass(frozen=True)
class Finished:
    """A request's end: why (stop, length, cancelled, error) and how many tokens it generated."""

    reason: str
    completion_tokens: int
    error: str | None = None


Event = Piece | Finished


@dataclass
class Job:
    """One request: its prompt tokens and settings, and where its events go (`emit`, any thread)."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams
    emit: Callable[[Event], None]
    stop: tuple[str, ...] = ()
    cancelled: threading.Event = field(default_factory=threading.Event)
    completion_tokens: int = 0


class QueueFull(Exception):
    """The engine has `max_queue` requests waiting already."""


class Engine:
    """Decodes submitted jobs in batches on a thread of its own (`start`, `stop`)."""

    def __init__(
        self,
        model: GPT,
        tokenizer: Tokenizer,
        *,
        max_batch_size: int = 16,
        max_queue: int = 64,
        prepack_weights: bool = True,
        eos_id: int = END_OF_TEXT,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.prepack_weights = prepack_weights
        self.eos_id = eos_id
        self.context = model.config.context_length
        self.device = next(model.parameters()).device
        self.waiting: deque[Job] = deque()
        self.running = 0  # jobs in the batch being decoded
        self.batch_sizes: list[
            int
        ] = []  # the size each batch started with, for tests and benchmarks
        self.joined = 0  # jobs that joined a batch already decoding
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="lit_sft-engine", daemon=True)

    def submit(self, job: Job) -> None:
        """Queues `job`; QueueFull if `max_queue` jobs are waiting."""
        if len(job.prompt) + job.max_tokens > self.context or not job.prompt or job.max_tokens < 1:
            raise ValueError("a job's prompt and max_tokens must fit the context")  # a caller's bug
        with self._wake:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull
            self.waiting.append(job)
            self._wake.notify()

    def start(self) -> Engine:
        """Starts decoding on the engine's thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Finishes the batch being decoded and stops the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _serve(self) -> None:
        with prepacked_linears(self.model, self.max_batch_size, enabled=self.prepack_weights):
            while (batch := self._next_batch()) is not None:
                self.running = len(batch)
                try:
                    self._decode(batch)
                except Exception as error:  # a bug: the jobs end with it, the server keeps serving
                    for job in batch:
                        job.emit(Finished("error", job.completion_tokens, repr(error)))
                self.running = 0

    def _next_batch(self) -> list[Job] | None:
        """The waiting jobs that fit one batch, first come first served; None once stopping."""
        with self._wake:
            while not self._stopping:
                while self.waiting and self.waiting[0].cancelled.is_set():
                    self.waiting.popleft().emit(Finished("cancelled", 0))
                if self.waiting:
                    break
                self._wake.wait()
            if self._stopping:
                return None
            batch = [self.waiting.popleft()]
            while (
                self.waiting
                and len(batch) < self.max_batch_size
                and self._fits([*batch, self.waiting[0]])
            ):
                batch.append(self.waiting.popleft())
            self.batch_sizes.append(len(batch))
            return batch

    def _fits(self, jobs: list[Job]) -> bool:
        """Whether `jobs` share one cache within the context (left padding to the longest)."""
        return max(len(j.prompt) for j in jobs) + max(j.max_tokens for j in jobs) <= self.context

    def _decode(self, batch: list[Job]) -> None:
        """Decodes `batch`, and the jobs that join it, until each has ended."""
        prompt_ids, prompt_real = left_pad([job.prompt for job in batch], pad_id=0)
        # Room for every column the context allows, so that later requests can join.
        steps = self.context - prompt_ids.shape[1]
        rows = DecodingRows.start(self.model, prompt_ids, prompt_real, steps, True, self.device)
        generators = [job.sampling.generator(self.device) for job in batch]
        texts = [TextStream(self.tokenizer, job.stop) for job in batch]
        while len(rows.index):
            active = rows.index.tolist()
            with torch.inference_mode():
                logits = last_logits(self.model, rows.forward(self.model)).float()
                params = [batch[i].sampling for i in active]
                chosen = choose_tokens(logits, params, [generators[i] for i in active])
                tokens = rows.append(chosen, self.eos_id).tolist()
            ended = [
                row
                for row, (i, token) in enumerate(zip(active, tokens, strict=True))
                if self._advance(batch[i], texts[i], token)
            ]
            rows.done[ended] = True
            if ended:
                rows.drop_done()
            if joining := self._joining(rows):
                add_rows(self.model, rows, [job.prompt for job in joining], len(batch))
                batch += joining
                generators += [job.sampling.generator(self.device) for job in joining]
                texts += [TextStream(self.tokenizer, job.stop) for job in joining]
            self.running = len(rows.index)

    def _joining(self, rows: DecodingRows) -> list[Job]:
        """The waiting jobs that join the batch now, first come first served, while they fit."""
        joining: list[Job] = []
        with self._wake:
            while self.waiting and len(rows.index) + len(joining) < self.max_batch_size:
                job = self.waiting[0]
                if job.cancelled.is_set():
                    self.waiting.popleft().emit(Finished("cancelled", 0))
                elif can_join(rows, len(job.prompt), job.max_tokens):
                    joining.append(self.waiting.popleft())
                else:
                    break
        self.joined += len(joining)
        return joining

    def _advance(self, job: Job, text: TextStream, token: int) -> bool:
        """Gives `job` its next token; whether the job has ended (and emitted Finished)."""
        if job.cancelled.is_set():
            job.emit(Finished("cancelled", job.completion_tokens))
            return True
        if token == self.eos_id:
            return self._finish(job, text, "stop")
        job.completion_tokens += 1
        if piece := text.push(token):
            job.emit(Piece(piece))
        if text.stopped:
            job.emit(Finished("stop", job.completion_tokens))
            return True
        if job.completion_tokens >= job.max_tokens:
            return self._finish(job, text, "length")
        return False

    def _finish(self, job: Job, text: TextStream, reason: str) -> bool:
        if rest := text.finish():
            job.emit(Piece(rest))
        job.emit(Finished(reason, job.completion_tokens))
        return True
