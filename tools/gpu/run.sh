#!/usr/bin/env bash
# Runs a named vlmargin job on a GPU host from the unpacked bundle that tools/gpu/pack.sh
# builds (this file is the bundle's run.sh). Sets up the Vulkan loader (and the glvnd libraries
# NVIDIA's Vulkan driver needs) from the bundled .debs,
# points Dawn at the NVIDIA ICD, prints what the host has, runs the job with the bundled node,
# and, when $OUT is set, packs results/ (everything the jobs so far wrote) into $OUT/JOB.tgz:
# the device tool brings back at most 8 files, so one archive per job.
#
#   run.sh doctor                      vlmargin doctor (backends, GPU adapter) → results/doctor.json
#   run.sh bench-gpu [args]            node dist/bench/gpu.js [args] → results/bench-gpu.json
#   run.sh check-webgpu [args]         node dist/bench/check-webgpu.js [args]: one step on webgpu and on wasm,
#                                      compared (loss, gradients, AdamW update, MWN weights) → results/check-webgpu.json
#   run.sh test-webgpu [grep]          the mocha suite on the webgpu backend (VLMARGIN_TEST_BACKEND=webgpu)
#   run.sh pretrain [args]             npm run pretrain's job on webgpu from the bundled corpus and frame cache
#                                      (default config; args go to pipelines/pretrain.js) → results/pretrain/
#   run.sh reference [args]            python3 tools/reference/sam_reference.py [args] → results/sam_reference.json
#   run.sh clip-fixture [args]         python3 tools/reference/make_clip_fixture.py → results/clip-tiny/
#   run.sh node SCRIPT [args]          any script with the bundled node, from the bundle root
# JOB_TIMEOUT=S in the environment stops a job's node or python process after S seconds; the
# results so far are still packed to $OUT.
set -uo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RESULTS="$DIR/results"
mkdir -p "$RESULTS"
NODE="$DIR/bin/node"
[ -x "$NODE" ] || NODE="$(command -v node || true)"
[ -n "$NODE" ] || { echo "run.sh: no node: neither $DIR/bin/node nor one on PATH" >&2; exit 1; }
PY="${PYTHON:-$(command -v python3 || command -v python || true)}"

usage() {
  awk 'NR > 1 && /^set -uo/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}" >&2
  exit 2
}
[ $# -ge 1 ] || usage
JOB="$1"; shift

# --- Vulkan loader and the GL dispatch libraries -----------------------------------------
# NVIDIA's Vulkan driver (its ICD library) links against glvnd's libGLdispatch/libGLX, which a
# bare CUDA image may lack, as it may lack the loader itself. Each bundled package is
# installed to / (when root) only if the host lacks its library, so a host library is never
# replaced; without root the libraries are used from the bundle through LD_LIBRARY_PATH.
soname_of() {
  case "$(basename "$1")" in
    libvulkan1_*) echo libvulkan.so.1 ;;
    libglvnd0_*) echo libGLdispatch.so.0 ;;
    libglx0_*) echo libGLX.so.0 ;;
    libgl1_*) echo libGL.so.1 ;;
    libegl1_*) echo libEGL.so.1 ;;
    libopengl0_*) echo libOpenGL.so.0 ;;
    libgles2_*) echo libGLESv2.so.2 ;;
    *) echo "" ;;
  esac
}
export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v ldconfig > /dev/null; then
  # Without ldconfig there is no telling what the host has: nothing is installed to /.
  echo "run.sh: no ldconfig: the bundled libraries are used from the bundle (LD_LIBRARY_PATH)" >&2
  NO_LDCONFIG=1
