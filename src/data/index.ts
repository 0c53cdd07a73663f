/** Manifests, dataset readers, the synthetic corpus and meta sets. */
export type { Manifest, ManifestEntry } from './types.js';
export type { ItemError } from '../util/itemError.js';
export { readManifest, writeManifest, resolveInsideRoot, type ReadManifestOptions, type WriteManifestOptions } from './manifest.js';
export {
  CsvParser, readCsvRecords, readMsrvtt, readMsrvtt1kA, readMsrvttSplits, readWebvid, readCsvManifest,
  type CsvRecord, type MsrvttOptions, type WebvidOptions, type CsvManifestOptions,
} from './readers.js';
export {
  generateSynthCorpus, planSynthCorpus, synthManifestEntries, encodeClip, captionFor, conceptsOf, longTailCounts,
  SynthParamsSchema, SYNTH_GENERATOR_VERSION, COLORS as SYNTH_COLORS, OBJECT_SIZES, DIRECTIONS, SPEEDS,
  type SynthParams, type SynthOptions, type SynthResult, type SynthPlan, type SynthClip, type SynthCounts, type Attributes,
} from './synth.js';
export { drawFrame, drawClip, drawBackground, SHAPES, type ClipSpec, type Shape } from './synthDraw.js';
export {
  drawMetaSet, readMetaSet, loadDefaultMetaSet, drawRecipePath, DEFAULT_META_SET_DIR,
  type MetaSetOptions, type MetaSetDraw, type ReadMetaSetOptions,
} from './metaSet.js';
export {
  buildFrameCache, openFrameCache, type BuildFrameCacheOptions, type FrameCacheSummary, type FrameCacheProgress,
  type FrameCache, type FrameCacheConfig, type CachedClip, type CachedClipMeta,
} from './frameCache.js';
export {
  BatchLoader, encodeCaptions, type CaptionTable, type CaptionEncoder, type LoaderState, type BatchLoaderOptions, type Batch,
} from './loader.js';
export { scanVoxCeleb, parseTrials, readTrials, AUDIO_EXTENSIONS, type SpeakerUtterance, type VoxCelebScan, type Trial } from './voxceleb.js';
export { parseAsvspoofProtocol, readAsvspoofProtocol, asvspoofAudioPath, type SpoofTrial } from './asvspoof.js';
export { generateSynthSpeakers, generateSynthSpoof, type SynthSpeakerOptions, type SynthSpoofOptions } from './synthSpeech.js';
