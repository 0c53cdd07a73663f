/** Meta-learned sample weighting: the weight net, the Meta-Weight-Net and L2RW steps, meta batches, analysis. */
export { WeightNet, WEIGHT_NET_PARAM_NAMES, WEIGHTING_INPUTS, checkWeightingInputs, type WeightingInput, type WeightNetOptions } from './weightNet.js';
export { weightingInputs, needsSimilarities, type WeightingInputSources } from './weightingInputs.js';
export {
  mwnStep, metaGradient, normalizeWeights, isMetaStep,
  type MetaModel, type MetaScope, type WeightNormalization, type WeightedStepResult, type MwnStepResult,
  type MetaGradientOptions, type MwnStepOptions,
} from './metaStep.js';
export { l2rwStep, l2rwScores, l2rwWeights, type L2rwOptions, type L2rwStepResult } from './l2rw.js';
export { MetaBatchCycler, type MetaCyclerState, type MetaBatchCyclerOptions } from './metaBatches.js';
export { auroc, weightingReport, weightCurve, inputAurocs, weightByInput, type WeightingReport } from './analysis.js';
export { dualEncoderMetaModel, type DualEncoderBatch, type DualEncoderMetaModelOptions } from './dualEncoderModel.js';
