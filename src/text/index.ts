/** Text side: loading Hugging Face tokenizer folders and building one from captions. */
export { loadTokenizer, type Tokenizer, type EncodedBatch } from './tokenizer.js';
export {
  buildTokenizer, tokenizerKey, trainSubwords,
  type BuildTokenizerOptions, type BuildTokenizerResult, type SubwordTrainOptions, type SubwordVocab, type TokenizerKind,
} from './buildTokenizer.js';
