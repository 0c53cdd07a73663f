/** Training: checkpoints and the safetensors format (optimizer, schedules and trainer join here). */
export * from './safetensors.js';
export * from './checkpoint.js';
