#!/usr/bin/env bash
# Builds a self-contained bundle for a GPU host with no network and possibly no Node:
# the node binary, the built dist/, a pruned node_modules (tfjs core + backends, the webgpu
# package with only its linux-x64 Dawn binary, zod, commander, mocha for test-webgpu, the
# tokenizer and plot libraries; no onnxruntime, sharp, ffmpeg installers, tfjs-node-gpu or
# typescript), the Vulkan loader .debs, the reference scripts, run.sh, and the default synthetic
# corpus with its cached frame shards (so `run.sh pretrain` trains on the GPU host without ffmpeg).
#
#   bash tools/gpu/pack.sh [--out .gpu-bundle] [--no-build] [--frames DIR] [--corpus DIR|none]
#
# Writes OUT/vlmargin-gpu.tar.xz (and prints its size; it must stay under 64 MiB) and leaves
# the staged tree in OUT/stage. On the GPU host:
#   mkdir -p /tmp/vg && tar -xJf vlmargin-gpu.tar.xz -C /tmp/vg && /tmp/vg/vlmargin-gpu/run.sh doctor
# --frames DIR adds a frame cache folder (e.g. one built by `vlmargin frames`) as
# vlmargin-gpu/frames/ if the bundle stays under the limit with it.
# --corpus DIR (default data/synth-default, which `npm run pretrain` writes) copies the corpus:
# its manifest, corpus.json, clips, tokenizer and the frame cache of the default config
# (frames-4x32-uniform); `none` leaves it out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/.gpu-bundle"
BUILD=1
FRAMES=""
CORPUS="data/synth-default"
LIMIT=$((64 * 1024 * 1024))
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --frames) FRAMES="$2"; shift 2 ;;
    --corpus) CORPUS="$2"; shift 2 ;;
    *) echo "pack.sh: unknown argument '$1' (expected --out DIR, --no-build, --frames DIR, --corpus DIR|none)" >&2; exit 2 ;;
  esac
done
[ -z "$FRAMES" ] || [ -d "$FRAMES" ] || { echo "pack.sh: --frames '$FRAMES' is not a directory" >&2; exit 2; }

NODE_BIN="$(command -v node)" || { echo "pack.sh: node not found on PATH" >&2; exit 1; }
NODE_BIN="$(readlink -f "$NODE_BIN")"
cd "$ROOT"
if [ "$BUILD" = 1 ]; then
  echo "pack.sh: building (npx tsc -p .)"
  npx tsc -p . >&2
fi
[ -f dist/bench/gpu.js ] || { echo "pack.sh: dist/bench/gpu.js is missing; build first (npx tsc -p .)" >&2; exit 1; }

STAGE="$OUT/stage"
B="$STAGE/vlmargin-gpu"
rm -rf "$STAGE"
mkdir -p "$B/bin" "$B/debs" "$B/node_modules"

# --- node ----------------------------------------------------------------------------------
cp "$NODE_BIN" "$B/bin/node"
"$NODE_BIN" --version > "$B/bin/node.version"

