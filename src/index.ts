/** vlmargin: the public API. */
export * from './backend/index.js';
