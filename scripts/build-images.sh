#!/usr/bin/env bash
# Build the workflow's images, rootml/<name>:<docker-images/<name>/VERSION>, without any registry.
#
#   bash scripts/build-images.sh [--no-check] [NAME...]   build (default: all), then verify
#   bash scripts/build-images.sh --check [NAME...]        only verify already-built images
#
# NAME is one of: data train publish serve.
#
# How:
# - Base image: python:3.11-slim-bookworm when it is present or can be pulled; otherwise a local
#   rootml/base:bookworm made once from Debian with debootstrap (mirror read from the host's apt
#   sources) and `docker import`. ROOTML_BASE=<image> forces a base.
# - Python packages: the host's pip (its own configuration and CA bundle) downloads the pinned
#   wheels of docker-images/<name>/requirements.txt into build/wheelhouse/ (shared by all images
#   and runs; only missing wheels are fetched). The rootml wheel is built from the working tree.
# - `docker build --network none` on a context under build/images/<name>/ holding only what that
#   image needs; pip inside installs with --no-index. Docker's layer cache makes a rebuild with
#   nothing changed take seconds, and a code change rebuild only the small rootml layer.
# - Also read: VENV (default .venv), ROOTML_BUILD_DIR (default build), ROOTML_IMAGE_REPO (default
#   rootml), ROOTML_LOCAL_BASE (default rootml/base:bookworm), ROOTML_DEBIAN_MIRROR (default: the
#   host's apt sources), DOCKER_BUILDKIT (default 0, the legacy builder).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(data train publish serve)
PYTHON_BASE=python:3.11-slim-bookworm
LOCAL_BASE=${ROOTML_LOCAL_BASE:-rootml/base:bookworm}
VENV=${VENV:-.venv}
BUILD_DIR=${ROOTML_BUILD_DIR:-build}  # git-ignored
WHEELHOUSE=$BUILD_DIR/wheelhouse
WORK=$BUILD_DIR/images
# the legacy builder works offline with local base images; DOCKER_BUILDKIT=1 selects BuildKit
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}

die() { echo "build-images: $*" >&2; exit 1; }
say() { echo "build-images: $*" >&2; }

mode=build
check=1
names=()
for arg in "$@"; do
    case $arg in
        --check) mode=check ;;
        --no-check) check=0 ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $arg (expected --check or --no-check)" ;;
        *)
            [ -f "docker-images/$arg/Dockerfile" ] \
                || die "no image '$arg': expected one of ${ALL[*]} (docker-images/<name>/Dockerfile)"
            names+=("$arg") ;;
    esac
done
[ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")

if ! docker info >/dev/null 2>&1; then
    die "no Docker engine answers ('docker info' fails).
  Start one as root with:  bash scripts/start-docker.sh
  (it installs Debian's docker.io when missing and runs 'dockerd --bridge=none --iptables=false'),
  or make sure your user may talk to a running engine (the 'docker' group)."
fi

# ROOTML_IMAGE_REPO=<prefix> names the images <prefix>/<name> instead (the tests use it)
tag_of() { echo "${ROOTML_IMAGE_REPO:-rootml}/$1:$(tr -d '[:space:]' < "docker-images/$1/VERSION")"; }

# ------------------------------------------------------------------ verification

check_image() {  # name -> 0 when the image does what the workflow needs of it
    local name=$1 extra
    case $name in
        data) extra='python -c "import uproot, awkward, h5py, fsspec_xrootd, XRootD.client"
                     no_tf' ;;
        train) extra='python -c "import tensorflow, keras, tf2onnx, onnx, onnxruntime, matplotlib, scipy"
                      python -c "import rootml.training, rootml.metrics, rootml.scoring, rootml.bundle"' ;;
        publish) extra='python -c "import rootml.publishing"
                        no_tf' ;;
        serve) extra='python -c "import starlette, uvicorn, multipart, onnxruntime, orjson, httptools, uvloop, grpc"
                      python -c "import rootml.server.app, sys; sys.exit(\"tensorflow\" in sys.modules)"
                      python -c "import tensorflow, tf2onnx, onnx"
                      rootml serve --help >/dev/null' ;;
    esac
    # as REANA runs a step: uid 1000, gid 0, `bash -c`, base64; HOME and WORKDIR writable; offline.
    # One simple command a line: `set -e` does not stop inside an && list.
    docker run --rm --network none -u 1000:0 "$(tag_of "$name")" bash -c '
        set -euo pipefail
        no_tf() {
            if python -c "import importlib.util as u, sys; sys.exit(u.find_spec(\"tensorflow\") is None)"
            then echo "tensorflow must not be importable here" >&2; return 1; fi
        }
        rootml --version
        test "$(echo aGk= | base64 -d)" = hi
        touch "$HOME/x" ./x
        '"$extra"
}

