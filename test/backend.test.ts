import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import { nativePackageDir, readSetupStamp } from '../src/backend/native.js';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { hvpBothWays, seededUniform, relErr } from './helpers/fd.js';
import { tidyData } from './helpers/read.js';

/** Runs `f` on the cpu backend, returns its values, and restores the previous backend. */
async function onCpu(f: () => tf.Tensor): Promise<Float32Array> {
  const prev = tf.getBackend();
  await initBackend({ prefer: 'cpu' });
  const out = (await tidyData(f)) as Float32Array;
  await tf.setBackend(prev);
  return Float32Array.from(out);
}

describe('backend selection', () => {
  it('an unknown backend name is an error that lists the choices', async () => {
    await assert.rejects(() => initBackend({ prefer: 'cuda' as never }), /unknown backend 'cuda'; choose one of auto, tensorflow, webgpu, wasm, cpu/);
    assert.throws(() => parseBackendPreference('gpu'), /--backend: unknown backend 'gpu'/);
    assert.equal(parseBackendPreference(undefined), 'auto');
  });

  it('auto picks a working backend and says why the earlier ones were passed over', async () => {
    const prev = tf.getBackend();
    const choice = await initBackend({ prefer: 'auto' });
    const order = ['tensorflow', 'webgpu', 'wasm', 'cpu'];
    assert.deepEqual(choice.skipped.map((s) => s.name), order.slice(0, order.indexOf(choice.name)));
    for (const s of choice.skipped) assert.ok(s.reason.length > 10, `reason for ${s.name}: ${s.reason}`);
    await initBackend({ prefer: prev as 'wasm' });
  });

  it('auto passes over the backends in passOver without trying them, with the reason given', async () => {
    const prev = tf.getBackend();
    const choice = await initBackend({ prefer: 'auto', passOver: { tensorflow: 'tried elsewhere', webgpu: 'not here' } });
    assert.deepEqual(choice.skipped.slice(0, 2), [{ name: 'tensorflow', reason: 'tried elsewhere' }, { name: 'webgpu', reason: 'not here' }]);
    assert.equal(choice.name, 'wasm');
    // A named backend is what was asked for: passOver is for auto only.
    assert.equal((await initBackend({ prefer: 'cpu', passOver: { cpu: 'ignored' } })).name, 'cpu');
    await initBackend({ prefer: prev as 'wasm' });
  });
});

