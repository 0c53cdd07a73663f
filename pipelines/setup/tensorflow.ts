/**
 * Builds the native TensorFlow engine: `@tensorflow/tfjs-node-gpu`'s addon compiled with
 * node-gyp against the C library inside an official TensorFlow wheel, then loaded in a child
 * process to prove it. The package's own install script is never run (it downloads a 2.9.1
 * library from a host that is often unreachable and, with `download`, deletes deps/).
 *
 * What the binding needs from the wheel (measured on tensorflow-cpu 2.21.0, docs/DESIGN.md §3):
 * `tensorflow/libtensorflow_cc.so.2` exports the C API (TF_ and TFE_ functions), `libtensorflow_framework.so.2`
 * the rest, and 14 headers under `tensorflow/include`. binding.gyp links `-ltensorflow
 * -ltensorflow_framework` with the rpath `$ORIGIN/../../deps/lib`, so deps/lib gets the two
 * libraries under their sonames plus the two unversioned links the linker looks for.
 *
 * With `gpu`, the `tensorflow` wheel (CUDA kernels included) and NVIDIA's CUDA 12 pip wheels
 * that its `and-cuda` extra names go to deps/nvidia/<name>/lib (the wheel layout, so TF's own
 * `$ORIGIN/../nvidia/...` run paths resolve too), and the addon links each library TF opens by
 * soname, so the loader finds them without LD_LIBRARY_PATH.
 *
 * @example
 * const r = await setupTensorflow({ projectRoot: '.', log: console.log });
 * console.log(r.status, r.probe.tensorflow); // 'built', '2.21.0'
 */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { NATIVE_PACKAGE, SETUP_STAMP, readSetupStamp, type NativeSetupStamp } from '../../src/backend/native.js';

/** The TensorFlow release this setup is written and checked against. */
export const TF_VERSION = '2.21.0';

/** The headers tfjs-node 4.22's binding includes, directly or through c_api.h, under the wheel's tensorflow/include. */
export const TF_HEADERS = [
  'tensorflow/c/c_api.h', 'tensorflow/c/c_api_macros.h', 'tensorflow/c/tf_attrtype.h', 'tensorflow/c/tf_buffer.h',
  'tensorflow/c/tf_datatype.h', 'tensorflow/c/tf_status.h', 'tensorflow/c/tf_tensor.h', 'tensorflow/c/tf_tstring.h',
  'tensorflow/c/eager/c_api.h', 'tensorflow/core/platform/ctstring.h', 'tensorflow/core/platform/ctstring_internal.h',
  'tsl/platform/ctstring.h', 'tsl/platform/ctstring_internal.h', 'xla/tsl/c/tsl_status.h',
] as const;

/** The two libraries, their place in the wheel, and the unversioned name binding.gyp links against. */
export const TF_LIBRARIES = [
  { soname: 'libtensorflow_cc.so.2', linkName: 'libtensorflow.so' },
  { soname: 'libtensorflow_framework.so.2', linkName: 'libtensorflow_framework.so' },
] as const;

/**
 * The CUDA 12 libraries TensorFlow opens by soname, by the directory their NVIDIA wheel puts
 * them in (nvidia/<dir>/lib), with the wheel's project name.
 */
export const CUDA_LIBRARIES: { wheel: string; dir: string; sonames: string[] }[] = [
  { wheel: 'nvidia-cuda-runtime-cu12', dir: 'cuda_runtime', sonames: ['libcudart.so.12'] },
  { wheel: 'nvidia-cublas-cu12', dir: 'cublas', sonames: ['libcublas.so.12', 'libcublasLt.so.12'] },
  { wheel: 'nvidia-cudnn-cu12', dir: 'cudnn', sonames: ['libcudnn.so.9'] },
  { wheel: 'nvidia-cufft-cu12', dir: 'cufft', sonames: ['libcufft.so.11'] },
  { wheel: 'nvidia-cusolver-cu12', dir: 'cusolver', sonames: ['libcusolver.so.11'] },
  { wheel: 'nvidia-cusparse-cu12', dir: 'cusparse', sonames: ['libcusparse.so.12'] },
  { wheel: 'nvidia-curand-cu12', dir: 'curand', sonames: ['libcurand.so.10'] },
  { wheel: 'nvidia-nvjitlink-cu12', dir: 'nvjitlink', sonames: ['libnvJitLink.so.12'] },
  { wheel: 'nvidia-cuda-nvrtc-cu12', dir: 'cuda_nvrtc', sonames: ['libnvrtc.so.12'] },
];

