// The Jinja subset behind chat templates. Expected strings are what jinja2 renders with
// transformers' settings (trim_blocks, lstrip_blocks, loopcontrols); the Python parity test
// checks the same features against jinja2 itself.
#include "relayllm/chat/chat_template.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "relayllm/common/error.h"

namespace relayllm {
namespace {

nlohmann::ordered_json conversation() {
  return nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "  Be brief.  "},
    {"role": "user", "content": "Héllo"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "user", "content": "Bye"}])");
}

std::string render(const std::string& source,
                   const nlohmann::ordered_json& extra = nlohmann::ordered_json::object(),
                   bool add_generation_prompt = false) {
  ChatTemplateOptions options;
  options.add_generation_prompt = add_generation_prompt;
  options.bos_token = "<s>";
  options.eos_token = "</s>";
  options.extra = extra;
  return ChatTemplate(source).render(conversation(), options);
}

std::string error_of(const std::string& source) {
  try {
    render(source);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ChatTemplateTest, TextAndOutput) {
  EXPECT_EQ(render("plain text"), "plain text");
  EXPECT_EQ(render("{{ bos_token }}x{{ eos_token }}"), "<s>x</s>");
  EXPECT_EQ(render("{{ messages[1].content }}|{{ messages[1]['role'] }}"), "Héllo|user");
  EXPECT_EQ(render("a\n"), "a");  // one trailing newline is dropped, as jinja2 does
  EXPECT_EQ(render("a\n\n"), "a\n");
}

TEST(ChatTemplateTest, WhitespaceControl) {
  EXPECT_EQ(render("a  {{- 'b' -}}  \n c"), "abc");
  EXPECT_EQ(render("{% if true %}\nyes\n{% endif %}\nafter"), "yes\nafter");  // trim_blocks
  EXPECT_EQ(render("x\n    {% if true %}\n    in\n    {% endif %}\ny"),
            "x\n    in\ny");  // lstrip_blocks
  EXPECT_EQ(render("x\n  {%+ if true %}in{% endif +%}\ny"), "x\n  in\ny");
  EXPECT_EQ(render("a {# note #}\nb {#- gone -#}   c"), "a bc");
  EXPECT_EQ(render("{{ 'x' }}\n{{ 'y' }}"), "x\ny");  // no trimming after expressions
  EXPECT_EQ(render("{% raw %}{{ kept }}{% endraw %}"), "{{ kept }}");
}

TEST(ChatTemplateTest, Loops) {
  EXPECT_EQ(
      render("{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
             "{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}"),
      "1043TrueFalse4;2132FalseFalse4;3221FalseFalse4;4310FalseTrue4;");
  EXPECT_EQ(render("{% for m in messages if m.role == 'user' %}{{ m.content }}{% endfor %}"),
            "HélloBye");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{% endfor %}"), "a1b2");
  EXPECT_EQ(render("{% for k, v in {'a': 1} | items %}{{ k }}{{ v }}{% endfor %}"), "a1");
  EXPECT_EQ(render("{% for c in 'hé' %}[{{ c }}]{% endfor %}"), "[h][é]");
  EXPECT_EQ(render("{% for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}"
                   "{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}"),
            "023");
  EXPECT_EQ(render("{% for i in range(3) %}{{ loop.cycle('a', 'b') }}{% endfor %}"), "aba");
  EXPECT_EQ(render("{% for m in messages[::-1] %}{{ m.role[0] }}{% endfor %}"), "uaus");
}

TEST(ChatTemplateTest, ScopesAndNamespaces) {
  // A loop iteration has its own scope: sets inside do not leak, namespace attributes do.
  EXPECT_EQ(
      render(
          "{% set x = 1 %}{% for i in range(2) %}{{ x }}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}"),
      "12121");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 "
                   "%}{% endfor %}"
                   "{{ ns.n }}"),
            "4");
  EXPECT_EQ(render("{% if true %}{% set y = 'kept' %}{% endif %}{{ y }}"), "kept");
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}"), "12");
  EXPECT_EQ(render("{% set block %}[{{ 1 + 1 }}]{% endset %}{{ block }}{{ block }}"), "[2][2]");
}

TEST(ChatTemplateTest, Macros) {
  EXPECT_EQ(render("{% macro tag(name, body='') %}<{{ name }}>{{ body }}{% endmacro %}"
                   "{{ tag('a') }}{{ tag('b', 'x') }}{{ tag(body='y', name='c') }}"),
            "<a><b>x<c>y");
}