describe('vlmargin doctor with the native engine', () => {
  it('prints none of the lines TensorFlow writes while its library loads (absl, oneDNN), and still reports the engine', async function () {
    const dir = nativePackageDir();
    if (!dir || !readSetupStamp(dir)) this.skip();
    this.timeout(300_000);
    const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../pipelines/cli/main.js');
    const env = { ...process.env };
    delete env.TF_CPP_MIN_LOG_LEVEL;
    const r = spawnSync(process.execPath, [main, 'doctor'], { encoding: 'utf8', env, timeout: 280_000 });
    assert.equal(r.status, 0, r.stderr);
    const lines = `${r.stdout}${r.stderr}`.split('\n');
    const native = lines.filter((l) => /absl::InitializeLog|oneDNN|^[IWEF]\d{4} \d\d:\d\d/.test(l));
    assert.deepEqual(native, [], 'TensorFlow start-up lines in doctor\'s output');
    assert.match(r.stdout, /^ {2}ok {2}tensorflow \{"tensorflow":"\d+\.\d+/m);
    assert.match(r.stdout, /^auto chooses: tensorflow$/m);
  });
});

describe('Sum and Mean gradients (device-made ones in the broadcast)', () => {
  it('match hand values over an axis and over all, and differentiate twice (finite differences)', async () => {
    const xv = [1, 2, 3, -4, 5, 0.5];
    // f = Σ_rows (mean of row)²: ∂f/∂x_ij = 2·mean_i / 3.
    const f = (x: tf.Tensor) => tf.sum(tf.square(tf.mean(x, 1)));
    const g = Array.from(await tidyData(() => tf.grad(f)(tf.tensor2d(xv, [2, 3]))));
    const m = [2, 0.5];
    assert.deepEqual(g.map((v) => Math.round(v * 1e6) / 1e6), [0, 0, 0, 1, 1, 1].map((r) => Math.round(((2 * m[r]) / 3) * 1e6) / 1e6));
    // f = (Σ x)² with keepDims through a reshape: ∂f/∂x = 2·Σx everywhere.
    const f2 = (x: tf.Tensor) => tf.square(tf.sum(tf.sum(x, 0, true)));
    const g2 = Array.from(await tidyData(() => tf.grad(f2)(tf.tensor2d(xv, [2, 3]))));
    assert.deepEqual(g2, xv.map(() => 2 * 7.5));
    const x0 = tf.tensor2d(seededUniform(12, 41), [3, 4]);
    const v = tf.tensor2d(seededUniform(12, 42), [3, 4]);
    const f3 = (x: tf.Tensor) => tf.sum(tf.mul(tf.square(tf.mean(tf.square(x), 0)), tf.sum(x, 1, true)));
    const h = await hvpBothWays(f3, x0, v, 1e-2);
    assert.ok(relErr(h.auto, h.fd, 1e-2) < 2e-2, `HVP ${h.auto.slice(0, 3)} vs ${h.fd.slice(0, 3)}`);
    tf.dispose([x0, v]);
  });
});

describe('wasm gradient kernels', function () {
  before(function () {
    if (tf.getBackend() !== 'wasm') this.skip();
  });

  it('UnsortedSegmentSum (the gradient of gather) matches the cpu backend and a hand count', async () => {
    const x = seededUniform(5 * 3, 7);
    const ids = [2, 0, 2, -1, 1];
    const expected = await onCpu(() => tf.unsortedSegmentSum(tf.tensor2d(x, [5, 3]), tf.tensor1d(ids, 'int32'), 4));
    const got = await tidyData(() => tf.unsortedSegmentSum(tf.tensor2d(x, [5, 3]), tf.tensor1d(ids, 'int32'), 4));
    assert.ok(relErr(got, expected, 1e-6) < 1e-6);
    const g = await tidyData(() => tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, tf.tensor1d([0, 1, 1, 3], 'int32'))))(tf.ones([4, 2])));
    assert.deepEqual(Array.from(g), [1, 1, 2, 2, 0, 0, 1, 1]);
  });

  it('Slice (the contiguous-copy stand-in) equals plain indexing for contiguous and strided slices of every dtype', async () => {
    // Expected values by hand-indexing a host array: row-major offsets of the slice's elements.
    const shape = [3, 4, 5];
    const host = Array.from({ length: 60 }, (_, i) => i * 1.5 - 7);
    const cases: [number[], number[]][] = [
      [[1, 0, 0], [2, 4, 5]], // contiguous: whole trailing rows (the fast path)
      [[2, 1, 0], [1, 2, 5]], // contiguous: inside one leading index
      [[0, 1, 2], [3, 2, 2]], // strided: the original kernel
      [[0, 0, 0], [3, 4, 5]],
    ];
    for (const dtype of ['float32', 'int32', 'bool'] as const) {
      const vals = dtype === 'bool' ? host.map((v) => (Math.round(v) % 3 === 0 ? 1 : 0)) : dtype === 'int32' ? host.map(Math.round) : host;
      for (const [begin, size] of cases) {
        const want: number[] = [];
        for (let i = 0; i < size[0]; i++) for (let j = 0; j < size[1]; j++) for (let k = 0; k < size[2]; k++) {
          want.push(vals[(begin[0] + i) * 20 + (begin[1] + j) * 5 + (begin[2] + k)]);
        }
        const got = Array.from(await tidyData(() => tf.slice(tf.tensor(vals, shape, dtype), begin, size)));
        assert.deepEqual(got.map(Number), want.map((v) => (dtype === 'float32' ? Math.fround(v) : v)), `${dtype} begin ${begin} size ${size}`);
      }
    }
    // A 1-D cut of a long vector (the AdamW case), and one after the heap has grown under it.
    const flat = tf.range(0, 3e6, 1, 'float32');
    const big = tf.zeros([64e6 / 4]); // 64 MB: forces a heap growth while `flat` is alive
    const piece = tf.slice(flat, [2999990], [10]);
    assert.deepEqual(Array.from(await piece.data()), Array.from({ length: 10 }, (_, i) => 2999990 + i));
    tf.dispose([flat, big, piece]);
  });

  it('BatchMatMul with transposed operands (the fast wrapper) matches the cpu backend, batched and not', async () => {
    const a = seededUniform(2 * 5 * 3, 4);
    const b = seededUniform(2 * 4 * 5, 5);
    for (const [ta, tb, sa, sb] of [
      [false, true, [2, 3, 5], [2, 4, 5]], [true, false, [2, 5, 3], [2, 5, 4]], [true, true, [2, 5, 3], [2, 4, 5]], [false, false, [2, 3, 5], [2, 5, 4]],
    ] as const) {
      const f = () => tf.matMul(tf.tensor(a, [...sa]), tf.tensor(b, [...sb]), ta, tb);
      const expected = await onCpu(f);
      const got = await tidyData(f);
      assert.ok(relErr(got, expected, 1e-6) < 1e-5, `transposeA=${ta} transposeB=${tb}`);
    }
    const before = tf.memory().numTensors;
    (await tidyData(() => tf.matMul(tf.tensor2d(a.slice(0, 15), [3, 5]), tf.tensor2d(b.slice(0, 20), [4, 5]), false, true)));
    assert.equal(tf.memory().numTensors, before, 'the transposed copies are released');
  });

  for (const [stride, pad] of [[1, 'same'], [2, 'valid'], [2, 'same']] as const) {
    it(`Conv2DBackpropFilter and Conv2DBackpropInput match the cpu backend (stride ${stride}, ${pad})`, async () => {
      const xv = seededUniform(2 * 7 * 6 * 3, 1);
      const wv = seededUniform(3 * 3 * 3 * 4, 2);
      const outH = pad === 'same' ? Math.ceil(7 / stride) : Math.floor((7 - 3) / stride) + 1;
      const outW = pad === 'same' ? Math.ceil(6 / stride) : Math.floor((6 - 3) / stride) + 1;
      const rv = seededUniform(2 * outH * outW * 4, 3);
      const f = () => tf.grad((w: tf.Tensor) => tf.sum(tf.mul(
        tf.conv2d(tf.tensor4d(xv, [2, 7, 6, 3]), w as tf.Tensor4D, stride, pad), tf.tensor4d(rv, [2, outH, outW, 4]))))(tf.tensor4d(wv, [3, 3, 3, 4]));
      const expected = await onCpu(f);
      const got = await tidyData(f);
      assert.ok(relErr(got, expected, 1e-6) < 1e-5, `wasm ${got.slice(0, 4)} vs cpu ${expected.slice(0, 4)}`);
      // The input gradient (Conv2DBackpropInput) through the same convolution.
      const fx = () => tf.grad((x: tf.Tensor) => tf.sum(tf.mul(
        tf.conv2d(x as tf.Tensor4D, tf.tensor4d(wv, [3, 3, 3, 4]), stride, pad), tf.tensor4d(rv, [2, outH, outW, 4]))))(tf.tensor4d(xv, [2, 7, 6, 3]));
      const expectedX = await onCpu(fx);
      const gotX = await tidyData(fx);
      assert.ok(relErr(gotX, expectedX, 1e-6) < 1e-5, `input gradient: wasm ${gotX.slice(0, 4)} vs cpu ${expectedX.slice(0, 4)}`);
      const before = tf.memory().numTensors;
      const buffers = tf.engine().backend.numDataIds();
      await tidyData(fx);
      await tidyData(f);
      assert.equal(tf.memory().numTensors, before, 'the kernels leave no tensor behind');
      assert.equal(tf.engine().backend.numDataIds(), buffers, 'nor a buffer on the wasm heap');
    });
  }
});

