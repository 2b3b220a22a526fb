# mp_add_module(NAME <mod> [DEPS <targets...>] [PRIVATE_DEPS <targets...>])
#
# Creates the library meshpipe_<mod> (alias meshpipe::<mod>) from src/<mod>/*.cc (and
# src/<mod>/*/*.cc, except src/<mod>/cuda/, which a module adds in CUDA builds), and, when tests/<mod>/ exists, the Catch2 executable <mod>_tests from
# tests/<mod>/*_test.cc, registered with catch_discover_tests (docs/style.md rule 9).

set(MP_WARNINGS -Wall -Wextra -Werror)

function(mp_add_module)
  cmake_parse_arguments(ARG "" "NAME" "DEPS;PRIVATE_DEPS;TEST_DEPS" ${ARGN})
  set(mod ${ARG_NAME})
  set(src_dir ${PROJECT_SOURCE_DIR}/src/${mod})
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${src_dir}/*.cc)
  # Sources under a cuda/ folder are CUDA-only: the module adds them itself when MP_HAVE_CUDA.
  list(FILTER srcs EXCLUDE REGEX "/cuda/")
  add_library(meshpipe_${mod} STATIC ${srcs})
  add_library(meshpipe::${mod} ALIAS meshpipe_${mod})
  target_include_directories(meshpipe_${mod} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/src> $<INSTALL_INTERFACE:include>)
  target_compile_options(meshpipe_${mod} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${MP_WARNINGS}>)
  target_link_libraries(meshpipe_${mod} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  set_target_properties(meshpipe_${mod} PROPERTIES POSITION_INDEPENDENT_CODE ON EXPORT_NAME ${mod})
  install(TARGETS meshpipe_${mod} EXPORT meshpipeTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(DIRECTORY ${src_dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/${mod}
          FILES_MATCHING PATTERN "*.h" PATTERN "internal" EXCLUDE)

  set(test_dir ${PROJECT_SOURCE_DIR}/tests/${mod})
  if(EXISTS ${test_dir})
    file(GLOB test_srcs CONFIGURE_DEPENDS ${test_dir}/*_test.cc)
    if(test_srcs)
      add_executable(${mod}_tests ${test_srcs})
      target_compile_options(${mod}_tests PRIVATE ${MP_WARNINGS})
      target_include_directories(${mod}_tests PRIVATE ${PROJECT_SOURCE_DIR}/tests)
      target_link_libraries(${mod}_tests PRIVATE meshpipe_${mod} ${ARG_TEST_DEPS}
                            Catch2::Catch2WithMain)
      target_compile_definitions(${mod}_tests PRIVATE
        MP_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data")
      catch_discover_tests(${mod}_tests TEST_PREFIX "${mod}: ")
      # Properties with a list value (ENVIRONMENT) do not survive catch_discover_tests' own
      # PROPERTIES (its list is split on the command line), so a ctest include file, read after
      # the discovered names, sets them: thread counts for this 2-core machine, UCX on loopback
      # and a finite timeout for every case.
      set(props ${CMAKE_CURRENT_BINARY_DIR}/${mod}_tests_properties.cmake)
      file(WRITE ${props} "if(DEFINED ${mod}_tests_TESTS)
  set_tests_properties(\${${mod}_tests_TESTS} PROPERTIES
    ENVIRONMENT \"OPENBLAS_NUM_THREADS=2;OMP_NUM_THREADS=2;UCX_NET_DEVICES=lo\" TIMEOUT 300)
endif()
")
      set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${props})
    endif()
  endif()
endfunction()

# mp_label_gpu_tests(<mod>): the <mod>_tests cases whose names contain "GPU" also carry the
# label `gpu`, so `ctest -L gpu` on a GPU machine (scripts/gpu-check.sh) runs them; without a
# GPU they pass with a warning. A ctest include file, read after the discovered names.
function(mp_label_gpu_tests mod)
  if(NOT TARGET ${mod}_tests)
    return()
  endif()
  set(file ${CMAKE_CURRENT_BINARY_DIR}/${mod}_tests_gpu_labels.cmake)
  file(WRITE ${file} "if(DEFINED ${mod}_tests_TESTS)
  foreach(t IN LISTS ${mod}_tests_TESTS)
    if(t MATCHES \"GPU\")
      set_tests_properties(\"\${t}\" PROPERTIES LABELS gpu)
    endif()
  endforeach()
endif()
")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${file})
endfunction()
