/** Training: optimizers, schedules, gradient utilities, logging, checkpoints and the safetensors format. */
export * from './safetensors.js';
export * from './checkpoint.js';
export * from './optimizer.js';
export * from './schedule.js';
export * from './gradients.js';
export * from './logger.js';
export * from './clipExport.js';
export * from './collapse.js';
export * from './tensorboard.js';
