/** The margin core and every margin loss (docs/DESIGN.md §5). */
export {
  COS_EPS, type RowScale, type MarginSpec, applyMargin, applyMaskedMargin, targetCrossEntropy, multiPositiveCrossEntropy, assertFinite, assertLabels,
} from './core.js';
export { samContrastiveLoss, samMargin, MAX_LOGIT_SCALE, type SamOptions } from './sam.js';
export { marginLogits, combinedMargin, type MarginLogitsOptions } from './combined.js';
export { sphereFaceLogits, sphereFaceLambda, sphereFaceMargin, type SphereFaceOptions } from './sphereface.js';
export {
  sphereFaceRLogits, sphereFaceRLoss, sphereFaceRMargin, sphereFaceRScheduledMargin,
  type SphereFaceROptions, type SphereFaceRLossOptions, type FeatureNormalization, type SphereFaceRVersion,
} from './sphereFaceR.js';
export { sphereFace2Loss, sphereFace2InitBias, type SphereFace2Options, type SphereFace2LossOptions, type SphereFace2Variant } from './sphereFace2.js';
export { kappaMargins, KappaMemory, momentumEncoderUpdate, type KappaOptions, type KappaMemoryOptions, type KappaSource } from './kappaface.js';
export { camriLogits, type CamriOptions } from './camri.js';
export { virtualSoftmaxLoss } from './virtualSoftmax.js';
export { interClassRegularizer, nearestOtherClass } from './regularizer.js';
export { angularMargins, flipProbability, gaussianMechanismSigma, flipRateGap, normalCdf, type GaussianMechanism } from './fairness.js';
export {
  MarginHead, MARGIN_HEAD_NAMES, marginHeadConfigSchema,
  type MarginHeadName, type MarginHeadConfig, type MarginHeadSettings, type MarginHeadLossOptions,
} from './head.js';