run_checks() {
    local name failed=0 start
    for name in "${names[@]}"; do
        docker image inspect "$(tag_of "$name")" >/dev/null 2>&1 \
            || { say "$(tag_of "$name") is not built: run 'make images'"; failed=1; continue; }
        start=$SECONDS
        if out=$(check_image "$name" 2>&1); then
            printf '%-24s ok (%s; %ss)\n' "$(tag_of "$name")" "$(echo "$out" | head -1)" \
                "$((SECONDS - start))"
        else
            printf '%-24s FAILED\n%s\n' "$(tag_of "$name")" "$out"
            failed=1
        fi
    done
    return $failed
}

if [ $mode = check ]; then
    run_checks
    exit
fi

# ------------------------------------------------------------------ the base image

debian_mirror() {  # the host's Debian mirror for bookworm, from its apt sources
    if [ -n "${ROOTML_DEBIAN_MIRROR:-}" ]; then echo "$ROOTML_DEBIAN_MIRROR"; return; fi
    local f
    for f in /etc/apt/sources.list.d/*.sources; do  # deb822 stanzas
        [ -f "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             { uris = ""; ok = 0
               for (i = 1; i <= NF; i++) {
                   if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris = u[1] }
                   if ($i ~ /^Suites:/ && (" " $i " ") ~ /[ \t]bookworm[ \t]/) ok = 1
               }
               if (ok && uris != "") { print uris; exit } }' "$f"
    done | head -1 | grep . && return
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" { sub(/\[[^]]*\]/, ""); if ($3 == "bookworm") { print $2; exit } }' \
        | grep . && return
    return 1
}

make_local_base() {
    command -v debootstrap >/dev/null \
        || die "$PYTHON_BASE cannot be pulled and debootstrap is missing to make $LOCAL_BASE:
  install it (apt-get install debootstrap), or load the base with 'docker load'"
    [ "$(id -u)" -eq 0 ] || die "making $LOCAL_BASE with debootstrap needs root"
    local mirror root start=$SECONDS
    mirror=$(debian_mirror) || die "no bookworm mirror in the host's apt sources; set ROOTML_DEBIAN_MIRROR"
    root=$(mktemp -d /tmp/rootml-base.XXXXXX)
    # debootstrap mounts /proc and /sys inside; never delete through a mount left by a failure
    trap 'umount -R "'"$root"'/proc" "'"$root"'/sys" 2>/dev/null; rm -rf --one-file-system "'"$root"'"' EXIT
    say "making $LOCAL_BASE with debootstrap (once; about a minute; log in $WORK/base.log)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" "$mirror" >"$WORK/base.log" 2>&1 \
        || { tail -20 "$WORK/base.log" >&2; die "debootstrap failed (log: $WORK/base.log)"; }
    # slim it as Debian's slim images are; drop what debootstrap copied from this host (the apt
    # source names the host's mirror, resolv.conf and hostname are the host's)
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/man/* \
        "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/var/log/*.log
    find "$root"/usr/share/doc -type f ! -name copyright -delete
    rm -f "$root"/etc/apt/sources.list "$root"/etc/resolv.conf "$root"/etc/hostname
    tar --numeric-owner -C "$root" -c . | docker import \
        -c 'ENV LANG=C.UTF-8' \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["bash"]' - "$LOCAL_BASE" >/dev/null
    umount -R "$root/proc" "$root/sys" 2>/dev/null || true
    rm -rf --one-file-system "$root"
    trap - EXIT
    docker run --rm --network none "$LOCAL_BASE" bash -c '
        command -v base64 >/dev/null && python3 -c "
import sys, venv, ensurepip
assert sys.version_info[:2] == (3, 11), sys.version"' \
        || { docker rmi "$LOCAL_BASE" >/dev/null; die "$LOCAL_BASE lacks bash, base64 or Python 3.11 with venv"; }
    say "made $LOCAL_BASE in $((SECONDS - start)) s"
}

pick_base() {
    if [ -n "${ROOTML_BASE:-}" ]; then echo "$ROOTML_BASE"; return; fi
    if docker image inspect "$PYTHON_BASE" >/dev/null 2>&1 \
        || timeout 30 docker pull -q "$PYTHON_BASE" >/dev/null 2>&1; then
        echo "$PYTHON_BASE"; return
    fi
    docker image inspect "$LOCAL_BASE" >/dev/null 2>&1 || make_local_base
    echo "$LOCAL_BASE"
}

# ------------------------------------------------------------------ wheels

[ -x "$VENV/bin/pip" ] || die "no $VENV/bin/pip: run 'make venv' first (the host's pip downloads the wheels)"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

wheels() {  # "missing" REQ DIR: print the pins lacking a wheel; "link" REQ DIR DEST: link them
    "$VENV/bin/python" - "$@" <<'EOF'
import os, shutil, sys
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

mode, req, house = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
have = {}
for whl in house.glob("*.whl"):
    name, version, _, _ = parse_wheel_filename(whl.name)
    have.setdefault((name, version), whl)
for line in req.read_text().splitlines():
    line = line.split("#")[0].strip()
    if not line:
        continue
    r = Requirement(line)
    whl = have.get((canonicalize_name(r.name), Version(next(iter(r.specifier)).version)))
    if mode == "missing":
        if whl is None:
            print(line)
    else:
        dest = Path(sys.argv[4]) / whl.name
        try:
            os.link(whl, dest)
        except OSError:
            shutil.copy2(whl, dest)
EOF
}

fetch_wheels() {  # REQ: download the pinned wheels the wheelhouse lacks
    local missing
    missing=$(wheels missing "$1" "$WHEELHOUSE")
    [ -n "$missing" ] || return 0
    say "downloading $(echo "$missing" | wc -l) wheel(s) for $1 into $WHEELHOUSE"
    echo "$missing" > "$WORK/missing.txt"
    "${PIP[@]}" download --only-binary=:all: --no-deps --python-version 3.11 \
        -r "$WORK/missing.txt" -d "$WHEELHOUSE" >"$WORK/pip.log" 2>&1 \
        || { tail -20 "$WORK/pip.log" >&2
             die "pip could not download the wheels of $1 (is the package index reachable?)"; }
    missing=$(wheels missing "$1" "$WHEELHOUSE")
    [ -z "$missing" ] || die "no wheel for these pins of $1: $missing"
}

rootml_wheel() {  # build the rootml wheel of the working tree unless its sources are unchanged
    local key dist=$WORK/dist
    key=$( { find src/rootml workflows steps -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
                 | sort -z | xargs -0 sha256sum; sha256sum pyproject.toml README.md LICENSE; } \
           | sha256sum | cut -c1-16)
    if [ -f "$dist/.key" ] && [ "$(cat "$dist/.key")" = "$key" ] && ls "$dist"/rootml-*.whl >/dev/null 2>&1
    then
        return 0
    fi
    if ! ls "$WHEELHOUSE"/build/hatchling-*.whl >/dev/null 2>&1; then
        "${PIP[@]}" download --only-binary=:all: -d "$WHEELHOUSE/build" 'hatchling>=1.21' \
            >"$WORK/pip.log" 2>&1 \
            || { tail -20 "$WORK/pip.log" >&2; die "pip could not download hatchling (rootml's build backend)"; }
    fi
    rm -rf "$dist"
    "${PIP[@]}" wheel --quiet --no-deps --no-index --find-links "$WHEELHOUSE/build" -w "$dist" . \
        >"$WORK/wheel.log" 2>&1 || { cat "$WORK/wheel.log" >&2; die "building the rootml wheel failed"; }
    echo "$key" > "$dist/.key"
}

# ------------------------------------------------------------------ build

mkdir -p "$WORK" "$WHEELHOUSE"
# one build at a time: a second one would rewrite the contexts under $WORK while docker reads them
if command -v flock >/dev/null; then
    exec 9>"$WORK/.lock"
    flock -n 9 || { say "another build-images.sh is running; waiting for it"; flock 9; }
fi
begin=$SECONDS
BASE=$(pick_base)
rootml_wheel
ROOTML_VERSION=$(basename "$WORK"/dist/rootml-*.whl | cut -d- -f2)
say "base $BASE, rootml $ROOTML_VERSION"

build_key() {  # NAME: what the image is built from (its files, the rootml wheel, the base)
    { sha256sum "docker-images/$1/Dockerfile" "docker-images/$1/requirements.txt" \
          "docker-images/$1/VERSION"; cat "$WORK/dist/.key"; docker image inspect -f '{{.Id}}' "$BASE"; } \
        | sha256sum | cut -c1-16
}

build_one() {  # NAME IMAGE KEY: docker build of the image, labelled with its build key
    local name=$1 image=$2 key=$3 ctx=$WORK/$1
    fetch_wheels "docker-images/$name/requirements.txt"
    rm -rf "$ctx" && mkdir -p "$ctx/wheels" "$ctx/dist"
    cp "docker-images/$name/Dockerfile" "docker-images/$name/requirements.txt" "$ctx/"
    wheels link "docker-images/$name/requirements.txt" "$WHEELHOUSE" "$ctx/wheels"
    cp "$WORK"/dist/rootml-*.whl "$ctx/dist/"
    if ! docker build --network none --build-arg "BASE=$BASE" \
        --build-arg "ROOTML_VERSION=$ROOTML_VERSION" \
        --build-arg "IMAGE_VERSION=$(tr -d '[:space:]' < "docker-images/$name/VERSION")" \
        --label "io.rootml.buildkey=$key" -t "$image" "$ctx" >"$WORK/$name.log" 2>&1
    then
        tail -30 "$WORK/$name.log" >&2
        die "building $image failed (full log: $WORK/$name.log)"
    fi
    # the image this one replaced, if any (untagged now); never the stages: they are the cache
    docker image prune -f --filter "label=io.rootml.image=$name" >/dev/null
}

for name in "${names[@]}"; do
    image=$(tag_of "$name")
    start=$SECONDS
    key=$(build_key "$name")
    # when nothing it is built from changed, not even Docker's cached build (a second per
    # image to send the context and walk the layers) is needed
    if [ "$(docker image inspect -f '{{index .Config.Labels "io.rootml.buildkey"}}' "$image" 2>/dev/null)" != "$key" ]
    then
        build_one "$name" "$image" "$key"
    fi
    read -r id size < <(docker image inspect -f '{{.Id}} {{.Size}}' "$image")
    printf '%-24s %s %6s MB %4ss\n' "$image" "${id:7:12}" "$((size / 1000000))" "$((SECONDS - start))"
done

say "built ${names[*]} in $((SECONDS - begin)) s"
if [ $check = 1 ]; then
    run_checks
fi
