/**
 * Picture transforms: the resize/crop part runs inside ffmpeg's filter graph; the
 * per-channel normalisation runs when batches are made (the cache keeps raw uint8).
 */

/** CLIP's per-channel RGB mean of pixels scaled to [0, 1]. */
export const CLIP_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
/** CLIP's per-channel RGB standard deviation of pixels scaled to [0, 1]. */
export const CLIP_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/**
 * ffmpeg filters that scale the short side to `size` (aspect kept) and crop the centre
 * `size`×`size`, emitting packed RGB so the crop offsets are exact pixels.
 *
 * @example resizeCropFilter(224) // 'scale=224:224:force_original_aspect_ratio=increase,format=rgb24,crop=224:224'
 */
export function resizeCropFilter(size: number): string {
  if (!Number.isInteger(size) || size < 1) throw new Error(`resizeCropFilter: size must be a positive integer, got ${size}`);
  return `scale=${size}:${size}:force_original_aspect_ratio=increase,format=rgb24,crop=${size}:${size}`;
}

/**
 * Turns interleaved RGB bytes (…×3, last axis RGB) into floats `(x/255 − mean) / std` per
 * channel. Writes into `out` when given (it must have the same length), so a loader can
 * reuse one buffer.
 *
 * @example
 * normalizeFrames(new Uint8Array([255, 0, 0])) // Float32Array [1.9303, -1.7521, -1.4802]
 */
export function normalizeFrames(
  pixels: Uint8Array,
  opts: { mean?: readonly number[]; std?: readonly number[]; out?: Float32Array } = {},
): Float32Array {
  if (!(pixels instanceof Uint8Array)) throw new Error('normalizeFrames: pixels must be a Uint8Array of interleaved RGB');
  if (pixels.length % 3 !== 0) throw new Error(`normalizeFrames: pixels length ${pixels.length} is not a multiple of 3 (RGB)`);
  const mean = opts.mean ?? CLIP_MEAN;
  const std = opts.std ?? CLIP_STD;
  if (mean.length !== 3 || std.length !== 3 || std.some((s) => !(s > 0))) {
    throw new Error('normalizeFrames: mean and std must have 3 entries and std must be positive');
  }
  const out = opts.out ?? new Float32Array(pixels.length);
  if (out.length !== pixels.length) throw new Error(`normalizeFrames: out has length ${out.length}, expected ${pixels.length}`);
  // A 3×256 lookup table: one multiply-add per pixel would be slower than one load.
  const lut = new Float32Array(768);
  for (let c = 0; c < 3; c++) for (let v = 0; v < 256; v++) lut[c * 256 + v] = (v / 255 - mean[c]) / std[c];
  for (let i = 0; i < pixels.length; i += 3) {
    out[i] = lut[pixels[i]];
    out[i + 1] = lut[256 + pixels[i + 1]];
    out[i + 2] = lut[512 + pixels[i + 2]];
  }
  return out;
}
