/** Video: ffprobe, frame sampling, picture transforms and the seeded PRNG they share. */
export { ffmpegBinary, ffprobeBinary, type BinaryInfo } from './binaries.js';
export { ffmpegInput, VideoFileError } from './ffmpeg.js';
export { probeVideo, type VideoInfo } from './probe.js';
export {
  checkSampleOptions, planTimestamps, sampleFrames, sampleItem, sampleMany, SAMPLE_STRATEGIES,
  type SampleItem, type SampleManyResult, type SampleOptions, type SampleOutcome, type SampledFrames, type SampleStrategy,
} from './sampler.js';
export { CLIP_MEAN, CLIP_STD, normalizeFrames, resizeCropFilter } from './transforms.js';
export { createRng, hashSeed, type Rng } from '../util/rng.js';
