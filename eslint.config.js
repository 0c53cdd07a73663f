// One lint config for the whole repository: TypeScript rules, a few formatting rules, and the
// import direction of docs/DESIGN.md §2 (pipelines → upper library → lower library → base).
import tseslint from 'typescript-eslint';
import stylistic from '@stylistic/eslint-plugin';

const UPPER = ['meta', 'train', 'eval', 'face', 'qa'];
const LOWER = ['data', 'nn', 'margin', 'text', 'video', 'audio'];
const BASE = ['backend', 'util'];
const OUTSIDE_SRC = ['pipelines', 'bench', 'tools', 'experiments', 'examples', 'test'];

/** `from '../x/…'` (or deeper) for any folder x in `dirs`. */
const into = (dirs, message) => ({ regex: `^(\\.\\./)+(${dirs.join('|')})/`, message });

const srcCommon = [
  into(OUTSIDE_SRC, 'src/ is the library: it never imports the application layer, benchmarks, tools or tests.'),
];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.gpu-bundle/**', 'runs/**', 'data/**', 'scratch/**'] },
  ...tseslint.configs.recommended,
  {
    plugins: { '@stylistic': stylistic },
    rules: {
      '@stylistic/semi': ['error', 'always'],
      '@stylistic/quotes': ['error', 'single', { avoidEscape: true, allowTemplateLiterals: 'always' }],
      '@stylistic/no-trailing-spaces': 'error',
      '@stylistic/eol-last': 'error',
      '@stylistic/no-tabs': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', destructuredArrayIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
    },
  },
  {
    // Synchronous reads throw on webgpu in Node: the library and its tests read once, asynchronously.
    rules: {
      'no-restricted-properties': ['error', ...['dataSync', 'arraySync', 'bufferSync'].map((property) => ({
        property, message: 'read tensors asynchronously (await t.data(), t.array(), t.buffer()): synchronous reads throw on webgpu.',
      }))],
    },
  },
  {
    files: ['src/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { paths: [{ name: 'commander', message: 'src/ never parses flags: the command line lives in pipelines/cli.' }], patterns: srcCommon }],
      'no-restricted-syntax': ['error', { selector: "MemberExpression[object.name='process'][property.name='argv']", message: 'src/ never reads process.argv: the command line lives in pipelines/cli.' }],
    },
  },
  {
    files: LOWER.map((d) => `src/${d}/**/*.ts`),
    rules: {
      'no-restricted-imports': ['error', { patterns: [...srcCommon, into(UPPER, `the lower library (${LOWER.join(', ')}) never imports the upper one (${UPPER.join(', ')}).`)] }],
    },
  },
  {
    files: BASE.map((d) => `src/${d}/**/*.ts`),
    rules: {
      'no-restricted-imports': ['error', { patterns: [...srcCommon, into([...UPPER, ...LOWER], `the base (${BASE.join(', ')}) imports no other part of the library.`)] }],
    },
  },
  {
    files: ['pipelines/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [into(['bench', 'tools', 'experiments', 'examples', 'test'], 'pipelines/ holds the jobs and the command; it never imports benchmarks, tools, experiments or tests.')] }],
    },
  },
);
