import assert from 'node:assert/strict';
import { describeAdapter } from '../src/backend/init.js';
import { assertNoWebGPUErrors, checkBindingSizes, installWebGPUGuards, webgpuCounters } from '../src/backend/webgpuGuard.js';

// The webgpu backend cannot start on CI (no adapter); these tests drive the guard through a
// stand-in with the same members tfjs-backend-webgpu's WebGPUBackend has.
function fakeBackend(limit: number) {
  const calls: string[] = [];
  const backend = {
    device: { limits: { maxStorageBufferBindingSize: limit } } as { limits: { maxStorageBufferBindingSize: number }; onuncapturederror?: (ev: unknown) => void },
    pipelineCache: {} as Record<string, unknown>,
    runWebGPUProgram(program: { outputShape: number[]; key: string }, _inputs: unknown[], _dtype: string) {
      calls.push(program.key);
      if (!(program.key in this.pipelineCache)) this.pipelineCache[program.key] = { compiled: program.key };
      return { shape: program.outputShape };
    },
  };
  return { backend, calls };
}

class AddProgram { constructor(public outputShape: number[], public key: string) {} }

describe('webgpu guards', () => {
  it('a binding over maxStorageBufferBindingSize is an error naming the program, shape and limit', () => {
    // 256 × 197 × 3072 float32 = 619,708,416 bytes: base's MLP hidden layer at batch 256, one frame.
    const big = { shape: [256, 197, 3072], dtype: 'float32' };
    assert.throws(() => checkBindingSizes('MatMulPackedProgram', [big], [], 2 ** 27),
      /MatMulPackedProgram output has shape \[256, 197, 3072\] \(float32, 591\.0 MiB\).*maxStorageBufferBindingSize 128\.0 MiB/);
    assert.throws(() => checkBindingSizes('BinaryOpProgram', [{ shape: [4], dtype: 'float32' }], [{ shape: [4], dtype: 'float32' }, big], 2 ** 27),
      /BinaryOpProgram input 1 has shape/);
    // Exactly at the limit is allowed: 2^25 float32 elements = 2^27 bytes; bool is stored as int32.
    checkBindingSizes('FillProgram', [{ shape: [2 ** 25], dtype: 'float32' }], [], 2 ** 27);
    assert.throws(() => checkBindingSizes('FillProgram', [{ shape: [2 ** 25 + 1], dtype: 'bool' }], [], 2 ** 27), /FillProgram output/);
    checkBindingSizes('FillProgram', [big], [], 0); // no known limit: nothing to check
  });

  it('the wrapped runner checks sizes before dispatch and counts dispatches and new shaders', () => {
    const { backend, calls } = fakeBackend(1000);
    installWebGPUGuards(backend);
    installWebGPUGuards(backend); // idempotent: one wrapper
    const c0 = webgpuCounters();
    backend.runWebGPUProgram(new AddProgram([10], 'add-10'), [{ shape: [10], dtype: 'float32' }], 'float32');
    backend.runWebGPUProgram(new AddProgram([10], 'add-10'), [{ shape: [10], dtype: 'float32' }], 'float32');
    backend.runWebGPUProgram(new AddProgram([20], 'add-20'), [{ shape: [20], dtype: 'float32' }], 'float32');
    assert.throws(() => backend.runWebGPUProgram(new AddProgram([251], 'add-251'), [], 'float32'), /AddProgram output has shape \[251\]/);
    const c1 = webgpuCounters();
    assert.deepEqual(calls, ['add-10', 'add-10', 'add-20'], 'the oversized program never reached the GPU');
    assert.equal(c1.dispatches - c0.dispatches, 3);
    assert.equal(c1.compiles - c0.compiles, 2, 'two distinct shader keys');
  });

  it('an uncaptured device error becomes an exception at the next check, once', () => {
    const { backend } = fakeBackend(1000);
    installWebGPUGuards(backend);
    assertNoWebGPUErrors('nothing yet');
    backend.device.onuncapturederror!({ error: { message: 'Binding size (160000000) is larger than the maximum\n - While validating' } });
    backend.device.onuncapturederror!({ error: { message: '[Invalid BindGroup] is invalid due to a previous error.' } });
    assert.throws(() => assertNoWebGPUErrors('training step 7'),
      /during training step 7, so its results are wrong: Binding size \(160000000\) is larger than the maximum \(and 1 more\)$/);
    assertNoWebGPUErrors('after the report'); // cleared
  });

  it('describeAdapter reads GPUAdapterInfo getters, the limits tfjs asks for and the features', () => {
    // Dawn's GPUAdapterInfo keeps its fields as getters on the prototype: a spread gives {}.
    class Info { get vendor() { return 'nvidia'; } get architecture() { return 'hopper'; } get device() { return ''; } get description() { return 'NVIDIA H100'; } get isFallbackAdapter() { return false; } }
    const info = new Info();
    assert.deepEqual({ ...info }, {});
    const d = describeAdapter({
      info,
      limits: { maxStorageBufferBindingSize: 2 ** 31, maxBufferSize: 2 ** 32, maxStorageBuffersPerShaderStage: 8, unrelated: 1 },
      features: new Set(['timestamp-query', 'shader-f16']),
    });
    assert.deepEqual(d, {
      vendor: 'nvidia', architecture: 'hopper', description: 'NVIDIA H100', isFallbackAdapter: false,
      limits: { maxStorageBufferBindingSize: 2 ** 31, maxBufferSize: 2 ** 32, maxStorageBuffersPerShaderStage: 8 },
      features: ['shader-f16', 'timestamp-query'],
    });
  });
});
