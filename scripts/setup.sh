#!/usr/bin/env bash
# Installs what owltrack needs to build and test on Debian/Ubuntu: FFmpeg and
# OpenCV development packages, clang for their bindings, the ffmpeg CLI used
# by tests and benchmarks, Chromium and ChromeDriver for the viewer page's
# browser test, and a Rust toolchain if none is present.
# Safe to run again: it installs only what is missing.
set -euo pipefail

packages=(
  pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
  libavfilter-dev libavdevice-dev ffmpeg
  libopencv-dev
  chromium chromium-driver
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "setup: cargo is in ~/.cargo/bin: run 'source ~/.cargo/env' or open a new shell" >&2
  else
    echo "setup: installing the Rust toolchain with rustup" >&2
    command -v curl >/dev/null || $sudo apt-get install -y -qq curl >/dev/null
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    echo "setup: run 'source ~/.cargo/env' (or open a new shell) before cargo" >&2
  fi
fi
