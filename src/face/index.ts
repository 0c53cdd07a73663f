/** Open-set recognition: the synthetic identity benchmark, image folders, pairs files, the image backbone. */
export * from './synthIdentities.js';
export * from './pairs.js';
export * from './imageFolder.js';
export * from './backbone.js';
export * from './verify.js';
export * from './report.js';
export * from './checkpoint.js';
export * from './perturbation.js';
