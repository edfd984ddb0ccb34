/* image.c: what the runtime checks of a module file before it trusts it: the ELF file
 * before dlopen, and the memory of the loaded object before any metadata pointer is
 * followed. A module is code (dlopen runs it), so this guards against damaged or foreign
 * files, not hostile ones. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dlinfo, dl_iterate_phdr */
#endif
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#if defined(__x86_64__)
#define MIRAS_ELF_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define MIRAS_ELF_MACHINE EM_AARCH64
#endif

static miras_status not_loadable(const char *path, const char *what) {
  return miras_fail(MIRAS_ERR_LOAD, "cannot load '%s': %s", path, what);
}

/* [offset, offset + size) lies within a file of file_size bytes. */
static int fits(uint64_t offset, uint64_t size, uint64_t file_size) {
  return offset <= file_size && size <= file_size - offset;
}

miras_status miras_check_module_file(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return miras_fail(MIRAS_ERR_LOAD, "cannot load '%s': %s", path, strerror(errno));
  struct stat st;
  Elf64_Ehdr eh;
  miras_status status = MIRAS_OK;
  char msg[200];
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    status = not_loadable(path, "not a regular file");
  } else if ((uint64_t)st.st_size < sizeof eh || pread(fd, &eh, sizeof eh, 0) != sizeof eh ||
             memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
    status = not_loadable(path, "not a shared library (no ELF header)");
  } else if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
             eh.e_type != ET_DYN
#ifdef MIRAS_ELF_MACHINE
             || eh.e_machine != MIRAS_ELF_MACHINE
#endif
  ) {
    status = not_loadable(path, "not a shared library for this machine (ELF class, byte "
                                "order, type or machine differ)");
  } else if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 ||
             !fits(eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr), (uint64_t)st.st_size)) {
    status = not_loadable(path, "truncated or damaged file (program headers)");
  } else if (eh.e_shnum != 0 &&
             !fits(eh.e_shoff, (uint64_t)eh.e_shnum * eh.e_shentsize, (uint64_t)st.st_size)) {
    snprintf(msg, sizeof msg,
             "truncated or damaged file (%lld bytes; its section headers end at %llu)",
             (long long)st.st_size,
             (unsigned long long)(eh.e_shoff + (uint64_t)eh.e_shnum * eh.e_shentsize));
    status = not_loadable(path, msg);
  } else {
    /* Every segment the loader maps must lie in the file: a page past its end is a
     * SIGBUS when touched, inside dlopen. */
    for (int i = 0; i < eh.e_phnum && status == MIRAS_OK; ++i) {
      Elf64_Phdr ph;
      if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + (uint64_t)i * sizeof ph)) != sizeof ph) {
        status = not_loadable(path, "cannot read its program headers");
      } else if (ph.p_type != PT_NULL && !fits(ph.p_offset, ph.p_filesz, (uint64_t)st.st_size)) {
        snprintf(msg, sizeof msg,
                 "truncated or damaged file (%lld bytes; segment %d needs bytes %llu to %llu)",
                 (long long)st.st_size, i, (unsigned long long)ph.p_offset,
                 (unsigned long long)(ph.p_offset + ph.p_filesz));
        status = not_loadable(path, msg);
      }
    }
  }
  close(fd);
  return status;
}

struct image_search {
  ElfW(Addr) base;
  const char *name;
  miras_image *out;
};

static int collect_segments(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  struct image_search *search = data;
  if (info->dlpi_addr != search->base || info->dlpi_name == NULL ||
      strcmp(info->dlpi_name, search->name) != 0)
    return 0;
  miras_image *im = search->out;
  for (int i = 0; i < info->dlpi_phnum && im->count < MIRAS_IMAGE_MAX_SEGMENTS; ++i) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_R))
      continue;
    uintptr_t begin = (uintptr_t)(info->dlpi_addr + ph->p_vaddr);
    im->segments[im->count].begin = begin;
    /* Beyond p_filesz up to p_memsz is zero-filled memory (.bss), mapped too. */
    im->segments[im->count].end = begin + ph->p_memsz;
    im->segments[im->count].executable = (ph->p_flags & PF_X) != 0;
    ++im->count;
  }
  return 1;
}

miras_status miras_image_of(void *handle, const char *path, miras_image *out) {
  memset(out, 0, sizeof *out);
  struct link_map *map = NULL;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0 || map == NULL)
    return miras_fail(MIRAS_ERR_LOAD, "'%s': cannot locate the loaded library", path);
  struct image_search search = {map->l_addr, map->l_name, out};
  out->base = (uintptr_t)map->l_addr;
  dl_iterate_phdr(collect_segments, &search);
  if (out->count == 0)
    return miras_fail(MIRAS_ERR_LOAD, "'%s': the loaded library has no readable segment", path);
  return MIRAS_OK;
}

static const miras_image_segment *segment_of(const miras_image *im, const void *p) {
  uintptr_t at = (uintptr_t)p;
  for (int i = 0; i < im->count; ++i)
    if (at >= im->segments[i].begin && at < im->segments[i].end)
      return &im->segments[i];
  return NULL;
}

int miras_image_holds(const miras_image *im, const void *p, size_t bytes, size_t align) {
  const miras_image_segment *s = segment_of(im, p);
  return s != NULL && bytes <= s->end - (uintptr_t)p && (uintptr_t)p % align == 0;
}

int miras_image_holds_array(const miras_image *im, const void *p, int64_t count, size_t item,
                            size_t align) {
  if (count < 0)
    return 0;
  if (count == 0)
    return 1; /* the pointer is not followed */
  if ((uint64_t)count > SIZE_MAX / item)
    return 0;
  return miras_image_holds(im, p, (size_t)count * item, align);
}

int miras_image_holds_function(const miras_image *im, const void *fn) {
  const miras_image_segment *s = segment_of(im, fn);
  Dl_info info;
  return s != NULL && s->executable && dladdr(fn, &info) != 0 && info.dli_saddr == fn &&
         (uintptr_t)info.dli_fbase == im->base;
}

int miras_image_holds_string(const miras_image *im, const char *s) {
  const miras_image_segment *seg = segment_of(im, s);
  return seg != NULL && memchr(s, '\0', seg->end - (uintptr_t)s) != NULL;
}
