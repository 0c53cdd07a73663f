/**
 * `vlmargin setup tensorflow [--wheel FILE] [--gpu] [--dry-run]`: builds the native TensorFlow
 * engine from an official TensorFlow wheel (pipelines/setup/tensorflow.ts says how).
 */
import type { Command } from 'commander';
import { createRequire } from 'node:module';
import path from 'node:path';
import { SetupError, setupTensorflow } from '../setup/tensorflow.js';

/**
 * The directory whose node_modules holds the tfjs-core vlmargin runs on: the addon's package
 * must sit beside it so that both share one tfjs engine.
 */
export function projectRoot(): string {
  const core = createRequire(import.meta.url).resolve('@tensorflow/tfjs-core/package.json');
  const nm = core.slice(0, core.lastIndexOf(`${path.sep}node_modules${path.sep}`));
  return nm;
}

export function register(program: Command): void {
  const setup = program.command('setup').description('set up optional engines (tensorflow)');
  setup.command('tensorflow')
    .description('build the native TensorFlow engine (tfjs-node addon) against an official TensorFlow wheel')
    .option('--wheel <file>', 'a TensorFlow wheel (tensorflow-cpu, or tensorflow with --gpu); default: pip download')
    .option('--gpu', 'the tensorflow wheel and NVIDIA\'s CUDA 12 wheels (cuBLAS, cuDNN 9, …) for NVIDIA GPUs')
    .option('--dry-run', 'check the prerequisites and print the plan; change nothing')
    .action(async (o: { wheel?: string; gpu?: boolean; dryRun?: boolean }) => {
      try {
        await setupTensorflow({ projectRoot: projectRoot(), wheel: o.wheel, gpu: o.gpu, dryRun: o.dryRun, log: (s) => console.log(s) });
      } catch (e) {
        if (!(e instanceof SetupError)) throw e;
        console.error(`setup tensorflow: ${e.message}`);
        process.exitCode = 1;
      }
    });
}