/** A failure the user can act on; its message is one line. */
export class SetupError extends Error {}

export interface SetupOptions {
  /** The vlmargin checkout or install (the directory with package.json and node_modules). */
  projectRoot: string;
  /** A TensorFlow wheel file; without it the wheel is fetched with `pip download`. */
  wheel?: string;
  gpu?: boolean;
  /** Check the prerequisites and print the plan; change nothing. */
  dryRun?: boolean;
  /** Where `pip download` puts wheels (default: ~/.cache/vlmargin/wheels). */
  cacheDir?: string;
  log?: (line: string) => void;
}

export interface ProbeResult {
  ok: boolean;
  tensorflow?: string;
  gpu?: boolean;
  devices: { type: 'CPU' | 'GPU'; name: string; memoryMiB?: number }[];
  intraOpThreads: string;
  /** Libraries TF reported it could not open (GPU variant). */
  missing: string[];
  error?: string;
  ms?: number;
}

export interface SetupReport {
  status: 'built' | 'unchanged' | 'dry-run';
  packageDir: string;
  stamp?: NativeSetupStamp;
  probe?: ProbeResult;
  steps: string[];
}

type Run = { status: number | null; signal: string | null; stdout: string; stderr: string; error?: Error };

function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): Run {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  return { status: r.status, signal: r.signal, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), error: r.error };
}

