"""SamplingParams: vLLM's sampling settings, with its names, defaults and checks."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from .guided_decoding import GuidedDecodingParams

__all__ = ["SamplingParams", "GuidedDecodingParams"]

_UNSET: Any = object()

# Fields whose value, when not given, comes from the model (its generation_config.json, or
# greedy decoding for the default model), as `relayllm generate` does for flags not passed.
_MODEL_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}

# vLLM fields relayllm does not implement: accepted at their "off" value only.
_UNSUPPORTED_OFF = {
    "best_of": None,
    "logits_processors": None,
    "truncate_prompt_tokens": None,
    "extra_args": None,
    "detokenize": True,
    "spaces_between_special_tokens": True,
}


def _check_type(name: str, value: Any, types: tuple, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    # bool is an int in Python; a bool where a number belongs is a mistake.
    if isinstance(value, bool) and bool not in types:
        raise TypeError(f"SamplingParams: {name} must be {_type_names(types)}, got bool")
    if not isinstance(value, types):
        raise TypeError(
            f"SamplingParams: {name} must be {_type_names(types)}"
            f"{' or None' if allow_none else ''}, got {type(value).__name__}"
        )


def _type_names(types: tuple) -> str:
    return " or ".join(t.__name__ for t in types)


class SamplingParams:
    """How to sample one request's tokens; vLLM's `SamplingParams` names and defaults.

    Args:
        n: Completions to generate per prompt (each with seed + k when a seed is given).
        presence_penalty: Subtracted once from the logit of each token already generated,
            in [-2, 2].
        frequency_penalty: Subtracted per occurrence of a generated token, in [-2, 2].
        repetition_penalty: > 0; divides positive and multiplies negative logits of prompt
            and generated tokens (1: off). Model default when not given.
        temperature: >= 0; 0 is greedy. Model default when not given (greedy for the
            default model, else the model's generation_config.json, else 1).
        top_p: Nucleus sampling mass in (0, 1]. Model default when not given.
        top_k: Keep the k most likely tokens; 0 or -1 keeps all. Model default when not given.
        min_p: Drop tokens below min_p times the top probability, in [0, 1].
        seed: Seed of this request's random stream (None: the LLM's seed).
        stop: Stop string(s); the text ends before them unless include_stop_str_in_output.
        stop_token_ids: Token ids that end generation (kept in the output ids).
        ignore_eos: Keep generating past EOS.
        max_tokens: Most tokens to generate (>= 1).
        min_tokens: EOS and stop_token_ids are blocked until this many tokens exist.
        logprobs: Return the top `logprobs` logprobs (plus the chosen token's) per generated
            token (0: the chosen token only; at most 20).
        prompt_logprobs: The same for every prompt token.
        include_stop_str_in_output: Keep the matched stop string in the text.
        skip_special_tokens: Leave special tokens out of the text.
        bad_words: Words never generated (each as it tokenizes with and without a leading
            space).
        guided_decoding: A GuidedDecodingParams: the output follows a JSON schema, a regex,
            a choice, an EBNF grammar or any JSON object (compiled with xgrammar).
        logit_bias: {token id: bias} added to the logits, bias in [-100, 100].
        allowed_token_ids: Only these token ids may be generated.

    The other vLLM fields (best_of, logits_processors, truncate_prompt_tokens, extra_args,
    detokenize, spaces_between_special_tokens, output_kind) are accepted at their default
    only; any other value raises ValueError naming the field.
    """

    def __init__(
        self,
        n: int = 1,
        best_of: Optional[int] = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repetition_penalty: float = _UNSET,
        temperature: float = _UNSET,
        top_p: float = _UNSET,
        top_k: int = _UNSET,
        min_p: float = 0.0,
        seed: Optional[int] = None,
        stop: Optional[Union[str, List[str]]] = None,
        stop_token_ids: Optional[List[int]] = None,
        bad_words: Optional[List[str]] = None,
        ignore_eos: bool = False,
        max_tokens: Optional[int] = 16,
        min_tokens: int = 0,
        logprobs: Optional[int] = None,
        prompt_logprobs: Optional[int] = None,
        detokenize: bool = True,
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
        logits_processors: Optional[Any] = None,
        include_stop_str_in_output: bool = False,
        truncate_prompt_tokens: Optional[int] = None,
        output_kind: Any = None,
        guided_decoding: Optional[Any] = None,
        logit_bias: Optional[Any] = None,
        allowed_token_ids: Optional[List[int]] = None,
        extra_args: Optional[Dict[str, Any]] = None,
    ) -> None:
        given = {
            "repetition_penalty": repetition_penalty,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
        }
        for name, value in given.items():
            setattr(self, name, _MODEL_DEFAULTS[name] if value is _UNSET else value)
        # Set after the loop above, which would otherwise count every field as given.
        self._explicit = {k for k, v in given.items() if v is not _UNSET}
        self.n = n
        self.best_of = best_of
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty
        self.min_p = min_p
        self.seed = seed
        self.stop = [stop] if isinstance(stop, str) else (list(stop) if stop is not None else [])
        self.stop_token_ids = list(stop_token_ids) if stop_token_ids is not None else []
        self.bad_words = bad_words
        self.ignore_eos = ignore_eos
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self.logprobs = logprobs
        self.prompt_logprobs = prompt_logprobs
        self.detokenize = detokenize
        self.skip_special_tokens = skip_special_tokens
        self.spaces_between_special_tokens = spaces_between_special_tokens
        self.logits_processors = logits_processors
        self.include_stop_str_in_output = include_stop_str_in_output
        self.truncate_prompt_tokens = truncate_prompt_tokens
        self.output_kind = output_kind
        self.guided_decoding = guided_decoding
        self.logit_bias = logit_bias
        self.allowed_token_ids = allowed_token_ids
        self.extra_args = extra_args
        self._verify()

    def __setattr__(self, name: str, value: Any) -> None:
        # A field set after construction counts as given (it no longer follows the model).
        if name in _MODEL_DEFAULTS and "_explicit" in self.__dict__:
            self._explicit.add(name)
        super().__setattr__(name, value)

    def _verify(self) -> None:
        _check_type("n", self.n, (int,))
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        for name in ("presence_penalty", "frequency_penalty", "repetition_penalty",
                     "temperature", "top_p", "min_p"):
            _check_type(name, getattr(self, name), (int, float))
        _check_type("top_k", self.top_k, (int,))
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise ValueError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}.")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise ValueError(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}.")
        if not self.repetition_penalty > 0.0:
            raise ValueError(f"repetition_penalty must be greater than zero, got {self.repetition_penalty}.")
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < -1:
            raise ValueError(f"top_k must be 0 or -1 (disable), or at least 1, got {self.top_k}.")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is None:
            raise ValueError("max_tokens=None (up to the context) is not supported: give a number.")
        _check_type("max_tokens", self.max_tokens, (int,))
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        _check_type("min_tokens", self.min_tokens, (int,))
        if self.min_tokens < 0:
            raise ValueError(f"min_tokens must be greater than or equal to 0, got {self.min_tokens}.")
        if self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, "
                f"got {self.min_tokens}.")
        _check_type("seed", self.seed, (int,), allow_none=True)
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}.")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            _check_type(name, value, (int,), allow_none=True)
            if value is not None and not 0 <= value <= 20:
                raise ValueError(f"{name} must be in [0, 20], got {value}.")
        for i, s in enumerate(self.stop):
            if not isinstance(s, str):
                raise TypeError(f"SamplingParams: stop[{i}] must be str, got {type(s).__name__}")
            if not s:
                raise ValueError("stop cannot contain an empty string.")
        for i, t in enumerate(self.stop_token_ids):
            if isinstance(t, bool) or not isinstance(t, int):
                raise TypeError(
                    f"SamplingParams: stop_token_ids[{i}] must be int, got {type(t).__name__}")
        for name in ("ignore_eos", "skip_special_tokens", "include_stop_str_in_output"):
            _check_type(name, getattr(self, name), (bool,))
        self._verify_constraints()
        for name, off in _UNSUPPORTED_OFF.items():
            value = getattr(self, name)
            if name == "best_of" and value is not None and value == self.n:
                continue
            if value != off:
                raise ValueError(
                    f"SamplingParams: {name}={value!r} is not supported by relayllm "
                    f"(only {off!r})")

    def _verify_constraints(self) -> None:
        # Types here; ranges and ids against the vocabulary are checked by the engine, which
        # names the field in its error as the server does.
        if self.guided_decoding is not None and not isinstance(self.guided_decoding,
                                                               GuidedDecodingParams):
            raise TypeError("SamplingParams: guided_decoding must be GuidedDecodingParams, "
                            f"got {type(self.guided_decoding).__name__}")
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict):
                raise TypeError("SamplingParams: logit_bias must be a dict of token id to "
                                f"bias, got {type(self.logit_bias).__name__}")
            for k, v in self.logit_bias.items():
                if isinstance(k, bool) or not isinstance(k, int):
                    raise TypeError(f"SamplingParams: logit_bias key {k!r} must be an int")
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise TypeError(f"SamplingParams: logit_bias[{k}] must be a number, "
                                    f"got {type(v).__name__}")
        for name in ("allowed_token_ids", "bad_words"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"SamplingParams: {name} must be a list, "
                                f"got {type(value).__name__}")
            item = str if name == "bad_words" else int
            for i, v in enumerate(value):
                if isinstance(v, bool) or not isinstance(v, item):
                    raise TypeError(f"SamplingParams: {name}[{i}] must be {item.__name__}, "
                                    f"got {type(v).__name__}")

    def _engine_fields(self) -> Dict[str, Any]:
        """The fields as the engine's request parser reads them (one JSONL line of
        `relayllm generate`); model-default fields only when given."""
        self._verify()
        fields: Dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "min_tokens": self.min_tokens,
            "min_p": float(self.min_p),
            "presence_penalty": float(self.presence_penalty),
            "frequency_penalty": float(self.frequency_penalty),
            "ignore_eos": self.ignore_eos,
            "include_stop_str_in_output": self.include_stop_str_in_output,
            "skip_special_tokens": self.skip_special_tokens,
            "seed": self.seed,
            "logprobs": self.logprobs,
            "prompt_logprobs": self.prompt_logprobs,
        }
        if self.stop:
            fields["stop"] = list(self.stop)
        if self.stop_token_ids:
            fields["stop_token_ids"] = list(self.stop_token_ids)
        if self.guided_decoding is not None:
            fields.update(self.guided_decoding.engine_fields())
        if self.logit_bias:
            fields["logit_bias"] = {str(k): float(v) for k, v in self.logit_bias.items()}
        if self.allowed_token_ids is not None:
            fields["allowed_token_ids"] = list(self.allowed_token_ids)
        if self.bad_words:
            fields["bad_words"] = list(self.bad_words)
        for name in self._explicit:
            value = getattr(self, name)
            fields[name] = value if name == "top_k" else float(value)
        return fields

    def clone(self) -> "SamplingParams":
        import copy

        return copy.deepcopy(self)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={getattr(self, k)!r}"
            for k in ("n", "presence_penalty", "frequency_penalty", "repetition_penalty",
                      "temperature", "top_p", "top_k", "min_p", "seed", "stop",
                      "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs",
                      "prompt_logprobs", "skip_special_tokens", "include_stop_str_in_output"))
        return f"SamplingParams({fields})"