describe('native engine: no-op reshape and cast', () => {
  it('a reshape or cast that changes nothing launches no TensorFlow op and keeps its values after the input is freed', async function () {
    const prev = tf.getBackend();
    try {
      await initBackend({ prefer: 'tensorflow' });
    } catch {
      this.skip();
    }
    try {
      const b = tf.backend() as unknown as { executeSingleOutput: (...a: unknown[]) => unknown };
      let launched = 0;
      const original = b.executeSingleOutput;
      b.executeSingleOutput = (...a: unknown[]) => { launched++; return original.apply(b, a); };
      const x = tf.tensor2d([1.5, -2, 3, 4.25, 0, -7], [2, 3]);
      const same = tf.reshape(x, [2, 3]);
      const cast = tf.cast(x, 'float32');
      const noOps = launched;
      const flat = tf.reshape(x, [3, 2]);
      const ints = tf.cast(x, 'int32');
      const ops = launched - noOps;
      delete (b as Partial<typeof b>).executeSingleOutput;
      x.dispose();
      assert.equal(noOps, 0);
      assert.equal(ops, 2);
      assert.deepEqual(Array.from(await same.data()), [1.5, -2, 3, 4.25, 0, -7]);
      assert.deepEqual(Array.from(await cast.data()), [1.5, -2, 3, 4.25, 0, -7]);
      assert.deepEqual(flat.shape, [3, 2]);
      assert.deepEqual(Array.from(await flat.data()), [1.5, -2, 3, 4.25, 0, -7]);
      assert.equal(ints.dtype, 'int32');
      assert.deepEqual(Array.from(await ints.data()), [1, -2, 3, 4, 0, -7]);
      tf.dispose([same, cast, flat, ints]);
    } finally {
      await initBackend({ prefer: prev as 'wasm' });
    }
  });
});
