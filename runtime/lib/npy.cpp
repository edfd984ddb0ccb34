// npy.cpp: .npy reader and writer (format: numpy/lib/format.py, "NEP 1").
#include "miras/npy.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace miras {
namespace {

// The payload is copied to and from memory as is, so the host must be little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "npy I/O assumes a little-endian host");

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr size_t kMaxHeaderLen = 1 << 20; // far above any real header; bounds garbage

[[noreturn]] void fail(const std::string &path, const std::string &what) {
  throw Error(MIRAS_ERR_IO, "'" + path + "': " + what);
}

struct Header {
  std::string descr;
  bool fortranOrder = false;
  std::vector<int64_t> shape;
};

// Parses the Python dict literal of an .npy header, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// Only the three keys NumPy writes are accepted.
class HeaderParser {
public:
  HeaderParser(const std::string &text, const std::string &path) : s_(text), path_(path) {}

  Header parse() {
    Header h;
    bool seen[3] = {false, false, false};
    expect('{');
    while (skipSpace() != '}') {
      std::string key = parseString();
      expect(':');
      if (key == "descr") {
        h.descr = parseString();
        seen[0] = true;
      } else if (key == "fortran_order") {
        h.fortranOrder = parseBool();
        seen[1] = true;
      } else if (key == "shape") {
        h.shape = parseTuple();
        seen[2] = true;
      } else {
        error("unexpected key '" + key + "'");
      }
      if (skipSpace() != ',')
        break;
      ++pos_;
    }
    expect('}');
    if (skipSpace() != '\0')
      error("unexpected text after the dictionary");
    if (!seen[0] || !seen[1] || !seen[2])
      error("header lacks 'descr', 'fortran_order' or 'shape'");
    return h;
  }

private:
  [[noreturn]] void error(const std::string &what) {
    fail(path_, "malformed .npy header: " + what);
  }

  // Skips blanks and returns the next character ('\0' at the end).
  char skipSpace() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t'))
      ++pos_;
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }

  void expect(char c) {
    if (skipSpace() != c)
      error(std::string("expected '") + c + "' at offset " + std::to_string(pos_));
    ++pos_;
  }

  std::string parseString() {
    char quote = skipSpace();
    if (quote != '\'' && quote != '"')
      error("expected a quoted string at offset " + std::to_string(pos_));
    size_t end = s_.find(quote, pos_ + 1);
    if (end == std::string::npos)
      error("unterminated string");
    std::string out = s_.substr(pos_ + 1, end - pos_ - 1);
    pos_ = end + 1;
    return out;
  }

  bool parseBool() {
    skipSpace();
    for (bool value : {true, false}) {
      const char *word = value ? "True" : "False";
      if (s_.compare(pos_, std::strlen(word), word) == 0) {
        pos_ += std::strlen(word);
        return value;
      }
    }
    error("expected True or False");
  }

  std::vector<int64_t> parseTuple() {
    std::vector<int64_t> dims;
    expect('(');
    while (skipSpace() != ')') {
      dims.push_back(parseDim());
      if (skipSpace() != ',')
        break;
      ++pos_;
    }
    expect(')');
    return dims;
  }

  int64_t parseDim() {
    int64_t value = 0;
    size_t start = pos_;
    for (; pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9'; ++pos_) {
      if (__builtin_mul_overflow(value, 10, &value) ||
          __builtin_add_overflow(value, s_[pos_] - '0', &value))
        error("dimension too large");
    }
    if (pos_ == start)
      error("expected a non-negative integer in 'shape' at offset " + std::to_string(start));
    return value;
  }

  const std::string &s_;
  const std::string &path_;
  size_t pos_ = 0;
};

