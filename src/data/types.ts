import type { ItemError } from '../util/itemError.js';

/**
 * One video-text item as every reader (native JSONL, MSR-VTT, WebVid, CSV) returns it.
 * `video` is an absolute path after resolution; `captions` has at least one entry.
 */
export interface ManifestEntry {
  id: string;
  video: string;
  captions: string[];
  start?: number;
  end?: number;
  concepts?: string[];
  split?: string;
  /**
   * Where each caption came from, parallel to `captions` (`human`, or e.g. `generated` by a
   * vision-language model); absent when every caption is human.
   */
  captionSources?: string[];
  /** Analysis only (synthetic corpora): the pair is known to be misaligned. Training never reads it. */
  noisy?: boolean;
  /** Analysis only: how a noisy pair is misaligned (synthetic corpora: `swap` or `attribute`), for per-kind reports. */
  noiseKind?: string;
}

export interface Manifest {
  /** The manifest file (or folder) the entries came from. */
  path: string;
  /** The folder relative video paths resolve against. */
  root: string;
  entries: ManifestEntry[];
  errors: ItemError[];
}
