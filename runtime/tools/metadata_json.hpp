// metadata_json.hpp: a module's metadata as the JSON `miras info` prints. One writer for
// the tool and the Python binding (miras.Module.metadata), so the two never disagree.
#ifndef MIRAS_TOOLS_METADATA_JSON_HPP
#define MIRAS_TOOLS_METADATA_JSON_HPP

#include <string>

#include "miras/miras_abi.h"

namespace miras::cli {

// The JSON object (two-space indented, ending in a newline) of every metadata field, the
// gates with their declared range and sample interval (gate_sampling.hpp).
std::string metadataJson(const miras_module_metadata &m);

// How state `s` starts when no initial state is given, for messages: "zeros", or
// "its declared init uniform(0.25)" (the runtime fills it: miras_library_initial_state).
// An anchor or the chunk position starts a sequence (miras_abi.h): "zeros".
std::string initialStateText(const miras_state_info &s);

} // namespace miras::cli

#endif // MIRAS_TOOLS_METADATA_JSON_HPP