struct FileCloser {
  void operator()(FILE *f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

// n == 0 returns early: an empty tensor's buffer may be NULL, which fread must not get.
void readExactly(FILE *f, void *buf, size_t n, const std::string &path, const char *what) {
  if (n > 0 && std::fread(buf, 1, n, f) != n)
    fail(path, std::string("truncated file (") + what + ")");
}

// Reads the magic, version and header; leaves `f` at the first data byte.
Header readHeader(FILE *f, const std::string &path) {
  unsigned char pre[kMagicLen + 2];
  readExactly(f, pre, sizeof pre, path, "no .npy preamble");
  if (std::memcmp(pre, kMagic, kMagicLen) != 0)
    fail(path, "not a .npy file (bad magic)");
  unsigned major = pre[kMagicLen], minor = pre[kMagicLen + 1];
  if (major != 1 && major != 2)
    fail(path, "unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(minor) + " (supported: 1.0, 2.0)");
  unsigned char len[4] = {0, 0, 0, 0};
  readExactly(f, len, major == 1 ? 2 : 4, path, "header length");
  size_t headerLen = len[0] | len[1] << 8 | size_t(len[2]) << 16 | size_t(len[3]) << 24;
  if (headerLen > kMaxHeaderLen)
    fail(path, "header length " + std::to_string(headerLen) + " is implausibly large");
  std::string text(headerLen, '\0');
  readExactly(f, text.data(), headerLen, path, "header");
  return HeaderParser(text, path).parse();
}

size_t bytesLeft(FILE *f, const std::string &path) {
  long here = std::ftell(f);
  if (here < 0 || std::fseek(f, 0, SEEK_END) != 0)
    fail(path, std::string("cannot seek: ") + std::strerror(errno));
  long end = std::ftell(f);
  if (end < here || std::fseek(f, here, SEEK_SET) != 0)
    fail(path, std::string("cannot seek: ") + std::strerror(errno));
  return static_cast<size_t>(end - here);
}

std::string headerText(const std::vector<int64_t> &shape) {
  std::string dims;
  for (int64_t d : shape)
    dims += std::to_string(d) + ", ";
  if (shape.size() > 1)
    dims.resize(dims.size() - 2); // "(2, 3)"; a 1-tuple keeps its comma: "(3,)"
  else if (shape.size() == 1)
    dims.pop_back();
  std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // NumPy pads with spaces and a final newline so that the data starts 64-byte aligned.
  size_t total = kMagicLen + 4 + h.size() + 1;
  h.append((64 - total % 64) % 64, ' ');
  return h + '\n';
}

void writeAll(FILE *f, const void *data, size_t n, const std::string &path) {
  if (n > 0 && std::fwrite(data, 1, n, f) != n)
    fail(path, std::string("write failed: ") + std::strerror(errno));
}

// Writes the whole file to the open temporary `f`, closing it; throws on any error.
void writeTemp(FILE *f, const std::string &tmp, const Tensor &tensor) {
  File guard(f);
  std::string header = headerText(tensor.shape());
  if (header.size() > 0xffff)
    fail(tmp, "shape too long for a version 1.0 header");
  unsigned char pre[kMagicLen + 4];
  std::memcpy(pre, kMagic, kMagicLen);
  pre[6] = 1;
  pre[7] = 0;
  pre[8] = header.size() & 0xff;
  pre[9] = header.size() >> 8;
  writeAll(f, pre, sizeof pre, tmp);
  writeAll(f, header.data(), header.size(), tmp);
  writeAll(f, tensor.data(), static_cast<size_t>(tensor.numel()) * sizeof(float), tmp);
  if (std::fflush(f) != 0 || fsync(fileno(f)) != 0)
    fail(tmp, std::string("write failed: ") + std::strerror(errno));
  if (std::fclose(guard.release()) != 0)
    fail(tmp, std::string("close failed: ") + std::strerror(errno));
}

} // namespace

Tensor readNpy(const std::string &path) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f)
    fail(path, std::string("cannot open: ") + std::strerror(errno));
  Header h = readHeader(f.get(), path);
  if (h.fortranOrder)
    fail(path, "fortran_order arrays are not supported (save a C-contiguous array)");
  size_t itemSize = h.descr == "<f4" ? 4 : h.descr == "<f8" ? 8 : 0;
  if (itemSize == 0)
    fail(path, "unsupported dtype '" + h.descr + "' (expected '<f4' or '<f8')");
  int64_t numel = 1, bytes = 0;
  for (int64_t d : h.shape)
    if (__builtin_mul_overflow(numel, d, &numel))
      fail(path, "shape " + formatShape(h.shape) + " is too large");
  if (__builtin_mul_overflow(numel, static_cast<int64_t>(itemSize), &bytes))
    fail(path, "shape " + formatShape(h.shape) + " is too large");
  size_t want = static_cast<size_t>(bytes), have = bytesLeft(f.get(), path);
  // Checked before allocating, so a corrupt shape cannot trigger a huge allocation.
  if (have != want)
    fail(path, (have < want ? "truncated data: expected " : "unexpected trailing data: expected ") +
                   std::to_string(want) + " bytes for shape " + formatShape(h.shape) +
                   ", found " + std::to_string(have));
  std::vector<float> data(static_cast<size_t>(numel));
  if (itemSize == 4) {
    readExactly(f.get(), data.data(), want, path, "data");
  } else {
    std::vector<double> wide(static_cast<size_t>(numel));
    readExactly(f.get(), wide.data(), want, path, "data");
    std::copy(wide.begin(), wide.end(), data.begin());
  }
  return Tensor(std::move(h.shape), std::move(data));
}

