/**
 * Meta batches: the small clean meta set is visited in full, in batches, in a fresh seeded
 * order every pass, so the meta step does not overfit one fixed batch. The cycler hands out
 * indices into the meta set; the caller turns them into tensors.
 */
import { createRng } from '../util/rng.js';

/** Where a cycler stands; `new MetaBatchCycler(…, { resumeFrom })` continues from it. JSON-safe. */
export interface MetaCyclerState {
  /** Passes over the meta set already completed. */
  pass: number;
  /** Batches already handed out in this pass. */
  position: number;
  /** PRNG state at the start of this pass (it decides the pass's order). */
  rngState: number;
  size: number;
  batchSize: number;
}

export interface MetaBatchCyclerOptions {
  /** Seed of the per-pass shuffles. Default 0. */
  seed?: number;
  /** Continue exactly from a saved `state()`. */
  resumeFrom?: MetaCyclerState;
}

/**
 * Cycles through indices 0…size−1 in batches of `batchSize`, reshuffled every pass. Each pass
 * is ⌈size/batchSize⌉ batches and contains every index; when size is not a multiple of the
 * batch size, the last batch is topped up with the first indices of the same pass's order, so
 * every batch is full and has no repeats.
 *
 * @example
 * const c = new MetaBatchCycler(metaSet.length, 32, { seed: 1 });
 * const idx = c.next();            // 32 distinct indices into the meta set
 * const saved = c.state();         // new MetaBatchCycler(metaSet.length, 32, { resumeFrom: saved })
 */
export class MetaBatchCycler {
  readonly size: number;
  readonly batchSize: number;
  readonly batchesPerPass: number;
  private pass: number;
  private position: number;
  private rngState: number;
  private order: number[];

  constructor(size: number, batchSize: number, opts: MetaBatchCyclerOptions = {}) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`MetaBatchCycler: 'size' (items in the meta set) must be a positive integer, got ${size}`);
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > size) {
      throw new Error(`MetaBatchCycler: 'batchSize' must be an integer in [1, ${size}] (the meta set size), got ${batchSize}`);
    }
    this.size = size;
    this.batchSize = batchSize;
    this.batchesPerPass = Math.ceil(size / batchSize);
    const r = opts.resumeFrom;
    if (r) {
      const ok = r !== null && typeof r === 'object' && Number.isInteger(r.pass) && r.pass >= 0 && Number.isInteger(r.position)
        && r.position >= 0 && r.position < this.batchesPerPass && Number.isInteger(r.rngState) && r.rngState >= 0 && r.rngState <= 0xffffffff;
      if (!ok) throw new Error(`MetaBatchCycler: resumeFrom ${JSON.stringify(r)} is not a valid state for ${this.batchesPerPass} batches per pass`);
      if (r.size !== size || r.batchSize !== batchSize) {
        throw new Error(`MetaBatchCycler: resumeFrom was saved for size ${r.size} and batchSize ${r.batchSize}, this cycler has ${size} and ${batchSize}`);
      }
      this.pass = r.pass;
      this.position = r.position;
      this.rngState = r.rngState;
    } else {
      const seed = opts.seed ?? 0;
      if (!Number.isInteger(seed)) throw new Error(`MetaBatchCycler: 'seed' must be an integer, got ${seed}`);
      this.pass = 0;
      this.position = 0;
      this.rngState = createRng(seed).state();
    }
    this.order = this.orderFrom(this.rngState).order;
  }

  private orderFrom(state: number): { order: number[]; next: number } {
    const rng = createRng({ state });
    const order = rng.shuffle(Array.from({ length: this.size }, (_, i) => i));
    return { order, next: rng.state() };
  }

  /** The next batch of indices; passes roll over without end. */
  next(): number[] {
    const start = this.position * this.batchSize;
    const batch = this.order.slice(start, start + this.batchSize);
    // Top-up from the pass's own start: those indices are not in this last batch (batchSize ≤ size).
    if (batch.length < this.batchSize) batch.push(...this.order.slice(0, this.batchSize - batch.length));
    this.position++;
    if (this.position === this.batchesPerPass) {
      const { next } = this.orderFrom(this.rngState);
      this.pass++;
      this.position = 0;
      this.rngState = next;
      this.order = this.orderFrom(this.rngState).order;
    }
    return batch;
  }

  /** The next `next()` returns batch `position` of pass `pass`. */
  state(): MetaCyclerState {
    return { pass: this.pass, position: this.position, rngState: this.rngState, size: this.size, batchSize: this.batchSize };
  }
}
