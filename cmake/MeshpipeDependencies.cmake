# Finds every third-party dependency once, for all modules (TOOLCHAIN.md §2, §13).
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

# GLPK: no CMake config or pkg-config file (TOOLCHAIN.md §5).
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

# CUDA is optional: AUTO builds it when nvcc exists, OFF skips it (STYLE.md rule 10).
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
    find_package(CUDAToolkit REQUIRED)
    set(MP_HAVE_CUDA ON)
  elseif(MP_ENABLE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MP_ENABLE_CUDA=ON but no CUDA compiler was found")
  endif()
endif()
message(STATUS "meshpipe: CUDA ${MP_HAVE_CUDA}")
