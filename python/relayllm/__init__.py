"""relayllm: an LLM inference engine built around relay attention, in-process.

    from relayllm import LLM, SamplingParams
    llm = LLM(enable_relay_attention=True)          # the default model
    outputs = llm.generate(["Hello!"], SamplingParams(max_tokens=32))
    print(outputs[0].outputs[0].text)

The names follow vLLM's offline API (LLM, SamplingParams, RequestOutput) and vllm-ra's relay
options (enable_relay_attention, sys_prompt, sys_schema, fill_prefix_kv_cache).
"""

from .llm import LLM
from .outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from .sampling_params import GuidedDecodingParams, SamplingParams
from .tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = ["LLM", "SamplingParams", "GuidedDecodingParams", "RequestOutput", "CompletionOutput", "Logprob",
           "RequestMetrics", "Tokenizer", "__version__"]
