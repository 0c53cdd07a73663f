/**
 * The parameter store: named tf.Variables with seeded initialisation.
 *
 * Modules never own parameters. A forward is `forward(params, inputs)` over a flat
 * `Params` record keyed by dotted names (`video.blocks.0.attn.qkv.weight`), so the same
 * forward runs on the store's variables (`store.snapshot()`) and on plain tensors such as
 * the bilevel step's θ′ = θ − α∇θL.
 *
 * Initial values come from a JS PRNG keyed by (seed, parameter name): the same seed gives
 * the same weights on every backend, and adding a parameter does not change the others.
 */
import { tf } from '../backend/tf.js';
import { mulberry32 } from '../util/rng.js';

/** A flat parameter tree: dotted name → tensor (a tf.Variable or any tensor of that shape). */
export type Params = Record<string, tf.Tensor>;

export type InitScheme =
  | { kind: 'zeros' }
  | { kind: 'ones' }
  | { kind: 'constant'; value: number }
  | { kind: 'normal'; std: number }
  /** Normal with draws beyond ±2 std redrawn (as timm's trunc_normal_). */
  | { kind: 'truncNormal'; std: number }
  /** Glorot uniform: U(±√(6/(fanIn+fanOut))), fanOut the last axis, fanIn the product of the rest. */
  | { kind: 'xavier' };

export interface ParamSpec {
  name: string;
  /** [] for a scalar. */
  shape: number[];
  init: InitScheme;
}

/** Values as plain data, e.g. mapped from a checkpoint file. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** Number of elements of a shape ([] → 1). @example shapeSize([2, 3]) // 6 */
export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** FNV-1a of the name mixed with the seed: a per-parameter stream. */
function streamSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** mulberry32: uniform [0, 1). */
const uniformStream = mulberry32;

function normalStream(seed: number): () => number {
  const u = uniformStream(seed);
  let spare: number | null = null;
  return () => {
    if (spare !== null) { const s = spare; spare = null; return s; }
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    const a = 2 * Math.PI * u();
    spare = r * Math.sin(a);
    return r * Math.cos(a);
  };
}

function checkSpec(spec: ParamSpec, where: string): void {
  if (typeof spec?.name !== 'string' || spec.name === '') throw new Error(`${where}: spec.name must be a non-empty string`);
  if (!Array.isArray(spec.shape) || !spec.shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(`${where}: parameter '${spec.name}' shape must be positive integers, got ${JSON.stringify(spec.shape)}`);
  }
  const i = spec.init;
  const okStd = (s: unknown) => typeof s === 'number' && Number.isFinite(s) && s >= 0;
  if (!i || !['zeros', 'ones', 'constant', 'normal', 'truncNormal', 'xavier'].includes(i.kind)
    || ((i.kind === 'normal' || i.kind === 'truncNormal') && !okStd(i.std))
    || (i.kind === 'constant' && !Number.isFinite(i.value))) {
    throw new Error(`${where}: parameter '${spec.name}' has a bad init ${JSON.stringify(i)}`);
  }
}

/**
 * The initial values of one parameter for a seed (deterministic, backend-independent).
 *
 * @example initialValues({ name: 'w', shape: [2, 3], init: { kind: 'normal', std: 0.02 } }, 0)
 */
export function initialValues(spec: ParamSpec, seed: number): Float32Array {
  checkSpec(spec, 'initialValues');
  const n = shapeSize(spec.shape);
  const out = new Float32Array(n);
  const init = spec.init;
  switch (init.kind) {
    case 'zeros':
      break;
    case 'ones':
      out.fill(1);
      break;
    case 'constant':
      out.fill(init.value);
      break;
    case 'normal': {
      const g = normalStream(streamSeed(seed, spec.name));
      for (let i = 0; i < n; i++) out[i] = init.std * g();
      break;
    }
    case 'truncNormal': {
      const g = normalStream(streamSeed(seed, spec.name));
      for (let i = 0; i < n; i++) {
        let z = g();
        while (Math.abs(z) > 2) z = g();
        out[i] = init.std * z;
      }
      break;
    }
    case 'xavier': {
      const fanOut = spec.shape.length ? spec.shape[spec.shape.length - 1] : 1;
      const fanIn = spec.shape.length > 1 ? n / fanOut : 1;
      const a = Math.sqrt(6 / (fanIn + fanOut));
      const u = uniformStream(streamSeed(seed, spec.name));
      for (let i = 0; i < n; i++) out[i] = a * (2 * u() - 1);
      break;
    }
  }
  return out;
}

/**
 * Number of scalars in a list of specs, optionally only names under `prefix`
 * (`'video.'` or `'video.blocks.0'`). Allocates nothing.
 *
 * @example countParams(dualEncoderSpecs(getConfig('base')), 'text.') // 63428096
 */
export function countParams(specs: readonly ParamSpec[], prefix = ''): number {
  let n = 0;
  for (const s of specs) if (s.name.startsWith(prefix)) n += shapeSize(s.shape);
  return n;
}

/** Scalar counts grouped by the first `depth` dotted components of each name. @example countByPrefix(specs, 1) // { video: …, text: …, logit_scale: 1 } */
export function countByPrefix(specs: readonly ParamSpec[], depth = 1): Record<string, number> {
  if (!Number.isInteger(depth) || depth < 1) throw new Error(`countByPrefix: 'depth' must be a positive integer, got ${depth}`);
  const out: Record<string, number> = {};
  for (const s of specs) {
    const key = s.name.split('.').slice(0, depth).join('.');
    out[key] = (out[key] ?? 0) + shapeSize(s.shape);
  }
  return out;
}

