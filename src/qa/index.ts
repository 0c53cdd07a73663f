/** Video question answering: the synthetic QA set and the QA heads on the dual encoder. */
export * from './synthQa.js';
export * from './qaModel.js';