namespace {

// Writes `tensor` to a new temporary file beside `path` (same directory, so a rename
// onto `path` is atomic) and returns its name; throws, leaving nothing behind, on error.
std::string writeBeside(const std::string &path, const Tensor &tensor) {
  if (Tensor::numelOf(tensor.shape()) != tensor.numel())
    fail(path, "tensor holds " + std::to_string(tensor.numel()) + " values for shape " +
                   formatShape(tensor.shape()));
  std::string tmp = path + ".tmp.XXXXXX";
  int fd = mkstemp(tmp.data());
  if (fd < 0)
    fail(path, std::string("cannot create a temporary file: ") + std::strerror(errno));
  // mkstemp creates the file 0600; give it the permissions of an ordinary output file.
  FILE *f = fchmod(fd, 0644) == 0 ? fdopen(fd, "wb") : nullptr;
  try {
    if (f == nullptr) {
      std::string why = std::strerror(errno);
      close(fd);
      fail(tmp, "cannot open: " + why);
    }
    writeTemp(f, tmp, tensor);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  return tmp;
}

// An exclusive flock on a directory, released when it goes out of scope.
class DirectoryLock {
public:
  explicit DirectoryLock(const std::string &dir) : fd_(open(dir.c_str(), O_RDONLY | O_DIRECTORY)) {
    if (fd_ < 0)
      fail(dir, std::string("cannot open the directory: ") + std::strerror(errno));
    while (flock(fd_, LOCK_EX) != 0)
      if (errno != EINTR) {
        std::string why = std::strerror(errno);
        close(fd_);
        fail(dir, "cannot lock the directory: " + why);
      }
  }
  ~DirectoryLock() {
    fsync(fd_); // the renames, durable
    close(fd_); // releases the lock
  }
  DirectoryLock(const DirectoryLock &) = delete;
  DirectoryLock &operator=(const DirectoryLock &) = delete;

private:
  int fd_;
};

} // namespace

void writeNpy(const std::string &path, const Tensor &tensor) {
  std::string tmp = writeBeside(path, tensor);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    fail(path, "cannot replace: " + why);
  }
}

void writeNpyFiles(const std::string &dir,
                   const std::vector<std::pair<std::string, const Tensor *>> &files) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    throw Error(MIRAS_ERR_IO, "cannot create output directory '" + dir + "': " + ec.message());
  DirectoryLock lock(dir);
  std::vector<std::string> targets;
  for (const auto &[name, tensor] : files) {
    std::string target = (std::filesystem::path(dir) / name).string();
    struct stat st;
    if (lstat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
      fail(target, "exists and is not a regular file; nothing was written");
    targets.push_back(target);
  }
  // 1. Every file to a temporary beside its target.
  std::vector<std::string> temps;
  try {
    for (size_t i = 0; i < files.size(); ++i)
      temps.push_back(writeBeside(targets[i], *files[i].second));
  } catch (...) {
    for (const std::string &tmp : temps)
      std::remove(tmp.c_str());
    throw;
  }
  // 2. Into place: a file that existed is exchanged with its temporary (which then holds
  // the old contents, for the rollback), a new one is renamed (never over a file that
  // appeared meanwhile). A file system without exchange gets a plain rename, which a
  // rollback cannot undo.
  enum class Moved { Exchanged, Created, Replaced };
  auto unsupported = [] { return errno == EINVAL || errno == ENOSYS; };
  std::vector<Moved> moved;
  for (size_t i = 0; i < files.size(); ++i) {
    const char *tmp = temps[i].c_str(), *target = targets[i].c_str();
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, target, RENAME_EXCHANGE) == 0) {
      moved.push_back(Moved::Exchanged);
      continue;
    }
    if (errno == ENOENT) {
      if (renameat2(AT_FDCWD, tmp, AT_FDCWD, target, RENAME_NOREPLACE) == 0 ||
          (unsupported() && std::rename(tmp, target) == 0)) {
        moved.push_back(Moved::Created);
        continue;
      }
    } else if (unsupported() && std::rename(tmp, target) == 0) {
      moved.push_back(Moved::Replaced);
      continue;
    }
    std::string why = std::strerror(errno);
    // Roll back what was moved: old contents back, new files removed.
    for (size_t j = 0; j < moved.size(); ++j) {
      if (moved[j] == Moved::Exchanged)
        renameat2(AT_FDCWD, temps[j].c_str(), AT_FDCWD, targets[j].c_str(), RENAME_EXCHANGE);
      else if (moved[j] == Moved::Created)
        std::remove(targets[j].c_str());
    }
    for (size_t j = 0; j < temps.size(); ++j)
      std::remove(temps[j].c_str());
    fail(targets[i], "cannot replace: " + why + "; the other outputs were put back");
  }
  // 3. The old contents, now in the temporaries, go.
  for (size_t i = 0; i < files.size(); ++i)
    if (moved[i] == Moved::Exchanged)
      std::remove(temps[i].c_str());
}

} // namespace miras
