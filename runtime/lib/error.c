/* error.c: thread-local error messages, status names and small arithmetic helpers. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

/* One buffer per thread so that concurrent callers never see each other's messages. */
static _Thread_local char last_error[1024];

const char *miras_last_error(void) { return last_error; }

miras_status miras_fail(miras_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}

const char *miras_status_string(miras_status status) {
  switch (status) {
  case MIRAS_OK: return "ok";
  case MIRAS_ERR_NULL_POINTER: return "null pointer";
  case MIRAS_ERR_SHAPE: return "shape error";
  case MIRAS_ERR_DTYPE: return "unsupported dtype";
  case MIRAS_ERR_ABI_VERSION: return "ABI version mismatch";
  case MIRAS_ERR_LOAD: return "load error";
  case MIRAS_ERR_IO: return "I/O error";
  case MIRAS_ERR_DEVICE: return "device not available";
  case MIRAS_ERR_INVALID_ARGUMENT: return "invalid argument";
  case MIRAS_ERR_ALLOC: return "out of memory";
  case MIRAS_ERR_UNSUPPORTED: return "unsupported";
  case MIRAS_ERR_NON_FINITE: return "non-finite value";
  }
  return "unknown status";
}

int64_t miras_mul_checked(int64_t a, int64_t b) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
    return -1;
  return r;
}

/* Appends printf-style text at *used; once the buffer is full, further text is dropped. */
static void append(char *buf, size_t size, size_t *used, const char *fmt, ...) MIRAS_PRINTF(4, 5);
static void append(char *buf, size_t size, size_t *used, const char *fmt, ...) {
  if (*used >= size)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf + *used, size - *used, fmt, ap);
  va_end(ap);
  if (n > 0)
    *used += (size_t)n;
}

void miras_format_shape(char *buf, size_t size, const int64_t *shape, int32_t rank) {
  size_t used = 0;
  if (size == 0)
    return;
  buf[0] = '\0';
  if (rank > MIRAS_TENSOR_MAX_RANK) /* callers may pass an unchecked rank */
    rank = MIRAS_TENSOR_MAX_RANK;
  append(buf, size, &used, "[");
  for (int32_t i = 0; i < rank; ++i)
    append(buf, size, &used, "%s%lld", i ? ", " : "", (long long)shape[i]);
  append(buf, size, &used, "]");
}
