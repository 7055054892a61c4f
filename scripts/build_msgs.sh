#!/usr/bin/env bash
# Build adascale_msgs (rosidl) against the venv's ROS 2 wheels and install it
# into the venv prefix, where the venv's python imports it with no sourcing.
set -euo pipefail
venv=$(cd "${1:-.venv}" && pwd)
export AMENT_PREFIX_PATH="$venv"   # else rosidl finds no typesupport packages
export PATH="$venv/bin:$PATH"
cmake -S adascale_msgs -B build/adascale_msgs \
  -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF >build/adascale_msgs.log 2>&1 \
  || { cat build/adascale_msgs.log; exit 1; }
cmake --build build/adascale_msgs -j"$(nproc)" >>build/adascale_msgs.log 2>&1 \
  || { tail -50 build/adascale_msgs.log; exit 1; }
cmake --install build/adascale_msgs >>build/adascale_msgs.log 2>&1
echo "adascale_msgs installed into $venv"
