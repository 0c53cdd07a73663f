/** The seeded generators live in src/util/rng.ts; re-exported for the video and data code. */
export * from '../util/rng.js';
