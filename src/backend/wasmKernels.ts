/**
 * Gradient kernels that `@tensorflow/tfjs-backend-wasm` 4.x does not ship, written in JS
 * over the backend's heap, and two faster stand-ins (matMul with transpose flags, contiguous
 * slices). `UnsortedSegmentSum` is the gradient of every `gather` (so of
 * every embedding lookup); `Conv2DBackpropFilter` is the filter gradient of `conv2d`.
 * Both are checked against the cpu backend in test/backend.test.ts.
 */
import { tf } from './tf.js';

type TypedArray = Float32Array | Int32Array | Uint8Array;

interface WasmLike {
  readSync(dataId: object): unknown;
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: TypedArray): tf.TensorInfo;
}

function read(backend: WasmLike, t: tf.TensorInfo): Float32Array | Int32Array {
  return backend.readSync(t.dataId) as Float32Array | Int32Array;
}

function unsortedSegmentSum({ inputs, backend, attrs }: {
  inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const b = backend as WasmLike;
  const x = inputs.x as tf.TensorInfo;
  const ids = inputs.segmentIds as tf.TensorInfo;
  const numSegments = (attrs as unknown as { numSegments: number }).numSegments;
  const idsShape = ids.shape;
  const idCount = idsShape.reduce((a, c) => a * c, 1);
  const inner = x.shape.slice(idsShape.length).reduce((a, c) => a * c, 1);
  const xv = read(b, x);
  const iv = read(b, ids);
  const out = x.dtype === 'int32' ? new Int32Array(numSegments * inner) : new Float32Array(numSegments * inner);
  for (let r = 0; r < idCount; r++) {
    const s = iv[r];
    if (s < 0 || s >= numSegments) continue; // TF drops out-of-range ids
    const src = r * inner;
    const dst = s * inner;
    for (let k = 0; k < inner; k++) out[dst + k] += xv[src + k];
  }
  return b.makeOutput([numSegments, ...x.shape.slice(idsShape.length)], x.dtype, undefined, out);
}

function conv2DBackpropFilter({ inputs, backend, attrs }: {
  inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const b = backend as WasmLike;
  const x = inputs.x as tf.TensorInfo;
  const dy = inputs.dy as tf.TensorInfo;
  const a = attrs as unknown as {
    strides: [number, number] | number; pad: 'valid' | 'same' | number;
    dataFormat: 'NHWC' | 'NCHW'; dimRoundingMode?: 'floor' | 'round' | 'ceil';
    filterShape: [number, number, number, number];
  };
  if (a.dataFormat === 'NCHW') throw new Error('vlmargin wasm Conv2DBackpropFilter: only NHWC is supported');
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number], a.filterShape, a.strides, 1, a.pad, a.dimRoundingMode, false, 'channelsLast');
  const { strideHeight, strideWidth, filterHeight, filterWidth, batchSize, inHeight, inWidth, inChannels,
    outHeight, outWidth, outChannels } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  const xv = read(b, x);
  const dyv = read(b, dy);
  const dw = new Float32Array(filterHeight * filterWidth * inChannels * outChannels);
  for (let n = 0; n < batchSize; n++) {
    for (let yR = 0; yR < outHeight; yR++) {
      for (let yC = 0; yC < outWidth; yC++) {
        const dyBase = ((n * outHeight + yR) * outWidth + yC) * outChannels;
        for (let wR = 0; wR < filterHeight; wR++) {
          const xR = yR * strideHeight - padTop + wR;
          if (xR < 0 || xR >= inHeight) continue;
          for (let wC = 0; wC < filterWidth; wC++) {
            const xC = yC * strideWidth - padLeft + wC;
            if (xC < 0 || xC >= inWidth) continue;
            const xBase = ((n * inHeight + xR) * inWidth + xC) * inChannels;
            const wBase = (wR * filterWidth + wC) * inChannels * outChannels;
            for (let d1 = 0; d1 < inChannels; d1++) {
              const xval = xv[xBase + d1];
              const o = wBase + d1 * outChannels;
              for (let d2 = 0; d2 < outChannels; d2++) dw[o + d2] += xval * dyv[dyBase + d2];
            }
          }
        }
      }
    }
  }
  return b.makeOutput([...a.filterShape], x.dtype, undefined, dw);
}

/**
 * tfjs-backend-wasm 4.22's BatchMatMul reads a transposed operand with strided access:
 * measured here, a 256×512·512×256 product takes 163 ms with `transposeB` and 11 ms after an
 * explicit Transpose (460 vs 44 ms for `transposeA`). Every matMul gradient uses a transposed
 * operand, so the whole backward pass paid it. The wrapper transposes first, then multiplies.
 */
