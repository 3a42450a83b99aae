"""GuidedDecodingParams: vLLM's structured-output settings for one request.

One of json, regex, choice, grammar, json_object and structural_tag constrains the output;
the engine compiles it with xgrammar (the same fields as the server's guided_* and
response_format). `from relayllm.sampling_params import GuidedDecodingParams` works as
`from vllm.sampling_params import GuidedDecodingParams` does.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Union

__all__ = ["GuidedDecodingParams"]

_KINDS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")


@dataclass
class GuidedDecodingParams:
    """Constrains one request's output.

    Args:
        json: A JSON schema, as a dict or its JSON text.
        regex: A regular expression the whole output matches.
        choice: The output is exactly one of these strings.
        grammar: An EBNF grammar (xgrammar's dialect, GBNF-like).
        json_object: Any JSON object.
        structural_tag: vLLM's structural tag, as its JSON text or a dict
            ({"structures": [{"begin", "schema", "end"}], "triggers": [...]}).
        backend: "xgrammar" or "auto" (None: auto), optionally with vLLM's options after a
            colon ("xgrammar:any-whitespace").
        disable_fallback: Accepted (there is no other backend to fall back to).
        disable_any_whitespace: JSON without free whitespace (the default here).
        disable_additional_properties: Not supported (ValueError when True).
        whitespace_pattern: Not supported (ValueError when given).
    """

    json: Optional[Union[str, Dict[str, Any]]] = None
    regex: Optional[str] = None
    choice: Optional[List[str]] = None
    grammar: Optional[str] = None
    json_object: Optional[bool] = None
    backend: Optional[str] = None
    backend_was_auto: bool = False
    disable_fallback: bool = False
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: Optional[str] = None
    structural_tag: Optional[Union[str, Dict[str, Any]]] = None

    @staticmethod
    def from_optional(
        json: Optional[Union[str, Dict[str, Any]]] = None,
        regex: Optional[str] = None,
        choice: Optional[List[str]] = None,
        grammar: Optional[str] = None,
        json_object: Optional[bool] = None,
        backend: Optional[str] = None,
        whitespace_pattern: Optional[str] = None,
        structural_tag: Optional[Union[str, Dict[str, Any]]] = None,
    ) -> Optional["GuidedDecodingParams"]:
        """None when no constraint is given (vLLM's helper)."""
        if all(v is None for v in (json, regex, choice, grammar, json_object, structural_tag)):
            return None
        return GuidedDecodingParams(json=json, regex=regex, choice=choice, grammar=grammar,
                                    json_object=json_object, backend=backend,
                                    whitespace_pattern=whitespace_pattern,
                                    structural_tag=structural_tag)

    def __post_init__(self) -> None:
        self._verify()

    def _given(self) -> List[str]:
        return [k for k in _KINDS if getattr(self, k) not in (None, False)]

    def _verify(self) -> None:
        given = self._given()
        if len(given) != 1:
            raise ValueError(
                "GuidedDecodingParams: give exactly one of json, regex, choice, grammar, "
                f"json_object, structural_tag (got {', '.join(given) if given else 'none'})")
        checks = {"regex": (str,), "grammar": (str,), "json": (str, dict),
                  "structural_tag": (str, dict), "json_object": (bool,), "choice": (list, tuple)}
        kind = given[0]
        value = getattr(self, kind)
        if not isinstance(value, checks[kind]):
            raise TypeError(f"GuidedDecodingParams: {kind} must be "
                            f"{' or '.join(t.__name__ for t in checks[kind])}, "
                            f"got {type(value).__name__}")
        if kind == "choice":
            for i, c in enumerate(value):
                if not isinstance(c, str):
                    raise TypeError(f"GuidedDecodingParams: choice[{i}] must be str, "
                                    f"got {type(c).__name__}")
        if self.backend is not None and not isinstance(self.backend, str):
            raise TypeError(f"GuidedDecodingParams: backend must be str, "
                            f"got {type(self.backend).__name__}")
        if self.whitespace_pattern is not None:
            raise ValueError("GuidedDecodingParams: whitespace_pattern is not supported by the "
                             "xgrammar backend (use backend='xgrammar:any-whitespace')")
        if self.disable_additional_properties:
            raise ValueError(
                "GuidedDecodingParams: disable_additional_properties is not supported "
                "(set additionalProperties: false in the schema)")

    def engine_fields(self) -> Dict[str, Any]:
        """The request fields the engine reads (those of the server and of a JSONL line)."""
        self._verify()
        kind = self._given()[0]
        value = getattr(self, kind)
        out: Dict[str, Any] = {}
        if kind == "json":
            out["guided_json"] = value
        elif kind == "regex":
            out["guided_regex"] = value
        elif kind == "choice":
            out["guided_choice"] = list(value)
        elif kind == "grammar":
            out["guided_grammar"] = value
        elif kind == "json_object":
            out["response_format"] = {"type": "json_object"}
        else:
            tag = _json.loads(value) if isinstance(value, str) else dict(value)
            if not isinstance(tag, dict):
                raise ValueError("GuidedDecodingParams: structural_tag must be a JSON object")
            out["response_format"] = {"type": "structural_tag", **tag}
        backend = self.backend or "auto"
        if self.disable_any_whitespace and ":" not in backend:
            backend += ":disable-any-whitespace"
        out["guided_decoding_backend"] = backend
        return out

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                          if getattr(self, f.name) not in (None, False))
        return f"GuidedDecodingParams({shown})"
