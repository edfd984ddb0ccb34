// library_test.cpp: opening modules, ABI and metadata checks, shape queries, errors.
#include <cstring>
#include <thread>

#include <unistd.h>

#include "test_util.hpp"

namespace {

using miras::test::ScratchDir;

// Opens `path` expecting failure; returns the message.
std::string openFails(const char *path, miras_status want) {
  miras_library *lib = reinterpret_cast<miras_library *>(0x1);
  EXPECT_EQ(miras_library_open(path, &lib), want);
  EXPECT_EQ(lib, nullptr) << "out must be cleared on failure";
  return miras_last_error();
}

TEST(Library, OpensAndReadsMetadata) {
  miras_library *lib = nullptr;
  ASSERT_EQ(miras_library_open(MIRAS_FAKE_MODULE, &lib), MIRAS_OK) << miras_last_error();
  const miras_module_metadata *m = miras_library_metadata(lib);
  ASSERT_NE(m, nullptr);
  EXPECT_STREQ(m->name, "fake_linear");
  EXPECT_EQ(m->abi_version, MIRAS_ABI_VERSION);
  EXPECT_EQ(m->dk, 3);
  EXPECT_EQ(m->dv, 4);
  ASSERT_EQ(m->num_gates, 2);
  EXPECT_STREQ(m->gates[1].name, "beta");
  EXPECT_EQ(m->gates[1].axis, MIRAS_AXIS_VALUE);
  ASSERT_EQ(m->num_states, 1);
  EXPECT_STREQ(m->states[0].name, "W");
  EXPECT_EQ(m->num_params, 2);
  miras_library_close(lib);
}

TEST(Library, MissingFile) {
  std::string msg = openFails("/nonexistent/libnothing.so", MIRAS_ERR_LOAD);
  EXPECT_NE(msg.find("/nonexistent/libnothing.so"), std::string::npos) << msg;
  EXPECT_NE(msg.find("No such file"), std::string::npos) << msg;
}

TEST(Library, NotASharedLibrary) {
  ScratchDir dir;
  std::string path = dir.file("libjunk.so");
  std::fclose(std::fopen(path.c_str(), "w"));
  std::string msg = openFails(path.c_str(), MIRAS_ERR_LOAD);
  EXPECT_NE(msg.find("cannot load"), std::string::npos) << msg;
}

TEST(Library, MissingEntrySymbol) {
  std::string msg = openFails(MIRAS_FAKE_NO_SYMBOL, MIRAS_ERR_LOAD);
  EXPECT_NE(msg.find("not a miras module"), std::string::npos) << msg;
  EXPECT_NE(msg.find("miras_module_v1"), std::string::npos) << msg;
}

TEST(Library, EntryAbiMismatchNamesBothVersions) {
  std::string msg = openFails(MIRAS_FAKE_BAD_ENTRY_ABI, MIRAS_ERR_ABI_VERSION);
  EXPECT_NE(msg.find("version 99"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expects " + std::to_string(MIRAS_ABI_VERSION)), std::string::npos) << msg;
}

// ABI 10 added backward_flops_per_token to the metadata (9 the checkpoints to
// miras_forward_args and miras_backward_args): a library built for 9 has a shorter
// metadata struct and must be refused by its version, naming both and what to do.
TEST(Library, PreviousAbiVersionIsRefused) {
  static_assert(MIRAS_ABI_VERSION == 10, "update this test with the version history");
  std::string msg = openFails(MIRAS_FAKE_OLD_ABI, MIRAS_ERR_ABI_VERSION);
  EXPECT_NE(msg.find("ABI version 9"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expects 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("recompile"), std::string::npos) << msg;
}

TEST(Library, GateRangeIsRead) {
  miras_library *lib = nullptr;
  ASSERT_EQ(miras_library_open(MIRAS_FAKE_MODULE, &lib), MIRAS_OK) << miras_last_error();
  const miras_module_metadata *m = miras_library_metadata(lib);
  ASSERT_EQ(m->num_gates, 2);
  EXPECT_EQ(m->gates[0].has_range, 1);
  EXPECT_EQ(m->gates[0].range_lo, 0.0);
  EXPECT_EQ(m->gates[0].range_hi, 1.0);
  EXPECT_EQ(m->gates[0].range_lo_closed, 0);
  EXPECT_EQ(m->gates[0].range_hi_closed, 1);
  EXPECT_EQ(m->gates[1].has_range, 0);
  miras_library_close(lib);
}

TEST(Library, EmptyGateRangeIsRejected) {
  std::string msg = openFails(MIRAS_FAKE_BAD_RANGE, MIRAS_ERR_LOAD);
  EXPECT_NE(msg.find("malformed module metadata"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gate 'alpha': range (1, 0]"), std::string::npos) << msg;
}

TEST(Library, MetadataAbiMismatch) {
  std::string msg = openFails(MIRAS_FAKE_BAD_META_ABI, MIRAS_ERR_ABI_VERSION);
  EXPECT_NE(msg.find("version 77"), std::string::npos) << msg;
}

TEST(Library, MalformedMetadataIsRejected) {
  std::string msg = openFails(MIRAS_FAKE_BAD_DK, MIRAS_ERR_LOAD);
  EXPECT_NE(msg.find("malformed module metadata"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dk"), std::string::npos) << msg;
}

TEST(Library, BackwardWorkWithoutBackwardIsRejected) {
  std::string msg = openFails(MIRAS_FAKE_BAD_BACKWARD_FLOPS, MIRAS_ERR_LOAD);
  EXPECT_NE(msg.find("malformed module metadata"), std::string::npos) << msg;
  EXPECT_NE(msg.find("backward_flops_per_token"), std::string::npos) << msg;
}

TEST(Library, NullArguments) {
  miras_library *lib = nullptr;
  EXPECT_EQ(miras_library_open(nullptr, &lib), MIRAS_ERR_NULL_POINTER);
  EXPECT_EQ(miras_library_open(MIRAS_FAKE_MODULE, nullptr), MIRAS_ERR_NULL_POINTER);
  EXPECT_EQ(miras_library_metadata(nullptr), nullptr);
  miras_library_close(nullptr); // must be a no-op
}

// dlopen would search the library path for a bare name; the runtime means a file.
TEST(Library, BareNameIsRelativeToWorkingDirectory) {
  std::filesystem::path module(MIRAS_FAKE_MODULE);
  std::filesystem::path cwd = std::filesystem::current_path();
  std::filesystem::current_path(module.parent_path());
  miras_library *lib = nullptr;
  miras_status st = miras_library_open(module.filename().c_str(), &lib);
  std::filesystem::current_path(cwd);
  EXPECT_EQ(st, MIRAS_OK) << miras_last_error();
  miras_library_close(lib);
}

TEST(Library, LastErrorIsPerThread) {
  openFails("/nonexistent/a.so", MIRAS_ERR_LOAD);
  std::thread([] { openFails("/nonexistent/b.so", MIRAS_ERR_LOAD); }).join();
  EXPECT_NE(std::string(miras_last_error()).find("a.so"), std::string::npos);
}

TEST(Library, StatusStrings) {
  for (int s = MIRAS_OK; s <= MIRAS_ERR_INVALID_ARGUMENT; ++s)
    EXPECT_STRNE(miras_status_string(static_cast<miras_status>(s)), "unknown status") << s;
  EXPECT_STREQ(miras_status_string(static_cast<miras_status>(1234)), "unknown status");
}

TEST(Library, ShapeQueries) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_MODULE);
  const miras_module_metadata *m = &lib.metadata();
  EXPECT_EQ(miras_state_numel(m, 0, 2, 3), 2 * 3 * 4 * 3);
  EXPECT_EQ(miras_state_numel(m, 1, 2, 3), -1);
  EXPECT_EQ(miras_state_numel(m, 0, 0, 3), -1);
  EXPECT_EQ(miras_state_numel(m, 0, INT64_MAX, 3), -1); // overflow
  EXPECT_EQ(miras_gate_numel(m, 0, 2, 5, 3), 2 * 5 * 3);
  EXPECT_EQ(miras_gate_numel(m, 1, 2, 5, 3), 2 * 5 * 3 * 4);
  EXPECT_EQ(miras_gate_numel(nullptr, 0, 2, 5, 3), -1);
  using V = std::vector<int64_t>;
  EXPECT_EQ(lib.shapeOf("q", 2, 5, 3), (V{2, 5, 3, 3}));
  EXPECT_EQ(lib.shapeOf("o", 2, 5, 3), (V{2, 5, 3, 4}));
  EXPECT_EQ(lib.shapeOf("alpha", 2, 5, 3), (V{2, 5, 3}));
  EXPECT_EQ(lib.shapeOf("beta", 2, 5, 3), (V{2, 5, 3, 4}));
  EXPECT_EQ(lib.shapeOf("W", 2, 5, 3), (V{2, 3, 4, 3}));
  EXPECT_EQ(lib.zeroState("W", 2, 3).shape(), (V{2, 3, 4, 3}));
  EXPECT_THROW(lib.shapeOf("nope", 2, 5, 3), miras::Error);
  EXPECT_THROW(lib.zeroState("alpha", 2, 3), miras::Error);
  try {
    lib.shapeOf("q", 0, 5, 3);
    FAIL() << "expected a shape error";
  } catch (const miras::Error &e) {
    EXPECT_EQ(e.status(), MIRAS_ERR_SHAPE);
  }
}

TEST(Library, WrapperIsMoveOnly) {
  static_assert(!std::is_copy_constructible_v<miras::Library>);
  miras::Library a = miras::Library::open(MIRAS_FAKE_MODULE);
  miras::Library b = std::move(a);
  EXPECT_EQ(a.handle(), nullptr);
  EXPECT_STREQ(b.metadata().name, "fake_linear");
  EXPECT_THROW(a.metadata(), miras::Error);
  try {
    miras::Library::open(MIRAS_FAKE_BAD_ENTRY_ABI);
    FAIL() << "expected an ABI error";
  } catch (const miras::Error &e) {
    EXPECT_EQ(e.status(), MIRAS_ERR_ABI_VERSION);
    EXPECT_NE(std::string(e.what()).find("99"), std::string::npos);
  }
}

} // namespace
