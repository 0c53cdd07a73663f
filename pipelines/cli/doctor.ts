/** `vlmargin doctor [--json]`: what this machine can run, and why not where it cannot. */
import type { Command } from 'commander';
import os from 'node:os';
import { tf } from '../../src/backend/tf.js';
import { BACKEND_NAMES, initBackend, parseThreads, probeWebGPU, webgpuSkipReason, type BackendName } from '../../src/backend/init.js';
import { ffmpegBinary, ffprobeBinary } from '../../src/video/binaries.js';
import { NATIVE_PACKAGE, nativePackageDir, readSetupStamp, type NativeSetupStamp } from '../../src/backend/native.js';
import { missingCudaLibraries, probeTensorflow, type ProbeResult } from '../setup/tensorflow.js';

export interface DoctorReport {
  node: string; platform: string; cpus: number; tfjs: string;
  backends: { name: BackendName; available: boolean; reason?: string; info?: Record<string, unknown> }[];
  chosen: BackendName; gpuAdapter: Record<string, unknown> | null;
  ffmpeg: { path: string; source: string; version: string } | { error: string };
  ffprobe: { path: string; source: string; version: string } | { error: string };
  /** The native engine: what setup recorded and what a child process found when it loaded it. */
  tensorflow: { setUp: false; hint: string } | {
    setUp: true; version?: string; library: NativeSetupStamp['wheel'] & { variant: string }; devices: ProbeResult['devices'];
    intraOpThreads: string; loads: boolean; error?: string; missingCudaLibraries: string[];
  };
}

/** The native engine's facts, from its setup stamp and a child-process probe (a broken addon cannot take doctor down). */
function tensorflowReport(threads?: number): DoctorReport['tensorflow'] {
  const dir = nativePackageDir();
  const stamp = dir ? readSetupStamp(dir) : null;
  if (!dir || !stamp) return { setUp: false, hint: 'run `vlmargin setup tensorflow` (CPU) or `vlmargin setup tensorflow --gpu` (NVIDIA, CUDA 12)' };
  const probe = probeTensorflow(dir, threads);
  const missing = stamp.variant === 'gpu' ? [...new Set([...missingCudaLibraries(dir), ...probe.missing])] : probe.missing;
  return {
    setUp: true, version: probe.tensorflow ?? stamp.tensorflow, library: { ...stamp.wheel, variant: stamp.variant },
    devices: probe.devices, intraOpThreads: probe.intraOpThreads, loads: probe.ok, error: probe.error, missingCudaLibraries: missing,
  };
}

/**
 * The tensorflow row from the child-process probe. TensorFlow writes lines to the process's
 * stderr while its library loads (absl's "All log messages before absl::InitializeLog()" and
 * the oneDNN notice), before any log level applies: TF_CPP_MIN_LOG_LEVEL=3 does not hide them.
 * Loaded only in the probe, whose stderr is captured, they stay out of doctor's output; a
 * failure to load is still reported, with the probe's error.
 */
function tensorflowRow(t: Extract<DoctorReport['tensorflow'], { setUp: true }>): DoctorReport['backends'][number] {
  if (!t.loads) return { name: 'tensorflow', available: false, reason: `${NATIVE_PACKAGE} did not load (rerun \`vlmargin setup tensorflow\`): ${t.error ?? 'no reason given'}` };
  return {
    name: 'tensorflow', available: true,
    info: { tensorflow: t.version, library: `${t.library.file} (${t.library.variant})`, gpu: t.devices.some((d) => d.type === 'GPU'), intraOpThreads: t.intraOpThreads },
  };
}

export async function doctor(opts: { threads?: number } = {}): Promise<DoctorReport> {
  const tensorflow = tensorflowReport(opts.threads);
  const backends: DoctorReport['backends'] = [];
  const webgpuSkip = webgpuSkipReason();
  for (const name of BACKEND_NAMES) {
    if (name === 'tensorflow' && tensorflow.setUp) {
      backends.push(tensorflowRow(tensorflow));
      continue;
    }
    if (name === 'webgpu' && webgpuSkip) {
      backends.push({ name, available: false, reason: webgpuSkip });
      continue;
    }
    try {
      const c = await initBackend({ prefer: name, threads: opts.threads });
      backends.push({ name, available: true, info: c.info });
    } catch (e) {
      backends.push({ name, available: false, reason: (e as Error).message.replace(/^initBackend: no backend could start \(\w+: /, '').replace(/\)$/, '') });
    }
  }
  // Auto's first choice, without loading the native engine into this process (tensorflowRow).
  const tfRow = backends.find((b) => b.name === 'tensorflow');
  const chosen = tensorflow.setUp && tfRow?.available ? { name: 'tensorflow' as const }
    : await initBackend({ prefer: 'auto', threads: opts.threads, passOver: tensorflow.setUp ? { tensorflow: tfRow?.reason ?? 'did not load' } : undefined });
  const probe = webgpuSkip ? { adapter: null } : await probeWebGPU();
  const bin = (f: () => { path: string; source: string; version: string }) => {
    try { return f(); } catch (e) { return { error: (e as Error).message }; }
  };
  return {
    node: process.version, platform: `${os.platform()} ${os.arch()}`, cpus: os.cpus().length, tfjs: tf.version_core,
    backends, chosen: chosen.name, gpuAdapter: probe.adapter,
    ffmpeg: bin(ffmpegBinary), ffprobe: bin(ffprobeBinary), tensorflow,
  };
}

export function register(program: Command): void {
  program.command('doctor')
    .description('report Node/tfjs versions, which backends can run and why not, GPU adapter, ffmpeg/ffprobe')
    .option('--json', 'print JSON')
    .option('--threads <n>', 'TensorFlow intra-op threads to report under (default: one per CPU)', (v) => parseThreads(v))
    .action(async (o: { json?: boolean; threads?: number }) => {
      const r = await doctor({ threads: o.threads });
      if (o.json) { console.log(JSON.stringify(r, null, 2)); return; }
      console.log(`node ${r.node} on ${r.platform}, ${r.cpus} cpus; tfjs-core ${r.tfjs}`);
      for (const b of r.backends) {
        console.log(`  ${b.available ? 'ok ' : 'no '} ${b.name.padEnd(10)} ${b.available ? JSON.stringify(b.info ?? {}) : b.reason}`);
      }
      const t = r.tensorflow;
      if (!t.setUp) console.log(`tensorflow: not set up; ${t.hint}`);
      else {
        console.log(`tensorflow: ${t.version} from ${t.library.file} (${t.library.variant}, ${t.library.source === 'pip' ? 'pip download' : '--wheel'}), ${t.loads ? 'loads' : `does not load: ${t.error}`}`);
        for (const d of t.devices) console.log(`  device ${d.type} ${d.name}${d.memoryMiB !== undefined ? `, ${d.memoryMiB} MiB` : ''}`);
        console.log(`  intra-op threads: ${t.intraOpThreads} (--threads N or the config key threads)`);
        if (t.library.variant === 'gpu') console.log(`  CUDA libraries: ${t.missingCudaLibraries.length ? `missing ${t.missingCudaLibraries.join(', ')}` : 'all present'}`);
      }
      console.log(`auto chooses: ${r.chosen}`);
      console.log(`gpu adapter: ${r.gpuAdapter ? JSON.stringify(r.gpuAdapter) : 'none'}`);
      for (const k of ['ffmpeg', 'ffprobe'] as const) {
        const v = r[k];
        console.log(`${k}: ${'error' in v ? v.error : `${v.path} (${v.source}) ${v.version}`}`);
      }
    });
}
