#!/usr/bin/env bash
# Install the built library into a scratch prefix, then build and run a consumer program
# against it twice: through find_package(fngd) (shared and static) and through pkg-config.
set -euo pipefail
build_dir=$1
src_dir=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$src_dir" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
LD_LIBRARY_PATH="$work/prefix/lib" "$work/consumer/app"
"$work/consumer/app_static"
libdir=$(ls -d "$work"/prefix/lib*/pkgconfig | head -1)
flags=$(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs fngd)
cc "$src_dir/main.c" $flags -o "$work/app_pc"
LD_LIBRARY_PATH="$(dirname "$libdir")" "$work/app_pc"
echo "install check: find_package (shared, static) and pkg-config consumers ran"
