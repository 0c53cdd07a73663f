/**
 * Where the native TensorFlow engine lives and what `vlmargin setup tensorflow` recorded about
 * it. The engine is `@tensorflow/tfjs-node-gpu`'s addon built against the C library of an
 * official TensorFlow wheel; the setup writes a stamp beside the libraries, and the backend
 * reads it to say where the library came from.
 *
 * @example
 * const dir = nativePackageDir();              // null until the package is installed
 * const stamp = dir ? readSetupStamp(dir) : null;
 * console.log(stamp?.tensorflow, stamp?.wheel.file); // '2.21.0', 'tensorflow_cpu-2.21.0-…whl'
 */
import { createRequire } from 'node:module';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

export const NATIVE_PACKAGE = '@tensorflow/tfjs-node-gpu';

/** The stamp's path inside the package directory (removed with deps/ when the package is reinstalled). */
export const SETUP_STAMP = path.join('deps', 'vlmargin-setup.json');

/** What a successful setup recorded. */
export interface NativeSetupStamp {
  /** TensorFlow's version as the loaded library reports it (TF_Version). */
  tensorflow: string;
  variant: 'cpu' | 'gpu';
  wheel: { file: string; sha256: string; bytes: number; source: 'pip' | 'file' };
  /** The addon, relative to the package directory. */
  addon: string;
  /** Node's version and N-API version the addon was built for. */
  node: string;
  napi: number;
  builtAt: string;
  /** GPU variant: the NVIDIA library directories (relative to the package) and the sonames linked. */
  cuda?: { dirs: string[]; libraries: string[] };
  /** Bytes under deps/, lib/ and build/ after the setup. */
  diskBytes: number;
}

const require = createRequire(import.meta.url);

/** The installed package's directory, or null when npm left it out. */
export function nativePackageDir(): string | null {
  try {
    return path.dirname(require.resolve(`${NATIVE_PACKAGE}/package.json`));
  } catch {
    return null;
  }
}

/** The setup stamp in `dir`, or null when there is none or it cannot be read. */
export function readSetupStamp(dir: string): NativeSetupStamp | null {
  const file = path.join(dir, SETUP_STAMP);
  if (!existsSync(file)) return null;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as NativeSetupStamp;
  } catch {
    return null;
  }
}

/** The addon files present under the package's lib/ (any N-API version), relative to `dir`. */
export function builtAddons(dir: string): string[] {
  const lib = path.join(dir, 'lib');
  if (!existsSync(lib)) return [];
  return readdirSync(lib)
    .filter((d) => /^napi-v\d+$/.test(d) && existsSync(path.join(lib, d, 'tfjs_binding.node')))
    .map((d) => path.join('lib', d, 'tfjs_binding.node'));
}