TEST(ChatTemplateTest, Operators) {
  EXPECT_EQ(render("{{ 1 + 2 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 3 "
                   "}} {{ 0.1 + 0.2 }}"),
            "7 3.5 3 -4 2 8 0.30000000000000004");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none ~ true }} {{ 'a' + 'b' }} {{ [1] + [2] }} {{ 'ab' * 2 }}"),
            "a1NoneTrue ab [1, 2] abab");
  EXPECT_EQ(render("{{ 1 == 1.0 }} {{ 1 != 2 }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' <= 'b' }}"),
            "True True True False True");
  EXPECT_EQ(
      render("{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'a' in {'a': 1} }} {{ 3 not in [1] }}"),
      "True True True True");
  EXPECT_EQ(
      render("{{ true and 'x' }} {{ false or 'y' }} {{ not none }} {{ 'a' if false else 'b' }}"),
      "x y True b");
  // Filters bind tighter than binary operators but apply after a unary minus, as in jinja2.
  EXPECT_EQ(render("{{ -2 | abs }} {{ messages | length - 1 }}"), "2 3");
}

TEST(ChatTemplateTest, Literals) {
  EXPECT_EQ(
      render(R"({{ 'it\'s' }} {{ "a\"b" }} {{ '\n' | length }} {{ '\u00e9' }} {{ 'a' 'b' }})"),
      "it's a\"b 1 é ab");
  EXPECT_EQ(render("{{ 1_000 }} {{ 1.50 }} {{ 1e3 }} {{ True }} {{ None }} {{ false }}"),
            "1000 1.5 1000.0 True None False");
  EXPECT_EQ(render("{{ [1, 'a', none, 2.0] }} {{ {'k': 'v'} }} {{ (1, 2) }} {{ (1,) }}"),
            "[1, 'a', None, 2.0] {'k': 'v'} (1, 2) (1,)");
}

TEST(ChatTemplateTest, Tests) {
  EXPECT_EQ(
      render("{{ x is defined }}{{ x is undefined }}{{ none is none }}{{ 'a' is string }}{{ 1 is "
             "number }}"
             "{{ {} is mapping }}{{ [] is iterable }}{{ [] is sequence }}{{ true is boolean }}"),
      "FalseTrueTrueTrueTrueTrueTrueTrueTrue");
  EXPECT_EQ(
      render(
          "{{ true is true }}{{ 1 is true }}{{ false is false }}{{ 2 is equalto 2 }}{{ 2 is eq 3 }}"
          "{{ 2 is ne 3 }}{{ 3 is odd }}{{ 3 is even }}{{ 6 is divisibleby(3) }}{{ x is not "
          "defined }}"),
      "TrueFalseTrueTrueFalseTrueTrueFalseTrueTrue");
  EXPECT_EQ(render("{{ messages[0].missing is defined }} {{ messages[9] is defined }}"),
            "False False");
}

TEST(ChatTemplateTest, Filters) {
  EXPECT_EQ(
      render("[{{ ' x ' | trim }}] {{ 'aXb' | upper }} {{ 'aXb' | lower }} {{ 'hi there' | title }}"
             " {{ 'hI' | capitalize }} {{ 'aaa' | replace('a', 'b') }}"),
      "[x] AXB axb Hi There Hi bbb");
  EXPECT_EQ(
      render(
          "{{ x | default('d') }} {{ '' | d('e', true) }} {{ [1, 2] | first }} {{ [1, 2] | last }}"
          " {{ 'ab' | list }} {{ 7 | string }} {{ '42' | int + 1 }} {{ '2.5' | float }} {{ -3 | "
          "abs }}"),
      "d e 1 2 ['a', 'b'] 7 43 2.5 3");
  EXPECT_EQ(render("{{ 2.567 | round(2) }} {{ 2.5 | round }} {{ [3, 1, 2] | sort | join(',') }}"
                   " {{ ['a', 'A', 'b'] | unique | list }} {{ [1, 2] | reverse | list }}"),
            "2.57 2.0 1,2,3 ['a', 'b'] [2, 1]");
  EXPECT_EQ(render("{{ messages | map(attribute='role') | join(' ') }}"),
            "system user assistant user");
  EXPECT_EQ(render("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') "
                   "| list }}"),
            "['Héllo', 'Bye']");
  EXPECT_EQ(render("{{ messages | rejectattr('role', 'eq', 'user') | list | length }}"), "2");
  EXPECT_EQ(render("{{ {'b': [1, 2.5, none, true], 'a': 'é\"\\n'} | tojson }}"),
            "{\"b\": [1, 2.5, null, true], \"a\": \"é\\\"\\n\"}");
  EXPECT_EQ(render("{{ {'a': [1], 'e': {}} | tojson(indent=2) }}"),
            "{\n  \"a\": [\n    1\n  ],\n  \"e\": {}\n}");
  EXPECT_EQ(render("{{ 'a\nb' | indent(2) }}|{{ 'a' | indent(2, true) }}"), "a\n  b|  a");
  EXPECT_EQ(render("{% filter upper %}x{{ 'y' }}{% endfilter %}"), "XY");
}

