// A layering violation for the layers check to catch: model/ may not include chat/.
#include "relayllm/chat/sys_schema.h"