/**
 * Named trainable variables.
 *
 * @example
 * const store = new ParamStore(42);
 * store.add({ name: 'proj.weight', shape: [64, 32], init: { kind: 'normal', std: 0.02 } });
 * const y = tf.matMul(x, store.snapshot()['proj.weight']);
 * store.dispose();
 */
export class ParamStore {
  readonly seed: number;
  private readonly vars = new Map<string, tf.Variable>();
  private readonly specList: ParamSpec[] = [];

  constructor(seed = 0) {
    if (!Number.isInteger(seed)) throw new Error(`ParamStore: 'seed' must be an integer, got ${seed}`);
    this.seed = seed;
  }

  /** Creates and initialises one variable. */
  add(spec: ParamSpec): tf.Variable {
    checkSpec(spec, 'ParamStore.add');
    if (this.vars.has(spec.name)) throw new Error(`ParamStore.add: parameter '${spec.name}' already exists`);
    const values = initialValues(spec, this.seed);
    // No variable name: tfjs names are process-global and two stores may share ours.
    const v = tf.tidy(() => tf.variable(tf.tensor(values, spec.shape, 'float32'), true));
    this.vars.set(spec.name, v);
    this.specList.push({ name: spec.name, shape: [...spec.shape], init: spec.init });
    return v;
  }

  addAll(specs: readonly ParamSpec[]): this {
    for (const s of specs) this.add(s);
    return this;
  }

  has(name: string): boolean {
    return this.vars.has(name);
  }

  get(name: string): tf.Variable {
    const v = this.vars.get(name);
    if (!v) throw new Error(`ParamStore.get: no parameter '${name}'`);
    return v;
  }

  /** Names in insertion order. */
  names(): string[] {
    return [...this.vars.keys()];
  }

  specs(): ParamSpec[] {
    return this.specList.map((s) => ({ ...s, shape: [...s.shape] }));
  }

  /** Scalar count, optionally only under `prefix`. */
  count(prefix = ''): number {
    return countParams(this.specList, prefix);
  }

  countByPrefix(depth = 1): Record<string, number> {
    return countByPrefix(this.specList, depth);
  }

  /** The variables themselves as a `Params` record (not copies: do not dispose them). */
  snapshot(): Params {
    const out: Params = {};
    for (const [k, v] of this.vars) out[k] = v;
    return out;
  }

  /**
   * Copies values into the variables. Unknown names and shape mismatches are errors (all
   * listed); with `requireAll`, so is any parameter left out.
   *
   * @example store.assign({ 'proj.weight': tf.zeros([64, 32]) });
   */
  assign(values: Record<string, tf.Tensor | HostTensor>, opts: { requireAll?: boolean } = {}): void {
    if (values === null || typeof values !== 'object') throw new Error('ParamStore.assign: values must be a record of name → tensor');
    const problems: string[] = [];
    for (const [name, val] of Object.entries(values)) {
      const v = this.vars.get(name);
      if (!v) { problems.push(`unknown parameter '${name}'`); continue; }
      const shape = val instanceof tf.Tensor ? val.shape : val?.shape;
      if (!Array.isArray(shape) || shape.length !== v.shape.length || shape.some((d, i) => d !== v.shape[i])) {
        problems.push(`'${name}' has shape [${shape}], expected [${v.shape}]`);
      } else if (!(val instanceof tf.Tensor) && (!(val.data instanceof Float32Array) || val.data.length !== v.size)) {
        problems.push(`'${name}' data must be a Float32Array of ${v.size} values`);
      }
    }
    if (opts.requireAll) for (const name of this.vars.keys()) if (!(name in values)) problems.push(`missing parameter '${name}'`);
    if (problems.length) throw new Error(`ParamStore.assign: ${problems.length} problem(s):\n  ${problems.slice(0, 30).join('\n  ')}`);
    tf.tidy(() => {
      for (const [name, val] of Object.entries(values)) {
        const t = val instanceof tf.Tensor ? tf.cast(val, 'float32') : tf.tensor(val.data, val.shape, 'float32');
        this.vars.get(name)!.assign(t);
      }
    });
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
    this.specList.length = 0;
  }
}

/**
 * A required parameter, with an error that names it when it is missing.
 *
 * @example const w = param(params, 'text.proj.weight');
 */
export function param(params: Params, name: string): tf.Tensor {
  const t = params[name];
  if (!(t instanceof tf.Tensor)) throw new Error(`missing parameter '${name}' (params has ${Object.keys(params).length} entries)`);
  return t;
}

/**
 * The value of a scalar loss of a `Params` record and its gradient wrt each named
 * parameter (default: all), as a record. Works on variables and on plain tensors.
 *
 * @example const { value, grads } = valueAndGradsOf((p) => loss(p), store.snapshot());
 */
export function valueAndGradsOf(f: (p: Params) => tf.Scalar, params: Params, names: string[] = Object.keys(params)): { value: tf.Scalar; grads: Params } {
  for (const n of names) param(params, n);
  let res: { value: tf.Scalar; grads: tf.Tensor[] };
  try {
    res = tf.valueAndGrads((...xs: tf.Tensor[]) => {
      const p: Params = { ...params };
      names.forEach((n, i) => { p[n] = xs[i]; });
      return f(p);
    })(names.map((n) => params[n]));
  } catch (e) {
    if (e instanceof Error && e.message.startsWith('Cannot compute gradient')) {
      throw new Error('valueAndGradsOf: the loss does not depend on every named parameter; pass `names` with only the ones it uses');
    }
    throw e;
  }
  const { value, grads } = res;
  const out: Params = {};
  names.forEach((n, i) => { out[n] = grads[i]; });
  return { value, grads: out };
}
