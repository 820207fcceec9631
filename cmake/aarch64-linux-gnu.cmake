# Cross-compile for 64-bit Arm Linux with Debian's cross toolchain, and run what is built (ctest) under qemu's
# user-mode emulator. Debian packages: g++-aarch64-linux-gnu, qemu-user (which has /usr/bin/qemu-aarch64).
#
#   cmake -S . -B build-aarch64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
#   cmake --build build-aarch64 && ctest --test-dir build-aarch64 --output-on-failure
#
# Only the torch-free parts build this way (leave ENIGMA_FAST_BUILD_TORCH off: there is no aarch64 libtorch here).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(EF_CROSS_TRIPLE aarch64-linux-gnu)
set(EF_CROSS_SYSROOT /usr/${EF_CROSS_TRIPLE})  # where Debian's *-arm64-cross packages put libc, libstdc++, ...

set(CMAKE_C_COMPILER ${EF_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${EF_CROSS_TRIPLE}-g++)

# Look for headers and libraries in the target's tree, programs on the host.
set(CMAKE_FIND_ROOT_PATH ${EF_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# add_test(COMMAND <target>) runs the target through this; -L makes qemu find the aarch64 dynamic loader and libs.
find_program(EF_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(EF_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${EF_QEMU_AARCH64} -L ${EF_CROSS_SYSROOT})
else()
  message(WARNING "qemu-aarch64 not found (Debian package qemu-user): ctest can run the tests only on an aarch64 "
                  "host or one with binfmt_misc set up for aarch64")
endif()