function fastTransposeMatMul(original: tf.KernelFunc, transpose: tf.KernelFunc): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const a0 = inputs.a as tf.TensorInfo;
    const b0 = inputs.b as tf.TensorInfo;
    const at = attrs as unknown as { transposeA: boolean; transposeB: boolean };
    if (!at.transposeA && !at.transposeB) return original({ inputs, backend, attrs });
    const b = backend as unknown as { disposeData(id: object): void };
    const swapLast = (t: tf.TensorInfo): tf.TensorInfo => {
      const perm = t.shape.map((_, i) => i);
      perm[perm.length - 1] = perm.length - 2;
      perm[perm.length - 2] = perm.length - 1;
      return transpose({ inputs: { x: t }, backend, attrs: { perm } }) as tf.TensorInfo;
    };
    const a = at.transposeA ? swapLast(a0) : a0;
    const bb = at.transposeB ? swapLast(b0) : b0;
    const out = original({ inputs: { ...inputs, a, b: bb }, backend, attrs: { ...attrs, transposeA: false, transposeB: false } });
    if (a !== a0) b.disposeData(a.dataId);
    if (bb !== b0) b.disposeData(bb.dataId);
    return out;
  };
}

interface WasmHeap {
  dataIdMap: { get(id: object): { memoryOffset: number } | undefined };
  wasm: { HEAPU8: Uint8Array };
}

/**
 * tfjs-backend-wasm's Slice reads its input with `readSync`, which copies the whole buffer
 * out of the heap before taking the piece: cutting a 12 M-float vector into 158 parameters
 * took 1.2 s (the multi-tensor AdamW does exactly that). A contiguous slice (every leading
 * axis of size 1 in the slice, as in a slice of a flat vector or along the first axis) is
 * copied here straight from a view of the heap; any other slice goes to the original kernel.
 */
function contiguousSlice(original: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const x = args.inputs.x as tf.TensorInfo;
    const { begin, size } = args.attrs as unknown as { begin: number | number[]; size: number | number[] };
    const [begin_, size_] = tf.slice_util.parseSliceParams(x as unknown as tf.Tensor, begin, size);
    const b = args.backend as unknown as WasmLike & WasmHeap;
    if (x.dtype === 'string' || x.dtype === 'complex64' || !b.dataIdMap || !b.wasm?.HEAPU8
      || !tf.slice_util.isSliceContinous(x.shape, begin_, size_)) return original(args);
    const per = tf.util.bytesPerElement(x.dtype);
    const offset = tf.slice_util.computeFlatOffset(begin_, tf.util.computeStrides(x.shape));
    const n = size_.reduce((a, c) => a * c, 1);
    const out = b.makeOutput(size_, x.dtype);
    // Offsets are read after the allocation, which may have grown (and moved) the heap.
    const from = b.dataIdMap.get(x.dataId)!.memoryOffset + offset * per;
    b.wasm.HEAPU8.copyWithin(b.dataIdMap.get(out.dataId)!.memoryOffset, from, from + n * per);
    return out;
  };
}

let registered = false;

/** Registers the missing kernels for the `wasm` backend (idempotent). */
export function registerWasmKernels(): void {
  if (registered) return;
  registered = true;
  if (!tf.getKernel('UnsortedSegmentSum', 'wasm')) {
    tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: unsortedSegmentSum as tf.KernelFunc });
  }
  if (!tf.getKernel('Conv2DBackpropFilter', 'wasm')) {
    tf.registerKernel({ kernelName: 'Conv2DBackpropFilter', backendName: 'wasm', kernelFunc: conv2DBackpropFilter as tf.KernelFunc });
  }
  const slice = tf.getKernel('Slice', 'wasm');
  if (slice) {
    tf.unregisterKernel('Slice', 'wasm');
    tf.registerKernel({ ...slice, kernelFunc: contiguousSlice(slice.kernelFunc) });
  }
  for (const name of ['BatchMatMul', '_FusedMatMul']) {
    const mm = tf.getKernel(name, 'wasm');
    const tr = tf.getKernel('Transpose', 'wasm');
    if (mm && tr) {
      tf.unregisterKernel(name, 'wasm');
      tf.registerKernel({ ...mm, kernelFunc: fastTransposeMatMul(mm.kernelFunc, tr.kernelFunc) });
    }
  }
}
