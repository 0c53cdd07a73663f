import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ffmpegModule from 'fluent-ffmpeg';
import { ffmpegBinary } from '../src/video/binaries.js';
import { fluent } from '../src/video/ffmpeg.js';
import { probeVideo } from '../src/video/probe.js';
import { createRng, hashSeed } from '../src/util/rng.js';
import { planTimestamps, sampleFrames, sampleMany } from '../src/video/sampler.js';
import { CLIP_MEAN, CLIP_STD, normalizeFrames } from '../src/video/transforms.js';

/** Runs ffmpeg to make a test clip from a lavfi graph. */
export function makeClip(file: string, graph: string, extra: string[] = ['-c:v', 'libx264', '-pix_fmt', 'yuv420p']): string {
  execFileSync(ffmpegBinary().path, ['-v', 'error', '-y', '-f', 'lavfi', '-i', graph, ...extra, file], { stdio: 'ignore' });
  return file;
}

/** Average RGB of frame `t` of a [T,S,S,3] array over columns [x0, x1) of every row. */
function meanRgb(data: Uint8Array, size: number, t: number, x0 = 0, x1 = size): [number, number, number] {
  const sum = [0, 0, 0];
  let n = 0;
  for (let y = 0; y < size; y++) {
    for (let x = x0; x < x1; x++) {
      const i = ((t * size + y) * size + x) * 3;
      for (let c = 0; c < 3; c++) sum[c] += data[i + c];
      n++;
    }
  }
  return [sum[0] / n, sum[1] / n, sum[2] / n];
}

const RED = (c: number[]): boolean => c[0] > 230 && c[1] < 25 && c[2] < 25;
const BLUE = (c: number[]): boolean => c[2] > 230 && c[0] < 25 && c[1] < 25;

/**
 * Points fluent-ffmpeg at a wrapper that logs each ffmpeg command line before running the
 * real binary, so a test can count processes independently of the code under test.
 */
export function countFfmpegCalls(dir: string): { log: string; calls: () => string[]; restore: () => void } {
  fluent();
  const log = path.join(dir, 'ffmpeg-calls.log');
  writeFileSync(log, '');
  const wrapper = path.join(dir, 'ffmpeg-wrapper.sh');
  writeFileSync(wrapper, `#!/bin/sh\necho "$*" >> '${log}'\nexec '${ffmpegBinary().path}' "$@"\n`);
  chmodSync(wrapper, 0o755);
  ffmpegModule.setFfmpegPath(wrapper);
  return {
    log,
    // Capability probes (-formats, -encoders) are not decodes.
    calls: () => readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('rawvideo')),
    restore: () => ffmpegModule.setFfmpegPath(ffmpegBinary().path),
  };
}

