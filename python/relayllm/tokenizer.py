"""The engine's tokenizer as LLM.get_tokenizer() hands it out (encode, decode,
apply_chat_template): the same tokenizer and chat template the engine runs."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

__all__ = ["Tokenizer"]


class Tokenizer:
    """A view of an LLM's tokenizer (valid while the LLM lives)."""

    def __init__(self, engine: Any, info: Dict[str, Any]) -> None:
        self._engine = engine
        self.vocab_size: int = info["vocab_size"]
        eos = info["eos_token_ids"]
        self.eos_token_id: Optional[int] = eos[0] if eos else None

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        """Token ids of `text` (with BOS when add_special_tokens and the model uses one)."""
        if not isinstance(text, str):
            raise TypeError(f"encode: text must be str, got {type(text).__name__}")
        return self._engine.encode(text, bool(add_special_tokens))

    def decode(self, token_ids: List[int], skip_special_tokens: bool = True) -> str:
        """Text of `token_ids`; ValueError naming an id outside the vocabulary."""
        ids = _token_list(token_ids, "decode: token_ids")
        return self._engine.decode(ids, bool(skip_special_tokens))

    def __call__(self, text: str, add_special_tokens: bool = True) -> Dict[str, List[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def apply_chat_template(
        self,
        conversation: List[Dict[str, Any]],
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        chat_template: Optional[str] = None,
        **kwargs: Any,
    ) -> Union[str, List[int]]:
        """Renders `conversation` with the model's chat template (or `chat_template`, the
        template's source); extra keyword arguments are template variables. Returns the
        token ids (tokenize=True, as transformers does) or the text."""
        text = self._engine.render_chat(conversation, bool(add_generation_prompt),
                                        chat_template or "", kwargs or None)
        return self._engine.encode(text, False) if tokenize else text


def _token_list(value: Any, what: str) -> List[int]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} must be a list of int, got {type(value).__name__}")
    for i, t in enumerate(value):
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"{what}[{i}] must be int, got {type(t).__name__}")
    return list(value)
