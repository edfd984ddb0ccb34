// npy_test.cpp: .npy round trips, files NumPy writes, and malformed files.
#include <fstream>
#include <sstream>

#include "miras/npy.hpp"
#include "test_util.hpp"

namespace {

using miras::Tensor;
using miras::test::ScratchDir;

// An .npy file as bytes: preamble for `major`, the header text padded to 64 bytes, data.
std::string npyBytes(const std::string &dict, const std::string &data, int major = 1) {
  std::string header = dict;
  size_t pre = 6 + 2 + (major == 1 ? 2 : 4);
  header.append((64 - (pre + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out = std::string("\x93NUMPY", 6) + char(major) + '\0';
  for (int i = 0; i < (major == 1 ? 2 : 4); ++i)
    out += char((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

template <typename T> std::string raw(std::initializer_list<T> values) {
  std::string out;
  for (T v : values)
    out.append(reinterpret_cast<const char *>(&v), sizeof v);
  return out;
}

std::string slurp(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

class Npy : public ::testing::Test {
protected:
  std::string put(const std::string &bytes) {
    std::string path = dir_.file("x.npy");
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  void expectRejected(const std::string &bytes, const std::string &fragment) {
    std::string path = put(bytes);
    try {
      miras::readNpy(path);
      FAIL() << "expected rejection with '" << fragment << "'";
    } catch (const miras::Error &e) {
      EXPECT_EQ(e.status(), MIRAS_ERR_IO);
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }

  ScratchDir dir_;
};

const char kF4[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";

TEST_F(Npy, RoundTripShapes) {
  for (std::vector<int64_t> shape : std::vector<std::vector<int64_t>>{
           {}, {5}, {2, 3}, {2, 1, 3, 4}, {0, 3}}) {
    Tensor t = miras::test::randomTensor(shape, 3);
    std::string path = dir_.file("t.npy");
    miras::writeNpy(path, t);
    Tensor back = miras::readNpy(path);
    EXPECT_EQ(back.shape(), t.shape());
    EXPECT_EQ(back.values(), t.values());
  }
}

TEST_F(Npy, WritesNumpyLayout) {
  std::string path = dir_.file("t.npy");
  miras::writeNpy(path, Tensor({3}, {1, 2, 3}));
  std::string bytes = slurp(path);
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  size_t headerLen = uint8_t(bytes[8]) | uint8_t(bytes[9]) << 8;
  EXPECT_EQ((10 + headerLen) % 64, 0u);
  EXPECT_NE(bytes.find("'shape': (3,)"), std::string::npos);
  EXPECT_EQ(bytes.substr(10 + headerLen), raw<float>({1, 2, 3}));
}

TEST_F(Npy, ReadsFloat64AndVersion2) {
  Tensor t = miras::readNpy(put(npyBytes(
      "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2)}", raw<double>({0.5, -2.0}))));
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(t.values(), (std::vector<float>{0.5f, -2.0f}));
  Tensor v2 = miras::readNpy(put(npyBytes(kF4, raw<float>({1, 2}), 2)));
  EXPECT_EQ(v2.values(), (std::vector<float>{1, 2}));
}

TEST_F(Npy, RejectsMalformedFiles) {
  expectRejected("", "truncated");
  expectRejected("GIF89a....", "bad magic");
  expectRejected(npyBytes(kF4, raw<float>({1, 2}), 3), "version 3.0");
  expectRejected(npyBytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }",
                          raw<float>({1, 2})),
                 "fortran_order");
  expectRejected(npyBytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
                          raw<float>({1, 2})),
                 "unsupported dtype '>f4'");
  expectRejected(npyBytes("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
                          raw<int32_t>({1, 2})),
                 "unsupported dtype '<i4'");
  expectRejected(npyBytes(kF4, raw<float>({1})), "truncated data");
  expectRejected(npyBytes(kF4, raw<float>({1, 2, 3})), "trailing data");
  expectRejected(npyBytes("{'descr': '<f4', 'shape': (2,), }", raw<float>({1, 2})), "lacks");
  expectRejected(npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x)}", ""),
                 "malformed .npy header");
  expectRejected(npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': "
                          "(99999999999, 99999999999)}",
                          ""),
                 "too large");
  expectRejected(npyBytes(kF4, "").substr(0, 20), "truncated file (header)");
}

TEST_F(Npy, MissingFile) {
  try {
    miras::readNpy(dir_.file("absent.npy"));
    FAIL();
  } catch (const miras::Error &e) {
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }
}

// A failed write leaves the previous file intact and no temporary behind.
TEST_F(Npy, FailedWriteKeepsOldFile) {
  std::string path = dir_.file("keep.npy");
  miras::writeNpy(path, Tensor({2}, {1, 2}));
  Tensor broken({3});
  broken.values().resize(1); // shape and data disagree
  EXPECT_THROW(miras::writeNpy(path, broken), miras::Error);
  EXPECT_EQ(miras::readNpy(path).values(), (std::vector<float>{1, 2}));

  std::filesystem::create_directory(dir_.file("adir"));
  EXPECT_THROW(miras::writeNpy(dir_.file("adir"), Tensor({1}, {1})), miras::Error);
  EXPECT_THROW(miras::writeNpy(dir_.file("no/such/dir.npy"), Tensor({1}, {1})), miras::Error);
  size_t files = 0;
  for ([[maybe_unused]] auto &e : std::filesystem::directory_iterator(dir_.path()))
    ++files;
  EXPECT_EQ(files, 2u) << "keep.npy and adir only";
}

size_t entriesIn(const std::filesystem::path &dir) {
  size_t n = 0;
  for ([[maybe_unused]] auto &e : std::filesystem::directory_iterator(dir))
    ++n;
  return n;
}

// writeNpyFiles: all files replaced, or none (a failed one in the middle, a target that
// is a directory), and never a temporary left behind.
TEST_F(Npy, FileSetIsAllOrNothing) {
  std::string out = dir_.file("out/nested");
  Tensor a({2}, {1, 2}), b({1}, {3}), c({3}, {4, 5, 6});
  miras::writeNpyFiles(out, {{"a.npy", &a}, {"b.npy", &b}});
  EXPECT_EQ(miras::readNpy(out + "/a.npy").values(), a.values());

  Tensor a2({2}, {7, 8}), broken({3});
  broken.values().resize(1); // fails while the temporaries are written
  EXPECT_THROW(miras::writeNpyFiles(out, {{"a.npy", &a2}, {"b.npy", &broken}, {"c.npy", &c}}),
               miras::Error);
  EXPECT_EQ(miras::readNpy(out + "/a.npy").values(), a.values());
  EXPECT_EQ(miras::readNpy(out + "/b.npy").values(), b.values());
  EXPECT_FALSE(std::filesystem::exists(out + "/c.npy"));
  EXPECT_EQ(entriesIn(out), 2u);

  std::filesystem::create_directory(out + "/c.npy");
  try {
    miras::writeNpyFiles(out, {{"a.npy", &a2}, {"c.npy", &c}});
    FAIL() << "a directory named like an output must fail";
  } catch (const miras::Error &e) {
    EXPECT_NE(std::string(e.what()).find("c.npy': exists and is not a regular file"),
              std::string::npos) << e.what();
  }
  EXPECT_EQ(miras::readNpy(out + "/a.npy").values(), a.values());
  EXPECT_EQ(entriesIn(out), 3u);

  std::filesystem::remove(out + "/c.npy");
  miras::writeNpyFiles(out, {{"a.npy", &a2}, {"c.npy", &c}});
  EXPECT_EQ(miras::readNpy(out + "/a.npy").values(), a2.values());
  EXPECT_EQ(miras::readNpy(out + "/c.npy").values(), c.values());
  EXPECT_EQ(entriesIn(out), 3u);
}

} // namespace
