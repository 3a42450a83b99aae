// The xgrammar side of a CompiledConstraint, shared by the compiler and the matcher only.
#pragma once

#include <xgrammar/xgrammar.h>

#include "relayllm/structured/grammar_compiler.h"

namespace relayllm::structured {

struct CompiledConstraint::Impl {
  xgrammar::CompiledGrammar compiled;
  int32_t vocab_size = 0;
};

}  // namespace relayllm::structured
