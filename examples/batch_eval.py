"""A batch evaluation loop in the style of vllm-ra's MMLU script: each subject has a few-shot
prefix shared by all its questions; with relay attention the prefix is computed once per
subject (fill_prefix_kv_cache), without it every prompt carries it. Accuracy and time per mode.
Run: python examples/batch_eval.py [--model PATH] [--no-relay]"""
import argparse
import time

from relayllm import LLM, SamplingParams

parser = argparse.ArgumentParser()
parser.add_argument("--model", default=None)
parser.add_argument("--no-relay", action="store_true")
args = parser.parse_args()
relay = not args.no_relay

# A tiny stand-in for a data set: (subject, few-shot examples, questions with answers).
SUBJECTS = {
    "arithmetic": (
        [("2 + 2 = ?\nA. 3\nB. 4\nC. 5\nD. 6", "B"), ("5 - 3 = ?\nA. 2\nB. 1\nC. 8\nD. 0", "A")],
        [("3 + 4 = ?\nA. 1\nB. 12\nC. 7\nD. 5", "C"), ("9 - 9 = ?\nA. 9\nB. 18\nC. 1\nD. 0", "D"),
         ("2 * 3 = ?\nA. 6\nB. 5\nC. 8\nD. 9", "A")],
    ),
    "geography": (
        [("The capital of Italy is\nA. Paris\nB. Rome\nC. Oslo\nD. Bern", "B")],
        [("The capital of France is\nA. Madrid\nB. Lima\nC. Paris\nD. Cairo", "C"),
         ("The capital of Japan is\nA. Tokyo\nB. Seoul\nC. Hanoi\nD. Delhi", "A")],
    ),
}


def fmt(question, answer=None):
    text = f"There is a single choice question. Answer with A, B, C or D.\nQuestion: {question}\nAnswer:"
    return text + (f" {answer}\n\n" if answer else "")


def first_capital(text):
    return next((c for c in text if c.isupper()), "")


llm = LLM(model=args.model, enable_relay_attention=relay,
          sys_schema="{__SYS_PROMPT}{__USR_PROMPT}", sys_prompt="")
sampling_params = SamplingParams(temperature=0.0, max_tokens=2)
correct = total = 0
start = time.perf_counter()
for subject, (shots, questions) in SUBJECTS.items():
    prefix = "".join(fmt(q, a) for q, a in shots)
    prompts = [fmt(q) for q, _ in questions]
    if relay:
        llm.fill_prefix_kv_cache(prefix)
    else:
        prompts = [prefix + p for p in prompts]
    outputs = llm.generate(prompts, sampling_params, use_tqdm=False)
    for output, (_, gold) in zip(outputs, questions):
        correct += first_capital(output.outputs[0].text) == gold
        total += 1
    print(f"{subject}: {len(prompts)} questions, prefix {outputs[0].relay_prefix_tokens} tokens shared")
print(f"accuracy {correct}/{total}, {time.perf_counter() - start:.2f} s (relay {'on' if relay else 'off'})")