fi
if ls "$DIR"/debs/*.deb > /dev/null 2>&1; then
  mkdir -p "$DIR/sysroot"
  missing=0
  for d in "$DIR"/debs/*.deb; do
    dpkg -x "$d" "$DIR/sysroot" 2> /dev/null || echo "run.sh: dpkg -x $d failed" >&2
    so="$(soname_of "$d")"
    if [ -n "${NO_LDCONFIG:-}" ]; then
      missing=1
    elif [ -n "$so" ] && ! ldconfig -p 2> /dev/null | grep -q "$so "; then
      missing=1
      if [ "$(id -u)" = 0 ]; then
        dpkg -x "$d" / && echo "run.sh: installed $(basename "$d") to / (the host had no $so)" >&2
      fi
    fi
  done
  if [ "$missing" = 1 ]; then
    if [ "$(id -u)" = 0 ] && [ -z "${NO_LDCONFIG:-}" ]; then ldconfig
    else
      export LD_LIBRARY_PATH="$DIR/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "run.sh: not root: using the bundled libraries via LD_LIBRARY_PATH" >&2
    fi
  fi
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

# --- what the host has ---------------------------------------------------------------------
{
  echo "== bundle"; cat "$DIR/BUNDLE.txt" 2> /dev/null
  echo "== node $("$NODE" --version 2>&1) ($NODE)"
  echo "== VK_DRIVER_FILES=${VK_DRIVER_FILES:-(unset)}"
  for f in ${VK_DRIVER_FILES//:/ } /usr/local/nvidia/share/vulkan/icd.d/*.json /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json; do
    [ -f "$f" ] || continue
    echo "icd: $f"
    # The driver library the ICD names, where it resolves, and any library it cannot find:
    # the usual reason Dawn sees no adapter.
    lib="$(sed -n 's/.*"library_path" *: *"\([^"]*\)".*/\1/p' "$f" | head -1)"
    if [ -n "$lib" ]; then
      path="$lib"
      case "$lib" in /*) ;; *) path="$(ldconfig -p 2> /dev/null | awk -v l="$lib" '$1 == l { print $NF; exit }')" ;; esac
      echo "  library $lib -> ${path:-(not found by ldconfig)}"
      [ -n "$path" ] && [ -f "$path" ] && ldd "$path" 2> /dev/null | grep 'not found' | sed 's/^/  missing: /'
    fi
  done
  if command -v nvidia-smi > /dev/null; then echo "== nvidia-smi"; nvidia-smi; else echo "== no nvidia-smi"; fi
  if command -v vulkaninfo > /dev/null; then echo "== vulkaninfo --summary"; vulkaninfo --summary 2>&1 | head -60; fi
  if [ -n "$PY" ]; then
    echo "== $("$PY" --version 2>&1)"
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1
    "$PY" -c 'import transformers; print("transformers", transformers.__version__)' 2>&1 | tail -1
  fi
} 2>&1 | tee "$RESULTS/host.txt"

has_json() {
  for a in "$@"; do [ "$a" = "--json" ] && return 0; done
  return 1
}

# A timeout around run.sh would kill the shell and leave node running; this one stops the job.
limit() {
  if [ -n "${JOB_TIMEOUT:-}" ]; then timeout -k 10 "$JOB_TIMEOUT" "$@"; else "$@"; fi
}

cd "$DIR"
rc=0
case "$JOB" in
  doctor)
    limit "$NODE" dist/pipelines/cli/main.js doctor --json > "$RESULTS/doctor.json"; rc=$?
    cat "$RESULTS/doctor.json"
    ;;
  bench-gpu)
    if has_json "$@"; then limit "$NODE" dist/bench/gpu.js "$@"; rc=$?
    else limit "$NODE" dist/bench/gpu.js "$@" --json "$RESULTS/bench-gpu.json"; rc=$?; fi
    ;;
  check-webgpu)
    if has_json "$@"; then limit "$NODE" dist/bench/check-webgpu.js "$@"; rc=$?
    else limit "$NODE" dist/bench/check-webgpu.js "$@" --json "$RESULTS/check-webgpu.json"; rc=$?; fi
    ;;
  test-webgpu)
    VLMARGIN_TEST_BACKEND=webgpu limit "$NODE" test/run-mocha.mjs "$@" 2>&1 | tee "$RESULTS/test-webgpu.txt"; rc=${PIPESTATUS[0]}
    ;;
  pretrain)
    # The default config, on the GPU, from the bundled frame cache; --backend/--out can be overridden.
    limit "$NODE" dist/pipelines/pretrain.js --config pipelines/configs/default.json --backend webgpu --out "$RESULTS/pretrain" "$@" 2>&1 | tee "$RESULTS/pretrain.txt"; rc=${PIPESTATUS[0]}
    # Weights stay in the bundle folder; only the small reports travel back.
    find "$RESULTS/pretrain" -name '*.safetensors' -delete 2> /dev/null
    ;;
  reference)
    [ -n "$PY" ] || { echo "run.sh: reference needs python3 with torch" >&2; exit 1; }
    if has_json "$@"; then limit "$PY" tools/reference/sam_reference.py "$@"; rc=$?
    else limit "$PY" tools/reference/sam_reference.py "$@" --json "$RESULTS/sam_reference.json"; rc=$?; fi
    ;;
  clip-fixture)
    [ -n "$PY" ] || { echo "run.sh: clip-fixture needs python3 with torch and transformers" >&2; exit 1; }
    limit "$PY" tools/reference/make_clip_fixture.py --out "$RESULTS/clip-tiny" "$@"; rc=$?
    ;;
  node)
    [ $# -ge 1 ] || usage
    limit "$NODE" "$@"; rc=$?
    ;;
  *)
    echo "run.sh: unknown job '$JOB'" >&2
    usage
    ;;
esac

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  tar -czf "$OUT/$JOB.tgz" -C "$RESULTS" .
  echo "run.sh: results packed to $OUT/$JOB.tgz: $(cd "$RESULTS" && find . -type f | wc -l) files" >&2
fi
exit "$rc"
