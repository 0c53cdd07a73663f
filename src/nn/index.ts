/** Functional layers, the parameter store, the dual encoder and the CLIP weight mapping. */
export * from './params.js';
export * from './layers.js';
export * from './attention.js';
export * from './transformer.js';
export * from './configs.js';
export * from './dualEncoder.js';
export * from './clipMapping.js';
export * from './speakerNet.js';
export * from './lightCnn.js';