TEST(ChatTemplateTest, StringAndDictMethods) {
  EXPECT_EQ(render("{{ 'hello'.startswith('he') }} {{ 'hello'.endswith(('x', 'lo')) }} {{ ' a  b "
                   "'.split() }}"
                   " {{ 'a,b,c'.split(',', 1) }} {{ 'a,b,c'.rsplit(',', 1) }}"),
            "True True ['a', 'b'] ['a', 'b,c'] ['a,b', 'c']");
  EXPECT_EQ(render("[{{ ' x '.strip() }}][{{ '\n\nx\n'.lstrip('\n') }}][{{ 'xyy'.rstrip('y') }}]"
                   " {{ 'a'.upper() }} {{ '-'.join(['a', 'b']) }} {{ 'hello'.find('l') }}"),
            "[x][x\n][x] A a-b 2");
  EXPECT_EQ(render("{% set d = {'a': 1} %}{{ d.get('a') }} {{ d.get('b') }} {{ d.get('b', 2) }} {{ "
                   "d.keys() | list }}"
                   " {{ d.values() | list }} {{ d.items() | list }}"),
            "1 None 2 ['a'] [1] [('a', 1)]");
  EXPECT_EQ(render("{{ 'héllo'[1:3] }} {{ 'hello'[::-1] }} {{ [1, 2, 3][-2:] }} {{ 'abc'[-1] }}"),
            "él olleh [2, 3] c");
}

TEST(ChatTemplateTest, VariablesFromOptions) {
  EXPECT_EQ(render("{{ add_generation_prompt }} {{ tools }} {{ enable_thinking }}",
                   {{"enable_thinking", false}}, true),
            "True None False");
  ChatTemplateOptions no_tokens;
  EXPECT_EQ(ChatTemplate("{{ bos_token is defined }}").render(conversation(), no_tokens), "False");
  nlohmann::json unordered = nlohmann::json::array({{{"role", "user"}, {"content", "x"}}});
  EXPECT_EQ(ChatTemplate("{{ messages[0].content }}").render(unordered, no_tokens), "x");
}

TEST(ChatTemplateTest, RaiseExceptionCarriesTheMessage) {
  EXPECT_NE(error_of("{{ raise_exception('Roles must alternate') }}").find("Roles must alternate"),
            std::string::npos);
}

TEST(ChatTemplateTest, SyntaxErrorsNamePosition) {
  EXPECT_EQ(error_of("ab\n{% if x %}\n  {{ 1 + }}\n{% endif %}"),
            "chat template syntax error at line 3, column 10: expected an expression, got '}}'");
  EXPECT_NE(error_of("{% for x in y %}no end")
                .find("line 1, column 4: tag opened here is never closed: "
                      "expected 'else' or 'endfor'"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 'unterminated }}").find("line 1, column 4: unterminated string"),
            std::string::npos);
  EXPECT_NE(error_of("{% frobnicate %}").find("unknown tag 'frobnicate'"), std::string::npos);
  EXPECT_NE(error_of("{{ x ? y }}").find("unexpected character '?'"), std::string::npos);
  EXPECT_NE(error_of("{{ a\n").find("unterminated tag, expected '}}'"), std::string::npos);
}

TEST(ChatTemplateTest, RuntimeErrorsNamePosition) {
  EXPECT_EQ(error_of("\n {{ messages.nope.deeper }}"),
            "chat template error at line 2, column 18: 'list object' has no attribute 'nope'");
  EXPECT_EQ(error_of("{{ 1 + 'a' }}"),
            "chat template error at line 1, column 6: unsupported operand type(s) for +: 'int' and "
            "'str'");
  EXPECT_NE(error_of("{{ 'a' | nosuchfilter }}").find("no filter named 'nosuchfilter'"),
            std::string::npos);
  EXPECT_NE(error_of("{% set x = 1 %}{% set x.y = 2 %}").find("non-namespace"), std::string::npos);
}

TEST(ChatTemplateTest, DefaultTemplateIsChatMl) {
  ChatTemplateOptions options;
  options.add_generation_prompt = true;
  nlohmann::ordered_json messages =
      nlohmann::ordered_json::parse(R"([{"role": "user", "content": "hi"}])");
  EXPECT_EQ(ChatTemplate(default_chat_template()).render(messages, options),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, RendersConcurrentlyAndFast) {
  ChatTemplate tpl(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
      "{{ '<|im_start|>' + m.role + '\\n' + m.content | trim + '<|im_end|>\\n' }}{% endfor %}{{ "
      "ns.n }}");
  ChatTemplateOptions options;
  const std::string expected = tpl.render(conversation(), options);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) ok[t] += tpl.render(conversation(), options) == expected;
    });
  }
  for (auto& th : threads) th.join();
  for (int n : ok) EXPECT_EQ(n, 200);

  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) tpl.render(conversation(), options);
  double per_render_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
      1000;
  EXPECT_LT(per_render_us, 2000.0);  // generous: a debug build on a busy machine
}

}  // namespace
}  // namespace relayllm
