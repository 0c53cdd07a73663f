/** vlmargin: the public API. */
export * from './backend/index.js';
export * from './train/index.js';
export * from './text/index.js';
export * from './eval/index.js';
export * from './nn/index.js';
export * from './video/index.js';
export * from './audio/index.js';
export * from './data/index.js';
export * from './meta/index.js';
export * from './margin/index.js';
export * from './face/index.js';
export * from './qa/index.js';
