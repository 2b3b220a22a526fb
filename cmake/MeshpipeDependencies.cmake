# Finds every third-party dependency once, for all modules (docs/toolchain.md §2, §13).
find_package(Threads REQUIRED)
find_package(fmt 9 CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(nlohmann_json 3.11 CONFIG REQUIRED)
find_package(CLI11 2.1 CONFIG REQUIRED)
find_package(Catch2 2 CONFIG REQUIRED)
include(Catch)

# OpenBLAS: cblas.h lives in its own include directory.
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_path(OPENBLAS_CBLAS_INCLUDE_DIR cblas.h
          PATH_SUFFIXES x86_64-linux-gnu/openblas-pthread aarch64-linux-gnu/openblas-pthread
          REQUIRED)

find_package(OpenMP REQUIRED COMPONENTS CXX)

# GLPK: no CMake config or pkg-config file (docs/toolchain.md §5).
find_path(GLPK_INCLUDE_DIR glpk.h REQUIRED)
find_library(GLPK_LIBRARY glpk REQUIRED)
if(NOT TARGET GLPK::glpk)
  add_library(GLPK::glpk UNKNOWN IMPORTED)
  set_target_properties(GLPK::glpk PROPERTIES
    IMPORTED_LOCATION "${GLPK_LIBRARY}" INTERFACE_INCLUDE_DIRECTORIES "${GLPK_INCLUDE_DIR}")
endif()

# Python with PyTorch for the oracle tests (Debian's interpreter sees python3-torch).
if(EXISTS /usr/bin/python3 AND NOT Python3_EXECUTABLE)
  set(Python3_EXECUTABLE /usr/bin/python3)
endif()
find_package(Python3 COMPONENTS Interpreter)

# CUDA is optional: AUTO builds it when nvcc exists, OFF skips it (docs/style.md rule 10).
set(MP_ENABLE_CUDA AUTO CACHE STRING "CUDA kernels: AUTO, ON or OFF")
if(DEFINED MESHPIPE_CUDA AND NOT MESHPIPE_CUDA)
  set(MP_ENABLE_CUDA OFF CACHE STRING "CUDA kernels: AUTO, ON or OFF" FORCE)
endif()
set(MP_HAVE_CUDA OFF)
if(NOT MP_ENABLE_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    enable_language(CUDA)
    # CMake 3.25 does not know nvcc 13's C++20 flag ("requires the language dialect CUDA20"
    # at generation): name it.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    find_package(CUDAToolkit REQUIRED)
    set(MP_HAVE_CUDA ON)
  elseif(MP_ENABLE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MP_ENABLE_CUDA=ON but no CUDA compiler was found")
  endif()
endif()
message(STATUS "meshpipe: CUDA ${MP_HAVE_CUDA}")

# NCCL (GPU collectives; only src/comm links it) needs CUDA. AUTO builds it when CUDA is built and
# nccl.h and libnccl are found next to the toolkit; there is no FindNCCL, so the imported target
# is made here (docs/toolchain.md §8).
set(MP_ENABLE_NCCL AUTO CACHE STRING "NCCL collectives: AUTO, ON or OFF (needs CUDA)")
set(MP_HAVE_NCCL OFF)
if(NOT MP_ENABLE_NCCL STREQUAL "OFF" AND MP_HAVE_CUDA)
  if(NOT TARGET NCCL::nccl)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      add_library(NCCL::nccl UNKNOWN IMPORTED)
      set_target_properties(NCCL::nccl PROPERTIES
        IMPORTED_LOCATION "${NCCL_LIBRARY}" INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
    endif()
  endif()
  if(TARGET NCCL::nccl)
    set(MP_HAVE_NCCL ON)
  endif()
endif()
if(MP_ENABLE_NCCL STREQUAL "ON" AND NOT MP_HAVE_NCCL)
  message(FATAL_ERROR "MP_ENABLE_NCCL=ON but CUDA or NCCL (nccl.h, libnccl) was not found")
endif()
message(STATUS "meshpipe: NCCL ${MP_HAVE_NCCL}")

# Gloo (CPU collectives) and UCX (point-to-point transport) are optional, AUTO by default
# (docs/style.md rule 10; docs/toolchain.md §4, §10). Only src/comm links them.
set(MP_ENABLE_GLOO AUTO CACHE STRING "Gloo collectives: AUTO, ON or OFF")
set(MP_HAVE_GLOO OFF)
if(NOT MP_ENABLE_GLOO STREQUAL "OFF")
  if(NOT TARGET gloo)
    find_package(Gloo 0.5 CONFIG QUIET)
  endif()
  if(TARGET gloo)
    set(MP_HAVE_GLOO ON)
  elseif(MP_ENABLE_GLOO STREQUAL "ON")
    message(FATAL_ERROR "MP_ENABLE_GLOO=ON but Gloo was not found")
  endif()
endif()
message(STATUS "meshpipe: Gloo ${MP_HAVE_GLOO}")

set(MP_ENABLE_UCX AUTO CACHE STRING "UCX transport: AUTO, ON or OFF")
set(MP_HAVE_UCX OFF)
if(NOT MP_ENABLE_UCX STREQUAL "OFF")
  # ucx-config.cmake has no include guard, and its targets file sets plain variables `prefix`
  # and `exec_prefix` in this scope; drop them so nothing later picks them up by accident.
  if(NOT TARGET ucx::ucp)
    find_package(ucx 1.13 CONFIG QUIET)
    unset(prefix)
    unset(exec_prefix)
  endif()
  if(TARGET ucx::ucp AND TARGET ucx::ucs)
    set(MP_HAVE_UCX ON)
  elseif(MP_ENABLE_UCX STREQUAL "ON")
    message(FATAL_ERROR "MP_ENABLE_UCX=ON but UCX was not found")
  endif()
endif()
message(STATUS "meshpipe: UCX ${MP_HAVE_UCX}")

# CAF 0.17 (actors/ only). Debian's libcaf-dev ships no CMake config: build the imported target
# here (docs/toolchain.md §3).
if(NOT TARGET CAF::core)
  find_path(CAF_INCLUDE_DIR caf/all.hpp REQUIRED)
  find_library(CAF_CORE_LIBRARY caf_core REQUIRED)
  add_library(CAF::core UNKNOWN IMPORTED)
  set_target_properties(CAF::core PROPERTIES
    IMPORTED_LOCATION "${CAF_CORE_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES Threads::Threads)
endif()
if(NOT TARGET CAF::io)
  find_library(CAF_IO_LIBRARY caf_io REQUIRED)
  add_library(CAF::io UNKNOWN IMPORTED)
  set_target_properties(CAF::io PROPERTIES
    IMPORTED_LOCATION "${CAF_IO_LIBRARY}"
    INTERFACE_LINK_LIBRARIES CAF::core)
endif()
