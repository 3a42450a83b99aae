"""The results of generate and chat: vLLM's RequestOutput and CompletionOutput shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

__all__ = ["Logprob", "CompletionOutput", "RequestMetrics", "RequestOutput"]


@dataclass
class Logprob:
    """One token's log probability. rank: 1 for the most likely token; None for a chosen
    token outside the requested top ones (its rank is not computed)."""

    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


# Per position: token id -> Logprob (the requested top ones plus the chosen token).
SampleLogprobs = List[Dict[int, Logprob]]
PromptLogprobs = List[Optional[Dict[int, Logprob]]]


@dataclass
class CompletionOutput:
    """One completion of a request.

    index: which of the request's n completions. text: the generated text (stop strings
    applied). token_ids: the generated ids. cumulative_logprob: the sum of the chosen
    tokens' logprobs (None unless logprobs were asked for). logprobs: per generated token
    (None unless asked for). finish_reason: "stop", "length" or "abort". stop_reason: the
    stop string or stop token id that ended it, else None.
    """

    index: int
    text: str
    token_ids: List[int]
    cumulative_logprob: Optional[float]
    logprobs: Optional[SampleLogprobs]
    finish_reason: Optional[str] = None
    stop_reason: Optional[object] = None
    lora_request: None = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestMetrics:
    """Timings of one request in seconds, measured by the engine: time_in_queue (arrival to
    first scheduled), first_token_latency (arrival to first token), e2e_latency (arrival to
    finish)."""

    time_in_queue: float
    first_token_latency: float
    e2e_latency: float


@dataclass
class RequestOutput:
    """The result of one prompt.

    request_id: a per-LLM counter, as a string. prompt: the prompt text (None for token id
    prompts). prompt_token_ids: the ids the engine ran (system prompt included).
    prompt_logprobs: per prompt token (the first None), when asked for. outputs: the n
    completions. finished: always True for generate/chat. num_cached_tokens: prompt tokens
    served by the automatic prefix cache. relay_prefix_tokens: prompt tokens served by a
    relay prefix (computed once for all requests sharing it).
    """

    request_id: str
    prompt: Optional[str]
    prompt_token_ids: List[int]
    prompt_logprobs: Optional[PromptLogprobs]
    outputs: List[CompletionOutput]
    finished: bool = True
    metrics: Optional[RequestMetrics] = None
    num_cached_tokens: int = 0
    relay_prefix_tokens: int = 0
    lora_request: None = None
    encoder_prompt: None = None
    encoder_prompt_token_ids: None = None
    kv_transfer_params: None = None
    multi_modal_placeholders: Dict[str, object] = field(default_factory=dict)
