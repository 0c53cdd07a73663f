/** `vlmargin doctor [--json]`: what this machine can run, and why not where it cannot. */
import type { Command } from 'commander';
import os from 'node:os';
import { tf } from '../../src/backend/tf.js';
import { BACKEND_NAMES, initBackend, probeWebGPU, type BackendName } from '../../src/backend/init.js';
import { ffmpegBinary, ffprobeBinary } from '../../src/video/binaries.js';

export interface DoctorReport {
  node: string; platform: string; cpus: number; tfjs: string;
  backends: { name: BackendName; available: boolean; reason?: string; info?: Record<string, unknown> }[];
  chosen: BackendName; gpuAdapter: Record<string, unknown> | null;
  ffmpeg: { path: string; source: string; version: string } | { error: string };
  ffprobe: { path: string; source: string; version: string } | { error: string };
}

export async function doctor(): Promise<DoctorReport> {
  const backends: DoctorReport['backends'] = [];
  for (const name of BACKEND_NAMES) {
    try {
      const c = await initBackend({ prefer: name });
      backends.push({ name, available: true, info: c.info });
    } catch (e) {
      backends.push({ name, available: false, reason: (e as Error).message.replace(/^initBackend: no backend could start \(\w+: /, '').replace(/\)$/, '') });
    }
  }
  const chosen = await initBackend({ prefer: 'auto' });
  const probe = await probeWebGPU();
  const bin = (f: () => { path: string; source: string; version: string }) => {
    try { return f(); } catch (e) { return { error: (e as Error).message }; }
  };
  return {
    node: process.version, platform: `${os.platform()} ${os.arch()}`, cpus: os.cpus().length, tfjs: tf.version_core,
    backends, chosen: chosen.name, gpuAdapter: probe.adapter,
    ffmpeg: bin(ffmpegBinary), ffprobe: bin(ffprobeBinary),
  };
}

export function register(program: Command): void {
  program.command('doctor')
    .description('report Node/tfjs versions, which backends can run and why not, GPU adapter, ffmpeg/ffprobe')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const r = await doctor();
      if (o.json) { console.log(JSON.stringify(r, null, 2)); return; }
      console.log(`node ${r.node} on ${r.platform}, ${r.cpus} cpus; tfjs-core ${r.tfjs}`);
      for (const b of r.backends) {
        console.log(`  ${b.available ? 'ok ' : 'no '} ${b.name.padEnd(10)} ${b.available ? JSON.stringify(b.info ?? {}) : b.reason}`);
      }
      console.log(`auto chooses: ${r.chosen}`);
      console.log(`gpu adapter: ${r.gpuAdapter ? JSON.stringify(r.gpuAdapter) : 'none'}`);
      for (const k of ['ffmpeg', 'ffprobe'] as const) {
        const v = r[k];
        console.log(`${k}: ${'error' in v ? v.error : `${v.path} (${v.source}) ${v.version}`}`);
      }
    });
}
