// jinja2's built-in filters and tests, the Python str/dict methods chat
// templates call, and the globals Hugging Face adds (raise_exception,
// strftime_now) next to jinja2's own (range, namespace, dict).
#pragma once

#include <string>
#include <string_view>

#include "relayllm/chat/jinja_value.h"

namespace relayllm::jinja {

// ValueError on an unknown filter or bad arguments.
Value apply_filter(std::string_view name, const Value& value, const CallArgs& args);
bool apply_test(std::string_view name, const Value& value, const CallArgs& args);
// Python's str/dict methods (startswith, split, strip, get, items, ...). Returns false when
// `object` has no method of that name, so the caller can try an attribute instead.
bool call_method(const Value& object, std::string_view name, const CallArgs& args, Value& result);

// What a for loop or a filter walks: list items, dict keys, string characters (code points);
// nothing for undefined. ValueError on anything else, naming `what` (a filter) unless empty.
ValueList iterate(const Value& v, std::string_view what);

// Every global a template sees before its own variables.
void add_builtin_globals(ValueDict& globals);

// Python string helpers on UTF-8 text, by code point.
size_t utf8_length(std::string_view s);
Value python_slice(const Value& object, const Value& start, const Value& stop, const Value& step);
Value python_index(const Value& object, const Value& index);  // undefined when out of range

}  // namespace relayllm::jinja
