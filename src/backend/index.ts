export { tf } from './tf.js';
export * from './init.js';
export { registerWasmKernels } from './wasmKernels.js';
export * as ops from './safeOps.js';
export { matMul, matMulFlagged } from './matMul.js';
export { assertNoWebGPUErrors, checkBindingSizes, installWebGPUGuards, webgpuCounters } from './webgpuGuard.js';
export { NATIVE_PACKAGE, nativePackageDir, readSetupStamp, builtAddons, type NativeSetupStamp } from './native.js';
