/**
 * Where ffmpeg and ffprobe come from: `FFMPEG_PATH` / `FFPROBE_PATH`, then `PATH`, then the
 * static binaries shipped inside `@ffmpeg-installer/ffmpeg` and `@ffprobe-installer/ffprobe`,
 * so that `npm install` alone is enough.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);

export interface BinaryInfo { path: string; source: 'env' | 'PATH' | 'npm'; version: string }

function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try { accessSync(p, constants.X_OK); return p; } catch { /* keep looking */ }
  }
  return null;
}

function versionOf(bin: string): string {
  try {
    const out = execFileSync(bin, ['-version'], { encoding: 'utf8', timeout: 10000, stdio: ['ignore', 'pipe', 'ignore'] });
    return out.split('\n')[0].trim();
  } catch (e) {
    return `unusable: ${(e as Error).message.split('\n')[0]}`;
  }
}

const cache = new Map<string, BinaryInfo>();

function resolveTool(tool: 'ffmpeg' | 'ffprobe'): BinaryInfo {
  const hit = cache.get(tool);
  if (hit) return hit;
  const envName = tool === 'ffmpeg' ? 'FFMPEG_PATH' : 'FFPROBE_PATH';
  let info: BinaryInfo | null = null;
  const fromEnv = process.env[envName];
  if (fromEnv) info = { path: fromEnv, source: 'env', version: versionOf(fromEnv) };
  else {
    const p = onPath(tool);
    if (p) info = { path: p, source: 'PATH', version: versionOf(p) };
    else {
      const pkg = tool === 'ffmpeg' ? '@ffmpeg-installer/ffmpeg' : '@ffprobe-installer/ffprobe';
      try {
        const p2 = (require(pkg) as { path: string }).path;
        info = { path: p2, source: 'npm', version: versionOf(p2) };
      } catch (e) {
        throw new Error(`${tool} not found: set ${envName}, put ${tool} on PATH, or reinstall ${pkg} (${(e as Error).message})`);
      }
    }
  }
  cache.set(tool, info);
  return info;
}

/** The ffmpeg binary to use, with where it came from and its version line. */
export function ffmpegBinary(): BinaryInfo { return resolveTool('ffmpeg'); }
/** The ffprobe binary to use, with where it came from and its version line. */
export function ffprobeBinary(): BinaryInfo { return resolveTool('ffprobe'); }
