#include "relayllm/chat/jinja_lexer.h"

#include <algorithm>
#include <cctype>

#include "relayllm/common/error.h"
#include "relayllm/common/utf8.h"

namespace relayllm::jinja {

SourcePositions::SourcePositions(std::string_view source) {
  line_starts_.push_back(0);
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\n') line_starts_.push_back(i + 1);
  }
}

std::string SourcePositions::describe(size_t offset) const {
  auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
  size_t line = static_cast<size_t>(it - line_starts_.begin());
  size_t column = offset - line_starts_[line - 1] + 1;
  return fmt::format("line {}, column {}", line, column);
}

std::string normalize_newlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  return out;
}

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

class Lexer {
 public:
  explicit Lexer(std::string_view src) : src_(src), positions_(src) {}

  std::vector<Token> run() {
    // jinja2 drops a single trailing newline unless keep_trailing_newline is set.
    if (!src_.empty() && src_.back() == '\n') src_.remove_suffix(1);
    bool line_starting = true;
    size_t pos = 0;
    while (pos < src_.size()) {
      size_t tag = find_tag(pos);
      std::string text(src_.substr(pos, tag - pos));
      if (tag == src_.size()) {
        emit_text(std::move(text), pos);
        break;
      }
      char type = src_[tag + 1];  // '{', '%' or '#'
      char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        while (!text.empty() && is_space(text.back())) text.pop_back();
      } else if (sign != '+' && type != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
            std::all_of(text.begin() + static_cast<ptrdiff_t>(l_pos), text.end(), is_space)) {
          text.resize(l_pos);
        }
      }
      emit_text(std::move(text), pos);
      size_t inner = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (type == '#') {
        pos = lex_comment(tag, inner);
      } else if (type == '%' && try_raw(tag, inner, pos)) {
        // raw block emitted as text
      } else {
        pos = lex_tag(type, tag, inner);
      }
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    tokens_.push_back({Token::Kind::kEof, "", src_.size()});
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void error(size_t offset, const std::string& what) const {
    fail("chat template syntax error at {}: {}", positions_.describe(offset), what);
  }

  size_t find_tag(size_t pos) const {
    while (true) {
      size_t p = src_.find('{', pos);
      if (p == std::string_view::npos || p + 1 >= src_.size()) return src_.size();
      char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      pos = p + 1;
    }
  }

  void emit_text(std::string text, size_t offset) {
    if (!text.empty()) tokens_.push_back({Token::Kind::kText, std::move(text), offset});
  }

  // Skips what follows a tag end: all whitespace after `-`, else one newline (trim_blocks)
  // for block and comment tags unless `+` asked to keep it.
  size_t after_end(size_t end, char sign, bool trim_newline) const {
    if (sign == '-') {
      while (end < src_.size() && is_space(src_[end])) ++end;
    } else if (sign != '+' && trim_newline && end < src_.size() && src_[end] == '\n') {
      ++end;
    }
    return end;
  }

  size_t lex_comment(size_t tag, size_t inner) {
    size_t close = src_.find("#}", inner);
    if (close == std::string_view::npos) error(tag, "unterminated comment, expected '#}'");
    char sign = close > inner ? src_[close - 1] : '\0';
    return after_end(close + 2, sign, true);
  }

