/**
 * A small seeded PRNG (mulberry32) whose whole state is one uint32, so a data loader can
 * save it in JSON and continue exactly where it stopped.
 */

export interface Rng {
  /** Uniform float in [0, 1). */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Shuffles `a` in place (Fisher–Yates) and returns it. */
  shuffle<T>(a: T[]): T[];
  /** The current state; `createRng({ state })` continues from it. */
  state(): number;
}

/**
 * Creates a mulberry32 generator from a seed (any finite number) or a saved state.
 *
 * @example
 * const r = createRng(42); r.next(); const s = r.state();
 * const a = r.next(); createRng({ state: s }).next() === a; // true
 */
/**
 * The raw mulberry32 stream from a uint32 state, uniform in [0, 1): the same numbers as
 * `createRng({ state: seed }).next`, for code that only needs draws.
 *
 * @example const u = mulberry32(7); u(); u();
 */
export function mulberry32(seed: number): () => number {
  return createRng({ state: seed >>> 0 }).next;
}

export function createRng(seed: number | { state: number }): Rng {
  let s: number;
  if (typeof seed === 'number') {
    if (!Number.isFinite(seed)) throw new Error(`createRng: seed must be a finite number, got ${seed}`);
    // Mix the seed so that nearby seeds (0, 1, 2…) give unrelated streams.
    s = hashSeed(Math.trunc(seed) >>> 0, 0x9e3779b9);
  } else {
    if (!seed || !Number.isInteger(seed.state) || seed.state < 0 || seed.state > 0xffffffff) {
      throw new Error(`createRng: state must be a uint32 integer, got ${JSON.stringify(seed?.state)}`);
    }
    s = seed.state >>> 0;
  }
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => {
    if (!Number.isInteger(n) || n <= 0) throw new Error(`Rng.int: n must be a positive integer, got ${n}`);
    return Math.floor(next() * n);
  };
  return {
    next,
    int,
    shuffle<T>(a: T[]): T[] {
      for (let i = a.length - 1; i > 0; i--) {
        const j = int(i + 1);
        const tmp = a[i]; a[i] = a[j]; a[j] = tmp;
      }
      return a;
    },
    state: () => s,
  };
}

/**
 * A uint32 from a number and a string/number key (FNV-1a then a murmur finaliser); used to
 * give every clip its own random stream derived from one run seed.
 *
 * @example hashSeed(7, 'video123') // a uint32, the same on every run
 */
export function hashSeed(seed: number, key: string | number): number {
  let h = (0x811c9dc5 ^ (seed >>> 0)) >>> 0;
  const str = String(key);
  for (let i = 0; i < str.length; i++) {
    h ^= str.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}
