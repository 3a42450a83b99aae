"""JSON schemas of varied features for the structured-output tests and benchmark: nested objects,
arrays with minItems/maxItems, enums, const, anyOf, string formats and patterns, numbers with
bounds, $defs references, nullable fields. Strings carry maxLength so that a small model's output
ends within the token budget."""

S = {"type": "string", "maxLength": 24}


def obj(props, required=None):
    return {"type": "object", "properties": props,
            "required": list(props) if required is None else required}


SCHEMAS = [
    obj({"name": S}),
    obj({"name": S, "age": {"type": "integer", "minimum": 0, "maximum": 120}}),
    obj({"city": S, "country": S, "population": {"type": "integer", "minimum": 0, "maximum": 100000000}}),
    obj({"ok": {"type": "boolean"}}),
    obj({"score": {"type": "number", "minimum": 0, "maximum": 1}}),
    obj({"temperature": {"type": "number", "exclusiveMinimum": -50, "exclusiveMaximum": 60}}),
    obj({"color": {"enum": ["red", "green", "blue"]}}),
    obj({"level": {"enum": [1, 2, 3]}, "label": {"enum": ["low", "mid", "high"]}}),
    obj({"kind": {"const": "point"}, "x": {"type": "integer", "minimum": -99, "maximum": 99}, "y": {"type": "integer", "minimum": -99, "maximum": 99}}),
    obj({"tags": {"type": "array", "items": S, "minItems": 1, "maxItems": 3}}),
    obj({"numbers": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
                     "minItems": 2, "maxItems": 4}}),
    obj({"pair": {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2}}),
    obj({"empty_ok": {"type": "array", "items": S, "maxItems": 2}}),
    obj({"person": obj({"first": S, "last": S})}),
    obj({"address": obj({"street": S, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}})}),
    obj({"a": obj({"b": obj({"c": {"type": "integer", "minimum": 0, "maximum": 9999}})})}),
    obj({"items": {"type": "array", "maxItems": 2,
                   "items": obj({"id": {"type": "integer", "minimum": 0, "maximum": 999}, "name": S})}}),
    obj({"value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 999}, {"type": "string", "maxLength": 10}]}}),
    obj({"shape": {"anyOf": [obj({"radius": {"type": "number", "minimum": 0}}),
                             obj({"side": {"type": "number", "minimum": 0}})]}}),
    obj({"maybe": {"anyOf": [S, {"type": "null"}]}}),
    obj({"nickname": {"type": ["string", "null"], "maxLength": 12}}),
    obj({"email": {"type": "string", "format": "email", "maxLength": 40}}),
    obj({"date": {"type": "string", "format": "date"}}),
    obj({"time": {"type": "string", "format": "time"}}),
    obj({"when": {"type": "string", "format": "date-time"}}),
    obj({"id": {"type": "string", "format": "uuid"}}),
    obj({"ip": {"type": "string", "format": "ipv4"}}),
    obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}}),
    obj({"word": {"type": "string", "minLength": 3, "maxLength": 8}}),
    obj({"count": {"type": "integer", "minimum": 10, "maximum": 99}}),
    obj({"neg": {"type": "integer", "maximum": -1, "minimum": -1000}}),
    obj({"price": {"type": "number", "minimum": 0.5, "maximum": 100}}),
    obj({"name": S, "extra": S}, required=["name"]),
    obj({"title": S, "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
         "genres": {"type": "array", "items": {"enum": ["drama", "comedy", "action"]},
                    "minItems": 1, "maxItems": 2}}),
    {"$defs": {"pt": obj({"x": {"type": "integer", "minimum": -99, "maximum": 99}, "y": {"type": "integer", "minimum": -99, "maximum": 99}})},
     **obj({"start": {"$ref": "#/$defs/pt"}, "end": {"$ref": "#/$defs/pt"}})},
    obj({"matrix": {"type": "array", "maxItems": 2,
                    "items": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "minItems": 1,
                              "maxItems": 2}}}),
    obj({"status": {"enum": ["ok", "error"]}, "detail": {"anyOf": [S, {"type": "null"}]}}),
    obj({"flags": obj({"a": {"type": "boolean"}, "b": {"type": "boolean"}, "c": {"type": "boolean"}})}),
    obj({"answer": {"type": "string", "enum": ["yes", "no", "maybe"]},
         "confidence": {"type": "number", "minimum": 0, "maximum": 1}}),
    obj({"user": obj({"name": S, "roles": {"type": "array", "items": {"enum": ["admin", "user"]},
                                            "minItems": 1, "maxItems": 2}})}),
    obj({"latitude": {"type": "number", "minimum": -90, "maximum": 90},
         "longitude": {"type": "number", "minimum": -180, "maximum": 180}}),
    obj({"steps": {"type": "array", "minItems": 1, "maxItems": 3,
                   "items": obj({"n": {"type": "integer", "minimum": 1, "maximum": 9}, "do": S})}}),
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 999}, "minItems": 1, "maxItems": 3},
    {"type": "string", "enum": ["north", "south", "east", "west"]},
    {"type": "integer", "minimum": 1, "maximum": 5},
]

# A typical tool's parameters (the benchmark's compile-time case).
TOOL_SCHEMA = obj({
    "location": {"type": "string", "description": "City and country, e.g. Paris, France"},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 14},
    "include": {"type": "array", "items": {"enum": ["wind", "rain", "uv", "humidity"]},
                "maxItems": 4},
}, required=["location", "unit"])
