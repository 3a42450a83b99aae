// A file the rules allow (chat/ may include tokenizer/).
#include "relayllm/tokenizer/tokenizer.h"