# --- the project -----------------------------------------------------------------------------
cp package.json "$B/"
# Tests run from dist/test, whose fixtures are read relative to the repository root.
tar --exclude='*.map' --exclude='*.d.ts' -cf - dist | tar -xf - -C "$B"
mkdir -p "$B/test" "$B/pipelines"
cp test/run-mocha.mjs "$B/test/"
[ -d test/fixtures ] && cp -r test/fixtures "$B/test/"
cp -r pipelines/configs "$B/pipelines/"
mkdir -p "$B/tools/reference"
cp tools/reference/*.py "$B/tools/reference/"
[ -d meta-data ] && cp -r meta-data "$B/"
cp tools/gpu/run.sh "$B/run.sh"
chmod +x "$B/run.sh"

# --- the default corpus and its frame cache (pretrain reuses the cache: no ffmpeg needed) -----
if [ "$CORPUS" != none ]; then
  SHARDS="$CORPUS/frames-4x32-uniform"
  if [ -f "$CORPUS/corpus.json" ] && [ -f "$SHARDS/index.json" ]; then
    mkdir -p "$B/$CORPUS"
    tar -C "$CORPUS" --exclude='frames-*' --exclude='*.lock' -cf - . | tar -xf - -C "$B/$CORPUS"
    cp -r "$SHARDS" "$B/$SHARDS"
    rm -f "$B/$SHARDS"/*.lock
  else
    echo "pack.sh: warning: $CORPUS has no corpus.json or no frame cache $SHARDS; run 'npm run pretrain' once (it writes both) or pass --corpus none" >&2
  fi
fi

# --- node_modules: the runtime closure, minus what a GPU host does not run -----------------
# Packages left out: native or downloaded binaries the GPU benchmarks never call. The three
# that @xenova/transformers imports at load time (for models; vlmargin uses its tokenizers
# only) are replaced by stubs that load and throw on use.
"$NODE_BIN" - "$ROOT" "$B/node_modules" <<'EOF'
const fs = require('node:fs');
const path = require('node:path');
const [root, dest] = process.argv.slice(2);
const EXCLUDE = new Set(['onnxruntime-node', 'onnxruntime-web', 'onnxruntime-common', 'sharp', '@tensorflow/tfjs-node-gpu',
  '@ffmpeg-installer/ffmpeg', '@ffprobe-installer/ffprobe', 'typescript', '@types/node',
  // @tensorflow/tfjs lists it for its browser polyfill entry; the Node entry never loads it.
  'core-js']);
const STUBS = {
  'onnxruntime-node': "module.exports = { env: {}, InferenceSession: { create() { throw new Error('onnxruntime-node is not in the vlmargin GPU bundle'); } }, Tensor: class {} };\n",
  'onnxruntime-web': "module.exports = { env: { wasm: {} }, InferenceSession: { create() { throw new Error('onnxruntime-web is not in the vlmargin GPU bundle'); } }, Tensor: class {} };\n",
  sharp: "module.exports = function sharp() { throw new Error('sharp is not in the vlmargin GPU bundle (images are decoded by ffmpeg, which the bundle lacks too)'); };\n",
};
const pkgJson = (dir) => JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
// Node's lookup: the nearest node_modules/<name> walking up from the requiring package.
function resolvePkg(name, fromDir) {
  let d = fromDir;
  for (;;) {
    const c = path.join(d, 'node_modules', name);
    if (fs.existsSync(path.join(c, 'package.json'))) return c;
    const up = path.dirname(d);
    if (up === d || !up.startsWith(root)) return null;
    d = up;
  }
}
const seen = new Set();
const queue = [];
const top = pkgJson(root);
for (const n of [...Object.keys(top.dependencies ?? {}), 'mocha']) queue.push([n, root]);
while (queue.length) {
  const [name, from] = queue.shift();
  if (EXCLUDE.has(name)) continue;
  const dir = resolvePkg(name, from);
  if (!dir || seen.has(dir)) continue;
  seen.add(dir);
  const j = pkgJson(dir);
  for (const n of [...Object.keys(j.dependencies ?? {}), ...Object.keys(j.optionalDependencies ?? {})]) queue.push([n, dir]);
}
const JUNK = /(\.map|\.d\.ts|\.d\.mts|\.d\.cts|\.md|\.markdown|LICENSE-.*\.txt)$/i;
// tfjs packages ship a dozen browser bundles per package; Node loads only dist/*.node.js (main).
const TFJS_BROWSER = /^dist\/(?!.*\.node\.js$)(?!.*\.wasm$).*\.js$|^dist\/miniprogram\/|^src\//;
let files = 0;
let bytes = 0;
function copyTree(src, dst, rel, pkgName) {
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    const r = rel ? `${rel}/${ent.name}` : ent.name;
    const s = path.join(src, ent.name);
    if (ent.isDirectory()) {
      if (ent.name === 'node_modules') continue; // nested packages are copied as packages of their own
      if (['test', 'tests', '__tests__', 'docs', 'doc', 'coverage', 'example', 'examples', '.github'].includes(ent.name) && rel === '') continue;
      // transformers.js runs from src/ in Node; dist/ holds its browser bundles and ONNX wasm.
      if (pkgName === '@xenova/transformers' && r === 'dist') continue;
      if (pkgName === 'webgpu' && r.startsWith('dist/') && r !== 'dist/linux-x64' && rel === 'dist') continue;
      if (pkgName === 'webgpu' && (r === 'build' || r === 'third_party')) continue;
      copyTree(s, path.join(dst, ent.name), r, pkgName);
    } else if (ent.isFile() || ent.isSymbolicLink()) {
      if (JUNK.test(ent.name)) continue;
      if (pkgName.startsWith('@tensorflow/') && TFJS_BROWSER.test(r)) continue;
      fs.mkdirSync(dst, { recursive: true });
      fs.copyFileSync(s, path.join(dst, ent.name));
      files += 1;
      bytes += fs.statSync(s).size;
    }
  }
}
for (const dir of [...seen].sort()) {
  const rel = path.relative(path.join(root, 'node_modules'), dir);
  copyTree(dir, path.join(dest, rel), '', pkgJson(dir).name);
}
for (const [name, code] of Object.entries(STUBS)) {
  const d = path.join(dest, name);
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'package.json'), JSON.stringify({ name, version: '0.0.0-vlmargin-gpu-stub', main: 'index.js' }) + '\n');
  fs.writeFileSync(path.join(d, 'index.js'), code);
}
console.error(`pack.sh: node_modules: ${seen.size} packages, ${files} files, ${(bytes / 2 ** 20).toFixed(1)} MiB (+ ${Object.keys(STUBS).length} stubs)`);
EOF

# --- Vulkan loader and glvnd (the GPU host may have only the NVIDIA ICD) --------------------
APT_LISTS="$OUT/apt-lists"
mkdir -p "$APT_LISTS/partial"
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$APT_LISTS")
if apt-get "${o[@]}" update > "$OUT/apt-update.log" 2>&1; then
  # The loader, and the glvnd libraries NVIDIA's Vulkan driver links against (the device
  # machines' notes name these seven for headless Vulkan/EGL there).
  (cd "$B/debs" && apt-get "${o[@]}" download libvulkan1 libglvnd0 libglx0 libgl1 libegl1 libopengl0 libgles2 > "$OUT/apt-download.log" 2>&1) \
    || echo "pack.sh: warning: apt-get download of the Vulkan loader and glvnd failed (see $OUT/apt-download.log); the bundle has none" >&2
else
  echo "pack.sh: warning: apt-get update failed (see $OUT/apt-update.log); the bundle has no Vulkan loader" >&2
fi

# --- what went in ---------------------------------------------------------------------------
{
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "node $("$NODE_BIN" --version)"
  ls "$B/debs"
} > "$B/BUNDLE.txt"

# --- archive --------------------------------------------------------------------------------
pack() {
  rm -f "$OUT/vlmargin-gpu.tar.xz"
  tar -C "$STAGE" -cf - vlmargin-gpu | xz -T2 -9 > "$OUT/vlmargin-gpu.tar.xz"
  stat -c %s "$OUT/vlmargin-gpu.tar.xz"
}
SIZE=$(pack)
if [ -n "$FRAMES" ]; then
  cp -r "$FRAMES" "$B/frames"
  WITH=$(pack)
  if [ "$WITH" -gt "$LIMIT" ]; then
    echo "pack.sh: with the frame cache the bundle is $((WITH / 1048576)) MiB, over 64 MiB: left out" >&2
    rm -rf "$B/frames"
    SIZE=$(pack)
  else
    SIZE=$WITH
  fi
fi
echo "pack.sh: $OUT/vlmargin-gpu.tar.xz: $SIZE bytes ($(awk "BEGIN { printf \"%.1f\", $SIZE / 1048576 }") MiB); staged tree $(du -sh "$B" | cut -f1)"
if [ "$SIZE" -gt "$LIMIT" ]; then
  echo "pack.sh: the bundle is over 64 MiB" >&2
  exit 1
fi
