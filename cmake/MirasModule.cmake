# miras_add_module(<name> <file.miras>
#                  [PARAMS NAME=VALUE...]     # mirasc -DNAME=VALUE, e.g. D=64
#                  [OPTIONS <mirasc flag>...] # e.g. --backward --chunk=16 --mcpu=generic
#                  [OUTPUT_DIRECTORY <dir>])  # default ${CMAKE_CURRENT_BINARY_DIR}/miras/<name>
#
# Compiles the module with mirasc when the project builds (again whenever the .miras file
# or the compiler changes) into <dir>/lib<name>.so, plus the C header <module>.h that
# mirasc writes next to it (<module> is the name declared in the file). <name> becomes an
# imported shared-library target:
#   - load it through the runtime:  miras_library_open("$<TARGET_FILE:<name>>", ...)
#     with the path passed in, e.g. target_compile_definitions(app PRIVATE
#     GDN_LIBRARY="$<TARGET_FILE:gdn>"), and link miras::runtime;
#   - or link it, target_link_libraries(app PRIVATE <name>), and call the header's
#     <module>_forward(...) directly (its include directory comes with the target).
# The compiler is miras::mirasc from find_package(miras), the mirasc target inside the
# miras tree, or MIRAS_MIRASC (a path; found on PATH when unset).
function(miras_add_module name source)
  cmake_parse_arguments(ARG "" "OUTPUT_DIRECTORY" "PARAMS;OPTIONS" ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "miras_add_module(${name}): unexpected arguments "
                        "'${ARG_UNPARSED_ARGUMENTS}' (PARAMS, OPTIONS, OUTPUT_DIRECTORY)")
  endif()
  if(TARGET miras::mirasc)
    set(mirasc $<TARGET_FILE:miras::mirasc>)
    set(mirasc_dependency miras::mirasc)
  elseif(TARGET mirasc)
    set(mirasc $<TARGET_FILE:mirasc>)
    set(mirasc_dependency mirasc)
  else()
    find_program(MIRAS_MIRASC mirasc REQUIRED)
    set(mirasc ${MIRAS_MIRASC})
    set(mirasc_dependency ${MIRAS_MIRASC})
  endif()
  get_filename_component(source "${source}" ABSOLUTE)
  if(NOT EXISTS "${source}")
    message(FATAL_ERROR "miras_add_module(${name}): no file '${source}'")
  endif()
  set(dir "${ARG_OUTPUT_DIRECTORY}")
  if(NOT dir)
    set(dir "${CMAKE_CURRENT_BINARY_DIR}/miras/${name}")
  endif()
  file(MAKE_DIRECTORY "${dir}") # an imported target's include directory must exist
  set(library "${dir}/lib${name}.so")
  set(params)
  foreach(param ${ARG_PARAMS})
    list(APPEND params "-D${param}")
  endforeach()
  add_custom_command(OUTPUT "${library}"
    COMMAND ${mirasc} "${source}" ${params} ${ARG_OPTIONS} -o "${library}"
    DEPENDS "${source}" ${mirasc_dependency}
    COMMENT "mirasc: ${name} (${source})"
    VERBATIM)
  add_custom_target(${name}_mirasc DEPENDS "${library}")
  add_library(${name} SHARED IMPORTED GLOBAL)
  set_target_properties(${name} PROPERTIES
    IMPORTED_LOCATION "${library}"
    IMPORTED_SONAME "lib${name}.so"
    INTERFACE_INCLUDE_DIRECTORIES "${dir}")
  add_dependencies(${name} ${name}_mirasc)
endfunction()
