#include <stdio.h>
#include <stdlib.h>

#include "xmalloc.h"

void xoom(size_t n)
{
    fprintf(stderr, "level=fatal msg=\"out of memory\" bytes=%zu\n", n);
    abort();
}
