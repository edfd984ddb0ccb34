/* internal.h: helpers shared by the C sources of the runtime (not installed). */
#ifndef MIRAS_RUNTIME_INTERNAL_H
#define MIRAS_RUNTIME_INTERNAL_H

#include "miras/runtime.h"

#if defined(__GNUC__)
#define MIRAS_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define MIRAS_PRINTF(fmt, args)
#endif

/* Stores a printf-style message as this thread's last error and returns `status`, so
 * that error paths read `return miras_fail(MIRAS_ERR_SHAPE, "...", ...);`. */
miras_status miras_fail(miras_status status, const char *fmt, ...) MIRAS_PRINTF(2, 3);

/* a * b, or -1 when either is negative or the product overflows int64_t. */
int64_t miras_mul_checked(int64_t a, int64_t b);

/* Formats shape[0..rank) as "[2, 3, 4]" into buf (truncated to size). */
void miras_format_shape(char *buf, size_t size, const int64_t *shape, int32_t rank);

struct miras_library {
  void *handle; /* from dlopen */
  const miras_module_entry *entry;
  const miras_module_metadata *meta;
};

#endif /* MIRAS_RUNTIME_INTERNAL_H */
