"""Chat (vLLM's LLM.chat): conversations rendered by the model's chat template. With relay
attention on, conversations that share a system message share its KV.
Run: python examples/chat.py [--model PATH] [--max-tokens N]"""
import argparse

from relayllm import LLM, SamplingParams

parser = argparse.ArgumentParser()
parser.add_argument("--model", default=None)
parser.add_argument("--max-tokens", type=int, default=48)
args = parser.parse_args()

llm = LLM(model=args.model, enable_relay_attention=True)
system = {"role": "system", "content": "You are a concise travel guide. Answer in one sentence."}
conversations = [
    [system, {"role": "user", "content": "What should I see in Paris?"}],
    [system, {"role": "user", "content": "What should I eat in Naples?"}],
    [system,
     {"role": "user", "content": "Where is Kyoto?"},
     {"role": "assistant", "content": "Kyoto is in the Kansai region of Japan."},
     {"role": "user", "content": "When should I go there?"}],
]
outputs = llm.chat(conversations, SamplingParams(temperature=0.0, max_tokens=args.max_tokens))
for conversation, output in zip(conversations, outputs):
    print(f"{conversation[-1]['content']!r} -> {output.outputs[0].text!r} "
          f"(relay prefix tokens: {output.relay_prefix_tokens})")
