#!/usr/bin/env bash
# Dry run of the README's rosdep install against a local checkout of ros/rosdistro (no network,
# no ROS install): prints what rosdep would install for adascale_ros and adascale_msgs on Ubuntu
# 24.04 with Jazzy. Needs rosdep (pip install rosdep).
#   scripts/rosdep_check.sh <rosdistro checkout> [rosdistro] [os]
set -euo pipefail
rosdistro_dir=$(realpath "${1:?usage: $0 <rosdistro checkout> [rosdistro] [os]}")
distro=${2:-jazzy}
os=${3:-ubuntu:noble}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The index without its remote caches, so that rosdep reads the checkout's distribution file.
python3 - "$rosdistro_dir" "$distro" "$work/index.yaml" <<'PY'
import sys, yaml
root, distro, out = sys.argv[1:]
index = yaml.safe_load(open(f"{root}/index-v4.yaml"))
entry = {k: v for k, v in index["distributions"][distro].items() if k != "distribution_cache"}
entry["distribution"] = [f"file://{root}/{d}" for d in entry["distribution"]]
index["distributions"] = {distro: entry}
yaml.safe_dump(index, open(out, "w"))
PY
mkdir -p "$work/sources"
printf 'yaml file://%s/rosdep/base.yaml\nyaml file://%s/rosdep/python.yaml\n' "$rosdistro_dir" "$rosdistro_dir" \
  > "$work/sources/20-default.list"
export ROSDISTRO_INDEX_URL="file://$work/index.yaml" ROSDEP_SOURCE_PATH="$work/sources" ROS_HOME="$work/home"
rosdep update --rosdistro "$distro" > /dev/null
rosdep install --from-paths "$repo" "$repo/adascale_msgs" --ignore-src -y --simulate \
  --os="$os" --rosdistro "$distro"
