/** Evaluation metrics: retrieval, verification, classification. */
export * from './retrieval.js';
export * from './verification.js';
export * from './classification.js';
export * from './plot.js';
export * from './embeddingCache.js';
export * from './retrievalEval.js';
export * from './attributeProbe.js';
