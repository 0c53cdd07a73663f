/** Audio: decoding to 16 kHz mono PCM, WAV writing, spectral features, synthetic speech (docs/DESIGN.md §11). */
export * from './decode.js';
export * from './features.js';
export * from './synthSpeech.js';