function onPath(cmd: string, args = ['--version']): boolean {
  const r = run(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return !r.error && r.status === 0;
}

const MiB = (n: number): string => `${(n / 2 ** 20).toFixed(0)} MiB`;

function diskBytes(p: string): number {
  if (!existsSync(p)) return 0;
  const st = lstatSync(p);
  if (st.isSymbolicLink()) return 0;
  if (!st.isDirectory()) return st.size;
  return readdirSync(p).reduce((n, f) => n + diskBytes(path.join(p, f)), 0);
}

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The project's copy of npm's node-gyp (npm ships one), or a node-gyp on the PATH. */
function findNodeGyp(): { cmd: string; args: string[] } | null {
  const candidates: string[] = [];
  if (process.env.npm_execpath) candidates.push(path.resolve(path.dirname(process.env.npm_execpath), '..'));
  const which = run('sh', ['-c', 'command -v npm']);
  if (which.status === 0 && which.stdout.trim()) {
    try { candidates.push(path.resolve(path.dirname(realpathSync(which.stdout.trim())), '..')); } catch { /* a dangling npm link */ }
  }
  candidates.push(path.resolve(path.dirname(process.execPath), '../lib/node_modules/npm'));
  for (const npmDir of candidates) {
    const js = path.join(npmDir, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    if (existsSync(js)) return { cmd: process.execPath, args: [js] };
  }
  return onPath('node-gyp') ? { cmd: 'node-gyp', args: [] } : null;
}

/** The directory holding include/node/node_api.h for this Node, or null (node-gyp then downloads headers). */
function nodeHeadersDir(): string | null {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : null;
}

function findPip(): string[] | null {
  for (const py of ['python3', 'python']) if (onPath(py, ['-m', 'pip', '--version'])) return [py, '-m', 'pip'];
  for (const pip of ['pip3', 'pip']) if (onPath(pip)) return [pip];
  return null;
}

/** A Python able to run zipfile (node-gyp needs one anyway). */
function findPython(): string | null {
  for (const py of ['python3', 'python']) if (onPath(py, ['-c', 'import sys, zipfile; sys.exit(sys.version_info[0] != 3)'])) return py;
  return null;
}

/** The N-API version node-pre-gyp will look for (the highest the package lists that this Node has) and the addon's path. */
function addonTarget(pkgDir: string): { napi: number; modulePath: string } {
  const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { binary: { module_path: string; napi_versions: number[] } };
  const have = Number(process.versions.napi);
  const napi = Math.max(...pkg.binary.napi_versions.filter((v) => v <= have));
  if (!Number.isFinite(napi)) throw new SetupError(`${NATIVE_PACKAGE} supports N-API ${pkg.binary.napi_versions.join(', ')}; this Node has N-API ${have}`);
  return { napi, modulePath: path.resolve(pkgDir, pkg.binary.module_path.replace('{napi_build_version}', String(napi))) };
}

// Extracts named members of a wheel; exits 3 naming what a TensorFlow wheel should have held.
const EXTRACT_PY = `
import json, os, shutil, sys, zipfile
wheel, plan = sys.argv[1], json.loads(sys.stdin.read())
try:
    z = zipfile.ZipFile(wheel)
except (zipfile.BadZipFile, OSError) as e:
    print(f"{wheel} is not a wheel (zip): {e}", file=sys.stderr); sys.exit(3)
names = set(z.namelist())
if plan.get("prefix_dirs"):
    members = [(n, os.path.join(plan["dest"], n)) for n in sorted(names)
               if any(n.startswith(p) for p in plan["prefix_dirs"]) and ".so" in os.path.basename(n)]
else:
    members = [(src, os.path.join(plan["dest"], dst)) for src, dst in plan["members"]]
    lacking = [src for src, _ in members if src not in names]
    if lacking:
        print(f"{wheel} is not a TensorFlow wheel: it lacks {', '.join(lacking[:3])}", file=sys.stderr); sys.exit(3)
meta = [n for n in names if n.endswith(".dist-info/METADATA")]
for src, dst in members:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with z.open(src) as s, open(dst, "wb") as d:
        shutil.copyfileobj(s, d, 1 << 20)
print(json.dumps({"extracted": len(members), "metadata": z.read(meta[0]).decode() if meta else ""}))
`;

function extract(python: string, wheel: string, plan: object): { extracted: number; metadata: string } {
  const r = run(python, ['-c', EXTRACT_PY, wheel], { input: JSON.stringify(plan) });
  if (r.error) throw new SetupError(`could not run ${python} to extract ${wheel}: ${r.error.message}`);
  if (r.status !== 0) throw new SetupError(r.stderr.trim().split('\n').pop() ?? `extracting ${wheel} failed`);
  return JSON.parse(r.stdout) as { extracted: number; metadata: string };
}

/** `Version:` and the `and-cuda` requirements from a wheel's METADATA. */
export function parseWheelMetadata(metadata: string): { name: string; version: string; andCuda: string[] } {
  const field = (k: string) => metadata.match(new RegExp(`^${k}: *(.+)$`, 'm'))?.[1].trim() ?? '';
  const andCuda = [...metadata.matchAll(/^Requires-Dist: *([^;\n]+);[^\n]*extra *== *["']and-cuda["']/gm)].map((m) => m[1].replace(/\s+/g, '').replace(/[()]/g, ''));
  return { name: field('Name'), version: field('Version'), andCuda };
}

/** A wheel file name's project and version (PEP 427), or null for a name that is not a wheel's. */
export function parseWheelName(file: string): { project: string; version: string } | null {
  const m = path.basename(file).match(/^([A-Za-z0-9_.]+)-([0-9][^-]*)-.+\.whl$/);
  return m ? { project: m[1].toLowerCase().replace(/[-.]/g, '_'), version: m[2] } : null;
}

function pipDownload(pip: string[], requirements: string[], dest: string, log: (s: string) => void): void {
  mkdirSync(dest, { recursive: true });
  log(`  pip download ${requirements.join(' ')} --no-deps -d ${dest}`);
  const r = run(pip[0], [...pip.slice(1), 'download', '--no-deps', '--only-binary=:all:', '-d', dest, ...requirements], { stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) {
    const last = (r.stderr || r.stdout).trim().split('\n').filter(Boolean).pop() ?? 'no output';
    throw new SetupError(`pip download ${requirements.join(' ')} failed: ${last} (pass --wheel FILE instead)`);
  }
}

function findDownloaded(dest: string, project: string, version?: string): string | null {
  const want = project.toLowerCase().replace(/[-.]/g, '_');
  const hits = readdirSync(dest).filter((f) => {
    const w = parseWheelName(f);
    return w && w.project === want && (!version || w.version === version);
  });
  return hits.length ? path.join(dest, hits.sort().pop() as string) : null;
}

const PROBE_JS = `
const t0 = Date.now();
const tf = require(process.argv[1]);
const b = tf.backend();
const y = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[1, 2], [3, 4]])).dataSync();
console.log(JSON.stringify({ backend: tf.getBackend(), tensorflow: b.binding.TF_Version, gpu: b.isUsingGpuDevice === true, product: Array.from(y), ms: Date.now() - t0 }));
`;

/**
 * The GPUs TensorFlow created devices on and the libraries it could not open, from its log
 * (TF_CPP_MIN_LOG_LEVEL=0). "Cannot dlopen some GPU libraries" without a named library is
 * reported as that sentence.
 *
 * @example parseTfLog("… Created device /job:localhost/replica:0/task:0/device:GPU:0 with 79 MB memory:  -> device: 0, name: X, pci bus id: …")
 * // { gpus: [{ type: 'GPU', name: 'X', memoryMiB: 79 }], missing: [] }
 */
export function parseTfLog(stderr: string): { gpus: ProbeResult['devices']; missing: string[] } {
  const gpus: ProbeResult['devices'] = [];
  for (const m of stderr.matchAll(/Created device \S*GPU:\d+ with (\d+) MB memory:\s*-> device: \d+, name: ([^,\n]+)/g)) {
    gpus.push({ type: 'GPU', name: m[2].trim(), memoryMiB: Number(m[1]) });
  }
  const missing = [...new Set([...stderr.matchAll(/Could not load dynamic library '([^']+)'/g)].map((m) => m[1]))];
  if (!missing.length && /Cannot dlopen some GPU libraries/.test(stderr)) missing.push('some GPU libraries (TensorFlow named none)');
  return { gpus, missing };
}

/**
 * The line that says why the probe failed, from its stderr: the thrown error's first line
 * ("Error: Cannot find module …", "Error [ERR_DLOPEN_FAILED]: …"); else the last line that is
 * neither TensorFlow's log nor Node's closing "Node.js vN" line.
 *
 * @example probeFailure("…\nError: Cannot find module 'x'\n    at …\n\nNode.js v20.20.2\n") // "Error: Cannot find module 'x'"
 */
export function probeFailure(stderr: string): string | undefined {
  const lines = stderr.split('\n').map((l) => l.trimEnd());
  const thrown = lines.find((l) => /^(?:[A-Z]\w*)?Error(?: \[\w+\])?: /.test(l));
  if (thrown) return thrown;
  return lines.filter((l) => l.trim() !== '' && !/^[IWEF]\d{4} /.test(l) && !/^Node\.js v\d/.test(l) && !/absl::InitializeLog/.test(l)).at(-1);
}

/**
 * Loads the package in a child process (a broken library or addon crashes the child, not the
 * caller), multiplies a 2×2 matrix and reads back what TensorFlow logged about its devices.
 */
export function probeTensorflow(pkgDir: string, threads?: number): ProbeResult {
  const env: NodeJS.ProcessEnv = { ...process.env, TF_CPP_MIN_LOG_LEVEL: '0' };
  if (threads !== undefined) env.TF_NUM_INTRAOP_THREADS = String(threads);
  const intraOpThreads = env.TF_NUM_INTRAOP_THREADS ?? `default (${os.availableParallelism()})`;
  const r = run(process.execPath, ['-e', PROBE_JS, pkgDir], { env, timeout: 180_000, stdio: ['ignore', 'pipe', 'pipe'] });
  const { gpus, missing } = parseTfLog(r.stderr);
  const devices: ProbeResult['devices'] = [{ type: 'CPU', name: os.cpus()[0]?.model?.trim() || os.arch() }, ...gpus];
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let out: { backend?: string; tensorflow?: string; gpu?: boolean; product?: number[]; ms?: number } = {};
  try { out = JSON.parse(line); } catch { /* reported below */ }
  const want = [7, 10, 15, 22];
  if (r.status !== 0 || !out.product) {
    const err = (r.error?.message ?? probeFailure(r.stderr)) || `exit ${r.status}, signal ${r.signal ?? 'none'}`;
    return { ok: false, devices, intraOpThreads, missing, error: err };
  }
  if (out.backend !== 'tensorflow' || out.product.some((v, i) => v !== want[i])) {
    return { ok: false, devices, intraOpThreads, missing, error: `the probe ran on ${out.backend} and multiplied [[1,2],[3,4]]² to [${out.product}], not [${want}]` };
  }
  return { ok: true, tensorflow: out.tensorflow, gpu: out.gpu, devices, intraOpThreads, missing, ms: out.ms };
}

/** Sonames from CUDA_LIBRARIES absent from deps/nvidia in `pkgDir`. */
export function missingCudaLibraries(pkgDir: string): string[] {
  const out: string[] = [];
  for (const c of CUDA_LIBRARIES) {
    for (const so of c.sonames) if (!existsSync(path.join(pkgDir, 'deps', 'nvidia', c.dir, 'lib', so))) out.push(so);
  }
  return out;
}

/** Makes sure the package and its runtime dependencies are in node_modules without running its install script. */
function ensurePackage(root: string, log: (s: string) => void, dryRun: boolean): string {
  const pkgDir = path.join(root, 'node_modules', ...NATIVE_PACKAGE.split('/'));
  const req = createRequire(path.join(root, 'package.json'));
  const present = (m: string) => { try { req.resolve(m, { paths: [pkgDir] }); return true; } catch { return false; } };
  const ok = existsSync(path.join(pkgDir, 'package.json')) && ['@mapbox/node-pre-gyp', 'google-protobuf'].every(present);
  if (ok) return pkgDir;
  // npm leaves a failed optional dependency out; this puts it back from the lockfile with its
  // install script skipped. --no-save keeps package.json and the lockfile as they are.
  const args = ['install', '--no-save', '--ignore-scripts', '--no-audit', '--no-fund'];
  log(`  npm ${args.join(' ')}  (puts ${NATIVE_PACKAGE} in node_modules without its download script)`);
  if (dryRun) return pkgDir;
  const npm = process.env.npm_execpath && existsSync(process.env.npm_execpath)
    ? { cmd: process.execPath, args: [process.env.npm_execpath] } : { cmd: 'npm', args: [] };
  const r = run(npm.cmd, [...npm.args, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error || r.status !== 0 || !existsSync(path.join(pkgDir, 'package.json'))) {
    const why = r.error?.message ?? (r.stderr.trim().split('\n').filter(Boolean).pop() || `exit ${r.status}`);
    throw new SetupError(`npm could not install ${NATIVE_PACKAGE}: ${why}`);
  }
  return pkgDir;
}

/** Runs the whole setup; throws SetupError with one line on any failure. */
export async function setupTensorflow(opts: SetupOptions): Promise<SetupReport> {
  const steps: string[] = [];
  const log = (s: string) => { steps.push(s); opts.log?.(s); };
  const root = path.resolve(opts.projectRoot);
  const variant: 'cpu' | 'gpu' = opts.gpu ? 'gpu' : 'cpu';
  const dryRun = opts.dryRun === true;
  const cacheDir = opts.cacheDir ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'vlmargin', 'wheels');

  if (os.platform() !== 'linux' || !['x64', 'arm64'].includes(os.arch())) {
    throw new SetupError(`setup tensorflow builds against the Linux wheels (x86-64 or aarch64); this is ${os.platform()} ${os.arch()}`);
  }
  if (!existsSync(path.join(root, 'package.json'))) throw new SetupError(`${root} has no package.json: run setup from the vlmargin directory`);

  // Prerequisites, each with the one line that says what to do.
  const python = findPython();
  if (!python) throw new SetupError('no python3 on the PATH (node-gyp and the wheel extraction need it): install python3');
  const cxx = process.env.CXX ?? ['c++', 'g++', 'clang++'].find((c) => onPath(c));
  if (!cxx || !onPath(cxx)) throw new SetupError('no C++ compiler (c++, g++ or clang++) on the PATH: install one (Debian/Ubuntu: apt-get install g++ make) or set CXX');
  if (!onPath('make')) throw new SetupError('no make on the PATH: install it (Debian/Ubuntu: apt-get install make)');
  const gyp = findNodeGyp();
  if (!gyp) throw new SetupError('no node-gyp: npm ships one; install npm, or `npm install -g node-gyp`');
  const nodedir = nodeHeadersDir();
  let wheel = opts.wheel ? path.resolve(opts.wheel) : undefined;
  if (wheel) {
    if (!existsSync(wheel) || !statSync(wheel).isFile()) throw new SetupError(`--wheel ${opts.wheel}: no such file`);
    const w = parseWheelName(wheel);
    if (!w || !/^tensorflow(_cpu)?$/.test(w.project)) {
      throw new SetupError(`--wheel ${opts.wheel}: expected a TensorFlow wheel (tensorflow-<version>-…whl or tensorflow_cpu-<version>-…whl)`);
    }
    if (opts.gpu && w.project !== 'tensorflow') throw new SetupError(`--wheel ${opts.wheel}: --gpu needs the \`tensorflow\` wheel (it holds the CUDA kernels), not ${w.project}`);
  }
  const pip = wheel ? null : findPip();
  const project = opts.gpu ? 'tensorflow' : 'tensorflow-cpu';
  log(`setup tensorflow (${variant}): python ${python}, compiler ${cxx}, node-gyp ${gyp.args[0] ?? gyp.cmd}, Node headers ${nodedir ? path.join(nodedir, 'include', 'node') : 'downloaded by node-gyp'}`);

  const pkgDir = ensurePackage(root, log, dryRun);

  // Already set up from the same wheel and variant for this Node: prove it loads and stop.
  const stamp = existsSync(pkgDir) ? readSetupStamp(pkgDir) : null;
  const sameBuild = stamp && stamp.variant === variant && stamp.node === process.versions.node && existsSync(path.join(pkgDir, stamp.addon));
  if (sameBuild && (!wheel || (statSync(wheel).size === stamp.wheel.bytes && (await sha256(wheel)) === stamp.wheel.sha256))) {
    const probe = dryRun ? undefined : probeTensorflow(pkgDir);
    if (!probe || probe.ok) {
      log(`  already set up from ${stamp.wheel.file} (TensorFlow ${stamp.tensorflow}, ${variant}); nothing changed`);
      if (probe) log(`  probe: loaded in a child process in ${probe.ms} ms; devices ${probe.devices.map((d) => d.type === 'GPU' ? `GPU ${d.name} ${d.memoryMiB} MiB` : `CPU ${d.name}`).join(', ')}`);
      log(`  disk: ${MiB(stamp.diskBytes)} under ${path.relative(root, pkgDir)}`);
      return { status: dryRun ? 'dry-run' : 'unchanged', packageDir: pkgDir, stamp, probe, steps };
    }
    log(`  the existing build does not load (${probe.error}); rebuilding`);
  }

  if (!wheel && !pip) {
    throw new SetupError(`no --wheel given and no pip on the PATH to fetch ${project}==${TF_VERSION}: pass --wheel FILE (a ${project} ${TF_VERSION} manylinux wheel)`);
  }
  if (dryRun) {
    log(wheel ? `  would use ${wheel}` : `  would run: ${pip?.join(' ')} download ${project}==${TF_VERSION} --no-deps -d ${cacheDir}`);
    if (opts.gpu) log(`  would download the and-cuda wheels (${CUDA_LIBRARIES.map((c) => c.wheel).join(', ')}) into ${cacheDir}`);
    log(`  would extract ${TF_HEADERS.length} headers and ${TF_LIBRARIES.map((l) => l.soname).join(', ')} into ${path.join(pkgDir, 'deps')}`);
    log(`  would build the addon with node-gyp (log ${path.join(pkgDir, 'vlmargin-build.log')}) and load it in a child process`);
    return { status: 'dry-run', packageDir: pkgDir, steps };
  }

  let source: 'pip' | 'file' = 'file';
  if (!wheel) {
    pipDownload(pip as string[], [`${project}==${TF_VERSION}`], cacheDir, log);
    wheel = findDownloaded(cacheDir, project, TF_VERSION) ?? undefined;
    if (!wheel) throw new SetupError(`pip download reported success but no ${project} ${TF_VERSION} wheel is in ${cacheDir}`);
    source = 'pip';
  }
  const wheelBytes = statSync(wheel).size;
  log(`  wheel: ${wheel} (${MiB(wheelBytes)}, ${source === 'pip' ? 'pip download' : '--wheel'})`);

  // Extract into a fresh deps.new, then swap it in: a failed extraction leaves the old deps/.
  const deps = path.join(pkgDir, 'deps');
  const staging = path.join(pkgDir, 'deps.new');
  rmSync(staging, { recursive: true, force: true });
  const t0 = Date.now();
  const members: [string, string][] = [
    ...TF_HEADERS.map((h): [string, string] => [`tensorflow/include/${h}`, `include/${h}`]),
    ...TF_LIBRARIES.map((l): [string, string] => [`tensorflow/${l.soname}`, `lib/${l.soname}`]),
  ];
  let ex: { extracted: number; metadata: string };
  try {
    ex = extract(python, wheel, { dest: staging, members });
  } finally {
    if (!existsSync(path.join(staging, 'lib', TF_LIBRARIES[0].soname))) rmSync(staging, { recursive: true, force: true });
  }
  const meta = parseWheelMetadata(ex.metadata);
  log(`  extracted ${TF_HEADERS.length} headers and ${TF_LIBRARIES.length} libraries of ${meta.name || 'TensorFlow'} ${meta.version} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  for (const l of TF_LIBRARIES) symlinkSync(l.soname, path.join(staging, 'lib', l.linkName));

  let cuda: NativeSetupStamp['cuda'];
  if (opts.gpu) cuda = fetchCuda(meta.andCuda, pip, python, cacheDir, staging, log);

  if (onPath('strip')) {
    const before = diskBytes(path.join(staging, 'lib'));
    for (const l of TF_LIBRARIES) {
      const r = run('strip', ['--strip-unneeded', path.join(staging, 'lib', l.soname)]);
      if (r.status !== 0) log(`  strip ${l.soname} failed (kept unstripped): ${r.stderr.trim().split('\n')[0]}`);
    }
    log(`  strip --strip-unneeded: ${MiB(before)} → ${MiB(diskBytes(path.join(staging, 'lib')))}`);
  } else {
    log('  no strip on the PATH: libraries kept with their symbol tables');
  }
  rmSync(deps, { recursive: true, force: true });
  renameSync(staging, deps);

  // Build the addon with node-gyp, as node-pre-gyp would, minus the download.
  const { napi, modulePath } = addonTarget(pkgDir);
  const logFile = path.join(pkgDir, 'vlmargin-build.log');
  const gypArgs = [...gyp.args, 'rebuild', `--napi_build_version=${napi}`, '--module_name=tfjs_binding', `--module_path=${modulePath}`,
    `--jobs=${Math.max(1, os.availableParallelism())}`, ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
  const env: NodeJS.ProcessEnv = { ...process.env, CXX: cxx };
  if (cuda) {
    // `\$$ORIGIN`: make turns $$ into $, and the backslash keeps the shell from expanding it.
    const rpaths = cuda.dirs.map((d) => `-Wl,-rpath,\\$$ORIGIN/${path.relative(path.dirname(modulePath), path.join(pkgDir, d))}`);
    const links = cuda.dirs.flatMap((d) => [`-L${path.join(pkgDir, d)}`]);
    env.LDFLAGS = [process.env.LDFLAGS ?? '', ...rpaths, ...links, '-Wl,--no-as-needed', ...cuda.libraries.map((so) => `-l:${so}`)].join(' ').trim();
  }
  const t1 = Date.now();
  const b = run(gyp.cmd, gypArgs, { cwd: pkgDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  writeFileSync(logFile, `$ ${gyp.cmd} ${gypArgs.join(' ')}\n${env.LDFLAGS ? `LDFLAGS=${env.LDFLAGS}\n` : ''}${b.stdout}\n${b.stderr}`);
  const addon = path.join(modulePath, 'tfjs_binding.node');
  if (b.error || b.status !== 0 || !existsSync(addon)) {
    throw new SetupError(`the addon build failed (node-gyp exit ${b.status ?? b.error?.message}); log: ${logFile}`);
  }
  log(`  built ${path.relative(pkgDir, addon)} with node-gyp in ${((Date.now() - t1) / 1000).toFixed(1)} s (N-API ${napi}; log ${logFile})`);

  const probe = probeTensorflow(pkgDir);
  if (!probe.ok) {
    throw new SetupError(`the built engine does not load in a child process: ${probe.error}${probe.missing.length ? ` (missing: ${probe.missing.join(', ')})` : ''}`);
  }
  const devs = probe.devices.map((d) => d.type === 'GPU' ? `GPU ${d.name} ${d.memoryMiB} MiB` : `CPU ${d.name}`).join(', ');
  log(`  probe: TensorFlow ${probe.tensorflow} loaded in a child process in ${probe.ms} ms, matMul correct; devices ${devs}`);
  if (opts.gpu && !probe.gpu) log(`  note: TensorFlow sees no GPU here${probe.missing.length ? ` (could not open ${probe.missing.join(', ')})` : ''}; it runs on the CPU`);

  const disk = ['deps', 'lib', 'build'].reduce((n, d) => n + diskBytes(path.join(pkgDir, d)), 0);
  const newStamp: NativeSetupStamp = {
    tensorflow: probe.tensorflow ?? meta.version, variant,
    wheel: { file: path.basename(wheel), sha256: await sha256(wheel), bytes: wheelBytes, source },
    addon: path.relative(pkgDir, addon), node: process.versions.node, napi, builtAt: new Date().toISOString(), cuda, diskBytes: disk,
  };
  writeFileSync(path.join(pkgDir, SETUP_STAMP), JSON.stringify(newStamp, null, 2) + '\n');
  log(`  disk: ${MiB(disk)} under ${path.relative(root, pkgDir)} (deps/, lib/, build/)${source === 'pip' ? `; the wheel stays in ${cacheDir}` : ''}`);
  log(`  --backend auto now picks tensorflow; \`vlmargin doctor\` shows it`);
  return { status: 'built', packageDir: pkgDir, stamp: newStamp, probe, steps };
}

/** Downloads the and-cuda wheels TF names and extracts their libraries under staging/nvidia. */
function fetchCuda(andCuda: string[], pip: string[] | null, python: string, cacheDir: string, staging: string, log: (s: string) => void): NonNullable<NativeSetupStamp['cuda']> {
  const wanted = new Set(CUDA_LIBRARIES.map((c) => c.wheel));
  const reqs = andCuda.filter((r) => wanted.has(r.split(/[=<>!~]/)[0].toLowerCase()));
  const named = new Set(reqs.map((r) => r.split(/[=<>!~]/)[0].toLowerCase()));
  const unnamed = [...wanted].filter((w) => !named.has(w));
  if (unnamed.length) log(`  the wheel's and-cuda extra does not name ${unnamed.join(', ')}; fetching the newest cu12 release of each`);
  const all = [...reqs, ...unnamed];
  if (!pip) throw new SetupError(`--gpu needs pip on the PATH to fetch NVIDIA's CUDA 12 wheels (${all.join(' ')})`);
  const dest = path.join(cacheDir, 'cuda12');
  pipDownload(pip, all, dest, log);
  for (const c of CUDA_LIBRARIES) {
    const w = findDownloaded(dest, c.wheel);
    if (!w) throw new SetupError(`pip download did not leave a ${c.wheel} wheel in ${dest}`);
    extract(python, w, { dest: staging, prefix_dirs: [`nvidia/${c.dir}/lib/`] });
  }
  const libraries = CUDA_LIBRARIES.flatMap((c) => c.sonames);
  const lacking = CUDA_LIBRARIES.flatMap((c) => c.sonames.filter((so) => !existsSync(path.join(staging, 'nvidia', c.dir, 'lib', so))));
  if (lacking.length) throw new SetupError(`the CUDA wheels did not hold ${lacking.join(', ')} (looked under ${path.join(staging, 'nvidia')})`);
  log(`  extracted the CUDA 12 libraries of ${CUDA_LIBRARIES.length} NVIDIA wheels (${MiB(diskBytes(path.join(staging, 'nvidia')))})`);
  return { dirs: CUDA_LIBRARIES.map((c) => path.join('deps', 'nvidia', c.dir, 'lib')), libraries };
}
