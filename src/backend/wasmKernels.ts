/**
 * Gradient kernels that `@tensorflow/tfjs-backend-wasm` 4.x does not ship, written in JS
 * over the backend's heap, and two faster stand-ins (matMul with transpose flags, contiguous
 * slices). `UnsortedSegmentSum` is the gradient of every `gather` (so of
 * every embedding lookup); `Conv2DBackpropFilter` is the filter gradient of `conv2d`, and
 * `Conv2DBackpropInput` (its input gradient) replaces wasm's own, both as im2col and a matmul.
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

interface ConvAttrs {
  strides: [number, number] | number; pad: 'valid' | 'same' | number;
  dataFormat: 'NHWC' | 'NCHW'; dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/**
 * For each output position (rows N·oH·oW) and filter tap (fh·fw), the offset in x of the input
 * pixel the tap reads (its first channel), or −1 where the tap falls in the padding: the one
 * index map that im2col gathers through and col2im scatters through.
 */
function tapOffsets(info: tf.backend_util.Conv2DInfo): Int32Array {
  const { strideHeight, strideWidth, filterHeight, filterWidth, batchSize, inHeight, inWidth, inChannels, outHeight, outWidth } = info;
  const taps = filterHeight * filterWidth;
  const out = new Int32Array(batchSize * outHeight * outWidth * taps).fill(-1);
  let o = 0;
  for (let n = 0; n < batchSize; n++) {
    for (let yR = 0; yR < outHeight; yR++) {
      for (let yC = 0; yC < outWidth; yC++, o += taps) {
        for (let wR = 0; wR < filterHeight; wR++) {
          const xR = yR * strideHeight - info.padInfo.top + wR;
          if (xR < 0 || xR >= inHeight) continue;
          for (let wC = 0; wC < filterWidth; wC++) {
            const xC = yC * strideWidth - info.padInfo.left + wC;
            if (xC >= 0 && xC < inWidth) out[o + wR * filterWidth + wC] = ((n * inHeight + xR) * inWidth + xC) * inChannels;
          }
        }
      }
    }
  }
  return out;
}

/** Rows N·oH·oW, columns fh·fw·Cin: each output position's receptive field (zeros outside). */
function im2col(xv: ArrayLike<number>, info: tf.backend_util.Conv2DInfo, offsets: Int32Array): Float32Array {
  const c = info.inChannels;
  const cols = new Float32Array(offsets.length * c);
  for (let t = 0; t < offsets.length; t++) {
    const src = offsets[t];
    if (src < 0) continue;
    const dst = t * c;
    for (let k = 0; k < c; k++) cols[dst + k] = xv[src + k];
  }
  return cols;
}

/**
 * a·b (flags as BatchMatMul's) of two rank-2 views of backend buffers, on the backend's own
 * matmul kernel; returns the product as host data.
 */
function backendMatMul(backend: unknown, a: tf.TensorInfo, aShape: [number, number], b: tf.TensorInfo, bShape: [number, number], transposeA: boolean, transposeB: boolean): Float32Array {
  const w = backend as WasmLike & { disposeData(id: object): void };
  const kernel = tf.getKernel('BatchMatMul', 'wasm')!.kernelFunc;
  const view = (t: tf.TensorInfo, shape: [number, number]): tf.TensorInfo => ({ dataId: t.dataId, shape: [1, ...shape], dtype: 'float32' });
  const out = kernel({ inputs: { a: view(a, aShape), b: view(b, bShape) }, backend: backend as tf.KernelBackend, attrs: { transposeA, transposeB } }) as tf.TensorInfo;
  const data = Float32Array.from(read(w, out));
  w.disposeData(out.dataId);
  return data;
}

function convInfo(xShape: number[], filterShape: number[], a: ConvAttrs, what: string): tf.backend_util.Conv2DInfo {
  if (a.dataFormat === 'NCHW') throw new Error(`vlmargin wasm ${what}: only NHWC is supported`);
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number], filterShape as [number, number, number, number], a.strides, 1, a.pad, a.dimRoundingMode, false, 'channelsLast');
}

/**
 * dW = im2col(x)ᵀ · dy: the receptive fields gathered in JS, the product on the backend's
 * matmul (a loop over every output position, tap and channel pair took 117 and 283 ms for the
 * video stem's two convolutions at batch 32 × 4 frames).
 */
function conv2DBackpropFilter({ inputs, backend, attrs }: {
  inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const b = backend as WasmLike;
  const x = inputs.x as tf.TensorInfo;
  const dy = inputs.dy as tf.TensorInfo;
  const a = attrs as unknown as ConvAttrs & { filterShape: [number, number, number, number] };
  const info = convInfo(x.shape, a.filterShape, a, 'Conv2DBackpropFilter');
  const rows = info.batchSize * info.outHeight * info.outWidth;
  const k = info.filterHeight * info.filterWidth * info.inChannels;
  const cols = b.makeOutput([rows, k], 'float32', undefined, im2col(read(b, x), info, tapOffsets(info)));
  const dw = backendMatMul(backend, cols, [rows, k], dy, [rows, info.outChannels], true, false);
  (backend as { disposeData(id: object): void }).disposeData(cols.dataId);
  return b.makeOutput([...a.filterShape], x.dtype, undefined, dw);
}

/**
 * dX = col2im(dy · Wᵀ): the product on the backend's matmul, the scatter of each receptive
 * field's gradient back onto the input in JS (wasm's own kernel took 105 ms for the stem's
 * second convolution).
 */
function conv2DBackpropInput({ inputs, backend, attrs }: {
  inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const b = backend as WasmLike;
  const dy = inputs.dy as tf.TensorInfo;
  const filter = inputs.filter as tf.TensorInfo;
  const a = attrs as unknown as ConvAttrs & { inputShape: [number, number, number, number] };
  const info = convInfo(a.inputShape, filter.shape, a, 'Conv2DBackpropInput');
  const { filterHeight, filterWidth, batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = info;
  const rows = batchSize * outHeight * outWidth;
  const k = filterHeight * filterWidth * inChannels;
  // dCols [rows, k] = dy [rows, Cout] · Wᵀ, with W viewed as [k, Cout]; both stay on the heap.
  const dCols = backendMatMul(backend, dy, [rows, outChannels], filter, [k, outChannels], false, true);
  const dx = new Float32Array(batchSize * inHeight * inWidth * inChannels);
  const offsets = tapOffsets(info);
  for (let t = 0; t < offsets.length; t++) {
    const dst = offsets[t];
    if (dst < 0) continue;
    const src = t * inChannels;
    for (let c = 0; c < inChannels; c++) dx[dst + c] += dCols[src + c];
  }
  return b.makeOutput([...a.inputShape], dy.dtype, undefined, dx);
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
  if (tf.getKernel('Conv2DBackpropInput', 'wasm')) tf.unregisterKernel('Conv2DBackpropInput', 'wasm');
  tf.registerKernel({ kernelName: 'Conv2DBackpropInput', backendName: 'wasm', kernelFunc: conv2DBackpropInput as tf.KernelFunc });
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