describe('video: seeded PRNG', () => {
  it('mulberry32 from a raw state matches an independent Python port', () => {
    const r = createRng({ state: 0 });
    // Python reference: a=(a+0x6d2b79f5)&M; t=a; t=(t^t>>15)*(t|1); t^=t+(t^t>>7)*(t|61); (t^t>>14)/2**32
    assert.ok(Math.abs(r.next() - 0.26642920868471265) < 1e-15);
    assert.ok(Math.abs(r.next() - 0.0003297457005828619) < 1e-15);
    assert.ok(Math.abs(createRng({ state: 123456789 }).next() - 0.2577907438389957) < 1e-15);
  });

  it('a saved state continues the same stream; seeds differ; shuffle is a permutation', () => {
    const a = createRng(7);
    for (let i = 0; i < 5; i++) a.next();
    const saved = JSON.parse(JSON.stringify({ s: a.state() })).s as number;
    const rest = [a.next(), a.next(), a.next()];
    const b = createRng({ state: saved });
    assert.deepEqual([b.next(), b.next(), b.next()], rest);
    assert.notEqual(createRng(1).next(), createRng(2).next());
    const p = createRng(3).shuffle(Array.from({ length: 50 }, (_, i) => i));
    assert.deepEqual([...p].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
    let m = 0;
    const r = createRng(11);
    for (let i = 0; i < 20000; i++) m += r.next();
    assert.ok(Math.abs(m / 20000 - 0.5) < 0.01, `mean ${m / 20000}`);
    assert.notEqual(hashSeed(0, 'a'), hashSeed(0, 'b'));
    assert.throws(() => createRng({ state: -1 }), /uint32/);
  });
});

describe('video: normalisation', () => {
  it('applies CLIP mean/std per channel (published constants, by hand)', () => {
    const out = normalizeFrames(new Uint8Array([255, 0, 0, 0, 255, 128]));
    const want = [(1 - 0.48145466) / 0.26862954, (0 - 0.4578275) / 0.26130258, (0 - 0.40821073) / 0.27577711,
      (0 - 0.48145466) / 0.26862954, (1 - 0.4578275) / 0.26130258, (128 / 255 - 0.40821073) / 0.27577711];
    want.forEach((w, i) => assert.ok(Math.abs(out[i] - w) < 1e-5, `${i}: ${out[i]} vs ${w}`));
    assert.ok(Math.abs(out[0] - 1.9303) < 1e-4 && Math.abs(out[1] + 1.7521) < 1e-4 && Math.abs(out[2] + 1.4802) < 1e-4);
    assert.deepEqual([...CLIP_MEAN, ...CLIP_STD].length, 6);
    assert.throws(() => normalizeFrames(new Uint8Array(4)), /multiple of 3/);
    assert.throws(() => normalizeFrames(new Uint8Array(3), { out: new Float32Array(6) }), /out has length 6/);
  });
});

describe('video: timestamps', () => {
  it('plans segment middles, seeded in-segment points, fps, head and tail by hand', () => {
    assert.deepEqual(planTimestamps('uniform', 4, { start: 0, end: 2, videoFps: 10 }), [0.25, 0.75, 1.25, 1.75]);
    assert.deepEqual(planTimestamps('uniform', 2, { start: 0.5, end: 1.5, videoFps: 10 }), [0.75, 1.25]);
    const r = planTimestamps('random', 4, { start: 1, end: 3, videoFps: 10, seed: 5 });
    r.forEach((t, i) => assert.ok(t >= 1 + 0.5 * i && t < 1 + 0.5 * (i + 1), `slot ${i}: ${t}`));
    assert.deepEqual(planTimestamps('random', 4, { start: 1, end: 3, videoFps: 10, seed: 5 }), r);
    assert.notDeepEqual(planTimestamps('random', 4, { start: 1, end: 3, videoFps: 10, seed: 6 }), r);
    assert.deepEqual(planTimestamps('fps', 3, { start: 0.5, end: 2, videoFps: 10, fps: 2 }), [0.5, 1, 1.5]);
    assert.deepEqual(planTimestamps('head', 3, { start: 0, end: 2, videoFps: 4 }), [0, 0.25, 0.5]);
    assert.deepEqual(planTimestamps('tail', 2, { start: 0, end: 2, videoFps: 4 }), [1.5, 1.75]);
  });
});

describe('video: probe and sample with ffmpeg', function () {
  this.timeout(60000);
  let dir: string;
  let redBlue: string;
  let stripes: string;
  let rotated: string;

  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-video-'));
    // 1 s red then 1 s blue, 10 fps, 64×48.
    redBlue = makeClip(path.join(dir, 'redblue.mp4'),
      'color=c=red:s=64x48:r=10:d=1[a];color=c=blue:s=64x48:r=10:d=1[b];[a][b]concat=n=2:v=1:a=0');
    // 96×48: green | red (middle 48 px) | blue; the centre crop of the short side is all red.
    stripes = makeClip(path.join(dir, 'stripes.mp4'),
      'color=c=blue:s=96x48:r=5:d=1[bg];color=c=green:s=24x48:r=5:d=1[g];color=c=red:s=48x48:r=5:d=1[m];[bg][g]overlay=0:0[t];[t][m]overlay=24:0');
    rotated = path.join(dir, 'rotated.mp4');
    execFileSync(ffmpegBinary().path, ['-v', 'error', '-y', '-i', redBlue, '-c', 'copy', '-metadata:s:v:0', 'rotate=90', rotated], { stdio: 'ignore' });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('probes duration, fps, frame count, size, codec and rotation of a generated clip', async () => {
    const info = await probeVideo(redBlue);
    assert.ok(Math.abs(info.duration - 2) < 0.05, `duration ${info.duration}`);
    assert.equal(info.fps, 10);
    assert.equal(info.frameCount, 20);
    assert.equal(info.width, 64);
    assert.equal(info.height, 48);
    assert.equal(info.codec, 'h264');
    assert.equal(info.rotation, 0);
    const rot = await probeVideo(rotated);
    assert.ok(rot.rotation === 90 || rot.rotation === 270, `rotation ${rot.rotation}`);
  });

  it('samples segment middles: shape, timestamps by hand, nearest frames and their colours', async () => {
    const s = await sampleFrames(redBlue, { frames: 4, size: 32 });
    assert.deepEqual(s.shape, [4, 32, 32, 3]);
    assert.equal(s.data.length, 4 * 32 * 32 * 3);
    assert.deepEqual(s.timestamps, [0.25, 0.75, 1.25, 1.75]);
    assert.equal(s.padded, 0);
    // Red for frames 0–9 (t < 1 s), blue after.
    assert.ok(RED(meanRgb(s.data, 32, 0)) && RED(meanRgb(s.data, 32, 1)), `${meanRgb(s.data, 32, 0)}`);
    assert.ok(BLUE(meanRgb(s.data, 32, 2)) && BLUE(meanRgb(s.data, 32, 3)), `${meanRgb(s.data, 32, 2)}`);
    // Middles of 3 segments: 1/3, 1, 5/3 s; the nearest frames on a 0.1 s grid: 0.3, 1.0, 1.7.
    const t3 = await sampleFrames(redBlue, { frames: 3, size: 16 });
    assert.deepEqual(t3.timestamps, [0.333333, 1, 1.666667]);
    assert.deepEqual(t3.frameTimes, [0.3, 1, 1.7]);
    assert.ok(RED(meanRgb(t3.data, 16, 0)) && BLUE(meanRgb(t3.data, 16, 1)));
  });

  it('seeks to a window: [1, 2] s is all blue, [0, 1] s all red', async () => {
    const late = await sampleFrames(redBlue, { frames: 2, size: 16, start: 1, end: 2 });
    assert.deepEqual(late.timestamps, [1.25, 1.75]);
    assert.deepEqual(late.frameTimes, [1.2, 1.7]);
    assert.ok(BLUE(meanRgb(late.data, 16, 0)) && BLUE(meanRgb(late.data, 16, 1)));
    const early = await sampleFrames(redBlue, { frames: 2, size: 16, start: 0, end: 1 });
    assert.ok(RED(meanRgb(early.data, 16, 0)) && RED(meanRgb(early.data, 16, 1)));
  });

  it('scales the short side and crops the centre (stripes outside the crop do not show)', async () => {
    const s = await sampleFrames(stripes, { frames: 1, size: 32 });
    // 96×48 → 64×32, centre 32 columns = source columns 24…72 = the red block. Keep off the
    // two edge columns where the scaler blends neighbours.
    assert.ok(RED(meanRgb(s.data, 32, 0, 2, 30)), `centre ${meanRgb(s.data, 32, 0, 2, 30)}`);
    assert.ok(meanRgb(s.data, 32, 0, 0, 1)[1] < 128, 'no green at the left edge');
  });

  it('pads with the last frame when the clip ends early, and says so', async () => {
    // fps strategy at 1/s from 0: 0, 1, 2, 3 s; a 2 s clip has frames only for the first two.
    const s = await sampleFrames(redBlue, { frames: 4, size: 8, strategy: 'fps', fps: 1 });
    assert.deepEqual(s.timestamps, [0, 1, 2, 3]);
    assert.equal(s.padded, 2);
    assert.deepEqual(s.frameTimes, [0, 1, 1, 1]);
    const f = 8 * 8 * 3;
    assert.deepEqual(s.data.subarray(3 * f, 4 * f), s.data.subarray(f, 2 * f));
    assert.ok(RED(meanRgb(s.data, 8, 0)) && BLUE(meanRgb(s.data, 8, 3)));
  });

  it('head and tail take consecutive frames at the ends', async () => {
    const h = await sampleFrames(redBlue, { frames: 3, size: 8, strategy: 'head' });
    assert.deepEqual(h.frameTimes, [0, 0.1, 0.2]);
    const t = await sampleFrames(redBlue, { frames: 3, size: 8, strategy: 'tail' });
    assert.deepEqual(t.frameTimes, [1.7, 1.8, 1.9]);
    assert.ok(BLUE(meanRgb(t.data, 8, 0)));
  });

  it('kills ffmpeg at the timeout and names the file', async () => {
    const info = await probeVideo(redBlue);
    await assert.rejects(sampleFrames(redBlue, { frames: 4, size: 16, info, timeoutMs: 1 }),
      (e: Error) => e.message.includes(redBlue) && /did not finish within 1 ms and was killed/.test(e.message));
  });

  it('runs one ffmpeg process per clip, not per frame', async () => {
    // Own copies, so a process left over from another test cannot be counted here.
    const a = path.join(dir, 'count-a.mp4');
    const b = path.join(dir, 'count-b.mp4');
    copyFileSync(redBlue, a);
    copyFileSync(stripes, b);
    const spy = countFfmpegCalls(dir);
    try {
      const r = await sampleMany([{ video: a }, { video: b }, { video: a, start: 1 }], { frames: 8, size: 16 }, { concurrency: 2 });
      assert.equal(r.decoded, 3);
      const calls = spy.calls().filter((l) => l.includes('count-'));
      assert.equal(calls.length, 3, calls.join('\n'));
    } finally {
      spy.restore();
    }
  });

  it('skips missing, empty, non-video, truncated and audio-only files with reasons; odd names work', async () => {
    const empty = path.join(dir, 'empty.mp4');
    writeFileSync(empty, '');
    const text = path.join(dir, 'notes.mp4');
    writeFileSync(text, 'this is not a video\n');
    const truncated = path.join(dir, 'truncated.mp4');
    // The muxer writes the index (moov) at the end, so the first 60% has no index.
    const full = readFileSync(redBlue);
    writeFileSync(truncated, full.subarray(0, Math.floor(full.length * 0.6)));
    const audio = makeClip(path.join(dir, 'tone.m4a'), 'sine=f=440:d=1', ['-c:a', 'aac']);
    const dash = path.join(dir, '-leading dash.mp4');
    copyFileSync(redBlue, dash);
    const unicode = path.join(dir, 'vidéo ✓ 動画 #1.mp4');
    copyFileSync(redBlue, unicode);
    const missing = path.join(dir, 'missing.mp4');
    const items = [
      { id: 'dash', video: dash }, { id: 'missing', video: missing }, { id: 'empty', video: empty },
      { id: 'text', video: text }, { id: 'truncated', video: truncated }, { id: 'audio', video: audio },
      { id: 'unicode', video: unicode },
    ];
    const r = await sampleMany(items, { frames: 4, size: 16 }, { concurrency: 2 });
    assert.equal(r.decoded, 2);
    assert.equal(r.skipped.length, 5);
    const why = Object.fromEntries(r.skipped.map((e) => [e.id, e]));
    assert.match(why.missing.reason, /file not found/);
    assert.match(why.empty.reason, /empty file \(0 bytes\)/);
    assert.match(why.text.reason, /not a readable video/);
    assert.match(why.truncated.reason, /not a readable video|no video stream/);
    assert.match(why.audio.reason, /no video stream \(audio only\)/);
    assert.equal(why.missing.source, missing);
    assert.equal(why.audio.source, audio);
    for (const o of r.outcomes.filter((x) => x.ok)) {
      if (!o.ok) continue;
      assert.ok(RED(meanRgb(o.clip.data, 16, 0)) && BLUE(meanRgb(o.clip.data, 16, 3)), `${o.item.id}`);
    }
    await assert.rejects(probeVideo(audio), (e: Error) => e.message.startsWith(audio) && /audio only/.test(e.message));
  });

  it('checks its arguments', async () => {
    await assert.rejects(sampleFrames(redBlue, { frames: 0, size: 16 }), /frames must be a positive integer/);
    await assert.rejects(sampleFrames(redBlue, { frames: 2, size: 16, strategy: 'fps' }), /needs fps > 0/);
    await assert.rejects(sampleFrames(redBlue, { frames: 2, size: 16, start: 1, end: 1 }), /end \(1\) must be after start/);
    await assert.rejects(sampleFrames(redBlue, { frames: 2, size: 16, start: 5 }), /window .* is empty/);
  });
});