  // `{% raw %}...{% endraw %}`: the body is text, untouched.
  bool try_raw(size_t tag, size_t inner, size_t& pos) {
    size_t p = inner;
    while (p < src_.size() && is_space(src_[p])) ++p;
    if (src_.substr(p, 3) != "raw" || (p + 3 < src_.size() && is_name_char(src_[p + 3])))
      return false;
    p += 3;
    while (p < src_.size() && is_space(src_[p])) ++p;
    char sign = '\0';
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
    if (src_.substr(p, 2) != "%}") return false;
    size_t body = after_end(p + 2, sign, true);
    size_t search = body;
    while (true) {
      size_t open = src_.find("{%", search);
      if (open == std::string_view::npos) error(tag, "unterminated raw block, expected 'endraw'");
      size_t q = open + 2;
      char open_sign = q < src_.size() ? src_[q] : '\0';
      if (open_sign == '-' || open_sign == '+') ++q;
      while (q < src_.size() && is_space(src_[q])) ++q;
      if (src_.substr(q, 6) == "endraw") {
        q += 6;
        while (q < src_.size() && is_space(src_[q])) ++q;
        char end_sign = '\0';
        if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) end_sign = src_[q++];
        if (src_.substr(q, 2) == "%}") {
          std::string text(src_.substr(body, open - body));
          if (open_sign == '-') {
            while (!text.empty() && is_space(text.back())) text.pop_back();
          }
          emit_text(std::move(text), body);
          pos = after_end(q + 2, end_sign, true);
          return true;
        }
      }
      search = open + 2;
    }
  }

  size_t lex_tag(char type, size_t tag, size_t p) {
    bool is_var = type == '{';
    tokens_.push_back({is_var ? Token::Kind::kVarBegin : Token::Kind::kBlockBegin, "", tag});
    const char* end = is_var ? "}}" : "%}";
    int depth = 0;  // brackets open, so `}}` inside a dict literal is not the end
    while (true) {
      while (p < src_.size() && is_space(src_[p])) ++p;
      if (p >= src_.size()) {
        error(tag, fmt::format("unterminated tag, expected '{}'", end));
      }
      char c = src_[p];
      if ((c == '-' || c == '+') && src_.substr(p + 1, 2) == end && depth == 0) {
        tokens_.push_back({is_var ? Token::Kind::kVarEnd : Token::Kind::kBlockEnd, "", p});
        return after_end(p + 3, c, !is_var);
      }
      if (src_.substr(p, 2) == end && depth == 0) {
        tokens_.push_back({is_var ? Token::Kind::kVarEnd : Token::Kind::kBlockEnd, "", p});
        return after_end(p + 2, '\0', !is_var);
      }
      if (is_name_start(c)) {
        size_t start = p;
        while (p < src_.size() && is_name_char(src_[p])) ++p;
        tokens_.push_back({Token::Kind::kName, std::string(src_.substr(start, p - start)), start});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        p = lex_number(p);
      } else if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else {
        static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string_view two = src_.substr(p, 2);
        if (std::find(std::begin(kTwo), std::end(kTwo), two) != std::end(kTwo)) {
          tokens_.push_back({Token::Kind::kOperator, std::string(two), p});
          p += 2;
          continue;
        }
        if (std::string_view("+-*/%~<>=()[]{},.:|").find(c) == std::string_view::npos) {
          error(p, fmt::format("unexpected character '{}' inside a tag", c));
        }
        if (c == '(' || c == '[' || c == '{') ++depth;
        if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        tokens_.push_back({Token::Kind::kOperator, std::string(1, c), p});
        ++p;
      }
    }
  }

  size_t lex_number(size_t p) {
    size_t start = p;
    std::string digits;
    auto take_digits = [&] {
      while (p < src_.size() &&
             (std::isdigit(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) {
        if (src_[p] != '_') digits += src_[p];
        ++p;
      }
    };
    take_digits();
    bool is_float = false;
    if (p + 1 < src_.size() && src_[p] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[p + 1]))) {
      is_float = true;
      digits += src_[p++];
      take_digits();
    }
    if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
        is_float = true;
        digits += 'e';
        digits.append(src_.substr(p + 1, q - p - 1));
        p = q;
        take_digits();
      }
    }
    tokens_.push_back(
        {is_float ? Token::Kind::kFloat : Token::Kind::kInteger, std::move(digits), start});
    return p;
  }

  // Python's unicode-escape decoding, which jinja2 applies to string literals.
  size_t lex_string(size_t p) {
    size_t start = p;
    char quote = src_[p++];
    std::string value;
    while (true) {
      if (p >= src_.size()) error(start, "unterminated string literal");
      char c = src_[p];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) error(start, "unterminated string literal");
      char e = src_[p + 1];
      p += 2;
      auto hex = [&](size_t n) {
        if (p + n > src_.size()) error(p, "truncated escape in string literal");
        uint32_t cp = 0;
        for (size_t i = 0; i < n; ++i) {
          char h = src_[p + i];
          if (!std::isxdigit(static_cast<unsigned char>(h)))
            error(p, "bad hex escape in string literal");
          cp = cp * 16 +
               static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h))
                                         ? h - '0'
                                         : std::tolower(static_cast<unsigned char>(h)) - 'a' + 10);
        }
        p += n;
        utf8::append(value, cp);
      };
      switch (e) {
        case 'n':
          value += '\n';
          break;
        case 't':
          value += '\t';
          break;
        case 'r':
          value += '\r';
          break;
        case '\\':
          value += '\\';
          break;
        case '\'':
          value += '\'';
          break;
        case '"':
          value += '"';
          break;
        case 'a':
          value += '\a';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'v':
          value += '\v';
          break;
        case '\n':
          break;
        case 'x':
          hex(2);
          break;
        case 'u':
          hex(4);
          break;
        case 'U':
          hex(8);
          break;
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int i = 0; i < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++i) {
              cp = cp * 8 + static_cast<uint32_t>(src_[p++] - '0');
            }
            utf8::append(value, cp);
          } else {
            value += '\\';
            value += e;
          }
      }
    }
    tokens_.push_back({Token::Kind::kString, std::move(value), start});
    return p + 1;
  }

  std::string_view src_;
  SourcePositions positions_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize_template(std::string_view source) { return Lexer(source).run(); }

}  // namespace relayllm::jinja
