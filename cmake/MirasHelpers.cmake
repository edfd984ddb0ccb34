# miras_mlir_library(<name> SOURCES <src...> [DEPENDS <targets...>] [LINK <libs...>])
# A static library built like LLVM/MLIR code (no exceptions) and linked against the
# shared libMLIR.so, which keeps links fast and the build small.
function(miras_mlir_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPENDS;LINK" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE -fno-exceptions)
  target_link_libraries(${name} PUBLIC MLIR LLVM ${ARG_LINK})
  if(ARG_DEPENDS)
    add_dependencies(${name} ${ARG_DEPENDS})
  endif()
endfunction()

# miras_mlir_tool(<name> SOURCES <src...> LINK <libs...>): an executable in build/bin.
function(miras_mlir_tool name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LINK" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE -fno-exceptions)
  target_link_libraries(${name} PRIVATE ${ARG_LINK} MLIR LLVM)
  # Installed, it still finds libMLIR.so and libLLVM.so where Debian put them.
  set_target_properties(${name} PROPERTIES INSTALL_RPATH "${LLVM_LIBRARY_DIR}")
  install(TARGETS ${name} EXPORT mirasTargets RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endfunction()
