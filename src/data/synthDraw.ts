/**
 * Pure drawing of the synthetic clips: one coloured shape moving at constant velocity over a
 * static textured background, as RGB24 frames.
 *
 * The frame is a torus: the object wraps around the edges and its start position is uniform, so
 * the object's position in any single frame is uniform whatever its direction and speed. A clip
 * moving left, played backwards, is exactly a clip moving right; so neither a single frame nor an
 * unordered set of frames tells the direction, and speed shows only in how far the object goes
 * between frames.
 */

export const SHAPES = ['circle', 'square', 'triangle', 'cross'] as const;
export type Shape = (typeof SHAPES)[number];

export interface ClipSpec {
  /** Frame width and height in pixels (square frames). */
  size: number;
  frames: number;
  shape: Shape;
  /** Object colour, RGB 0..255. */
  rgb: readonly [number, number, number];
  /** Object half-extent in pixels. */
  radius: number;
  /** Object centre in frame 0, pixels from the top-left corner. */
  x0: number;
  y0: number;
  /** Velocity in pixels per frame (y grows downwards). */
  vx: number;
  vy: number;
  /** Background base colour, RGB 0..255. */
  background: readonly [number, number, number];
  /** Seeds the static background texture. */
  textureSeed: number;
}

/** Supersampling grid per pixel side, so sub-pixel motion shows as smooth edges. */
const SUBSAMPLES = 4;

function inside(shape: Shape, dx: number, dy: number, r: number): boolean {
  switch (shape) {
    case 'circle':
      return dx * dx + dy * dy <= r * r;
    case 'square': {
      // Same area as the circle of radius r: side r·√π.
      const h = 0.886 * r;
      return Math.abs(dx) <= h && Math.abs(dy) <= h;
    }
    case 'triangle': {
      // Apex up at -r, base at +0.8r with half-width r; fixed orientation, so it hints no direction.
      if (dy < -r || dy > 0.8 * r) return false;
      return Math.abs(dx) <= ((dy + r) / (1.8 * r)) * r;
    }
    case 'cross': {
      const t = 0.35 * r;
      return (Math.abs(dx) <= t && Math.abs(dy) <= r) || (Math.abs(dy) <= t && Math.abs(dx) <= r);
    }
  }
}

/** Integer hash of a pixel and seed, for the static texture (same value in every frame). */
function pixelHash(x: number, y: number, seed: number): number {
  let h = Math.imul(x + 1, 0x27d4eb2d) ^ Math.imul(y + 1, 0x165667b1) ^ Math.imul(seed | 0, 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * The clip's background as an RGB24 frame: base colour, a gentle vertical gradient and ±6 texture.
 *
 * @example const bg = drawBackground(spec); bg.length === spec.size * spec.size * 3
 */
export function drawBackground(spec: ClipSpec): Uint8Array {
  const { size } = spec;
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const grad = ((y / (size - 1)) - 0.5) * 20;
    for (let x = 0; x < size; x++) {
      const n = (pixelHash(x, y, spec.textureSeed) % 13) - 6;
      const o = (y * size + x) * 3;
      for (let c = 0; c < 3; c++) out[o + c] = Math.max(0, Math.min(255, Math.round(spec.background[c] + grad + n)));
    }
  }
  return out;
}

/** Wraps a coordinate difference into [-size/2, size/2): the shortest way round the torus. */
function wrapDelta(d: number, size: number): number {
  return d - size * Math.round(d / size);
}

/**
 * Frame `t` of a clip as RGB24 (`size·size·3` bytes, row-major).
 *
 * @example const rgb = drawFrame(spec, 0); // rgb[(y*size + x)*3 + c]
 */
export function drawFrame(spec: ClipSpec, t: number, background: Uint8Array = drawBackground(spec)): Uint8Array {
  const { size, radius: r } = spec;
  if (!Number.isInteger(t) || t < 0 || t >= spec.frames) throw new Error(`drawFrame: t must be an integer frame index in [0, ${spec.frames}), got ${t}`);
  if (!(r > 0 && 2 * r < size / 2)) throw new Error(`drawFrame: radius must be in (0, size/4) so wrapping stays unambiguous, got ${r} for size ${size}`);
  const cx = spec.x0 + spec.vx * t;
  const cy = spec.y0 + spec.vy * t;
  const out = Uint8Array.from(background);
  const reach = r + 1;
  const n = SUBSAMPLES * SUBSAMPLES;
  for (let y = 0; y < size; y++) {
    const dyPixel = wrapDelta(y + 0.5 - cy, size);
    if (Math.abs(dyPixel) > reach) continue;
    for (let x = 0; x < size; x++) {
      const dxPixel = wrapDelta(x + 0.5 - cx, size);
      if (Math.abs(dxPixel) > reach) continue;
      let hits = 0;
      for (let sy = 0; sy < SUBSAMPLES; sy++) {
        const dy = dyPixel + (sy + 0.5) / SUBSAMPLES - 0.5;
        for (let sx = 0; sx < SUBSAMPLES; sx++) {
          if (inside(spec.shape, dxPixel + (sx + 0.5) / SUBSAMPLES - 0.5, dy, r)) hits += 1;
        }
      }
      if (hits === 0) continue;
      const a = hits / n;
      const o = (y * size + x) * 3;
      for (let c = 0; c < 3; c++) out[o + c] = Math.round(out[o + c] * (1 - a) + spec.rgb[c] * a);
    }
  }
  return out;
}

/**
 * All frames of a clip, concatenated: the rawvideo stream ffmpeg reads.
 *
 * @example const raw = drawClip(spec); // frame t is raw.subarray(t*size*size*3, (t+1)*size*size*3)
 */
export function drawClip(spec: ClipSpec): Uint8Array {
  if (!Number.isInteger(spec.size) || spec.size < 8 || spec.size % 2 !== 0) throw new Error(`drawClip: size must be an even integer >= 8, got ${spec.size}`);
  if (!Number.isInteger(spec.frames) || spec.frames < 2) throw new Error(`drawClip: frames must be an integer >= 2, got ${spec.frames}`);
  const bg = drawBackground(spec);
  const frameBytes = spec.size * spec.size * 3;
  const out = new Uint8Array(frameBytes * spec.frames);
  for (let t = 0; t < spec.frames; t++) out.set(drawFrame(spec, t, bg), t * frameBytes);
  return out;
}
