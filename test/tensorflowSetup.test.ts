/**
 * The pieces of `vlmargin setup tensorflow` that read other programs' formats: wheel file names
 * (PEP 427), a wheel's METADATA (lines copied from tensorflow_cpu-2.21.0's), TensorFlow's log
 * lines about devices, and the thread-count argument.
 */
import assert from 'node:assert/strict';
import { CUDA_LIBRARIES, parseTfLog, parseWheelMetadata, parseWheelName, probeFailure } from '../pipelines/setup/tensorflow.js';
import { parseThreads } from '../src/backend/init.js';

describe('setup tensorflow: formats it reads', () => {
  it('wheel names give project and version; other names are refused', () => {
    assert.deepEqual(parseWheelName('/x/tensorflow_cpu-2.21.0-cp311-cp311-manylinux_2_27_x86_64.whl'), { project: 'tensorflow_cpu', version: '2.21.0' });
    assert.deepEqual(parseWheelName('tensorflow-2.21.0rc1-cp312-cp312-manylinux_2_27_x86_64.whl'), { project: 'tensorflow', version: '2.21.0rc1' });
    assert.deepEqual(parseWheelName('nvidia_cudnn_cu12-9.3.0.75-py3-none-manylinux2014_x86_64.whl'), { project: 'nvidia_cudnn_cu12', version: '9.3.0.75' });
    assert.equal(parseWheelName('package.json'), null);
    assert.equal(parseWheelName('tensorflow-2.21.0.tar.gz'), null);
  });

  it('METADATA: name, version and the and-cuda requirements, other extras left out', () => {
    const meta = [
      'Metadata-Version: 2.1', 'Name: tensorflow_cpu', 'Version: 2.21.0',
      'Requires-Dist: absl-py>=1.0.0',
      'Provides-Extra: and-cuda',
      'Requires-Dist: nvidia-cublas-cu12<13.0,>=12.5.3.2; extra == "and-cuda"',
      'Requires-Dist: nvidia-cudnn-cu12<10.0,>=9.3.0.75; extra == "and-cuda"',
      'Requires-Dist: nvidia-nvjitlink-cu12<13.0,>=12.5.82; extra == "and-cuda"',
      'Provides-Extra: gcs-filesystem',
      'Requires-Dist: tensorflow-io-gcs-filesystem>=0.23.1; (sys_platform != "win32" and python_version < "3.13") and extra == "gcs-filesystem"',
      '', 'long description mentioning Requires-Dist: nothing',
    ].join('\n');
    assert.deepEqual(parseWheelMetadata(meta), {
      name: 'tensorflow_cpu', version: '2.21.0',
      andCuda: ['nvidia-cublas-cu12<13.0,>=12.5.3.2', 'nvidia-cudnn-cu12<10.0,>=9.3.0.75', 'nvidia-nvjitlink-cu12<13.0,>=12.5.82'],
    });
  });

  it('the CUDA libraries come from nine NVIDIA cu12 wheels, cuDNN 9 among them', () => {
    assert.deepEqual(CUDA_LIBRARIES.map((c) => c.wheel).sort(), [
      'nvidia-cublas-cu12', 'nvidia-cuda-nvrtc-cu12', 'nvidia-cuda-runtime-cu12', 'nvidia-cudnn-cu12', 'nvidia-cufft-cu12',
      'nvidia-curand-cu12', 'nvidia-cusolver-cu12', 'nvidia-cusparse-cu12', 'nvidia-nvjitlink-cu12',
    ]);
    assert.ok(CUDA_LIBRARIES.find((c) => c.dir === 'cudnn')?.sonames.includes('libcudnn.so.9'));
  });

  it('TensorFlow log lines: GPU devices with name and memory, libraries it could not open', () => {
    const log = [
      'I0000 00:00:1796415772.602889   12341 port.cc:153] oneDNN custom operations are on.',
      'I0000 00:00:1700000000.000000    4242 gpu_device.cc:2022] Created device /job:localhost/replica:0/task:0/device:GPU:0 with 78910 MB memory:  -> device: 0, name: NVIDIA H100 80GB HBM3, pci bus id: 0000:18:00.0, compute capability: 9.0',
      'I0000 00:00:1700000000.000001    4242 gpu_device.cc:2022] Created device /job:localhost/replica:0/task:0/device:GPU:1 with 15360 MB memory:  -> device: 1, name: Tesla T4, pci bus id: 0000:3b:00.0, compute capability: 7.5',
      "W0000 00:00:1700000000.000002    4242 dso_loader.cc:64] Could not load dynamic library 'libcudnn.so.9'; dlerror: libcudnn.so.9: cannot open shared object file",
      "W0000 00:00:1700000000.000003    4242 dso_loader.cc:64] Could not load dynamic library 'libcudnn.so.9'; dlerror: again",
    ].join('\n');
    assert.deepEqual(parseTfLog(log), {
      gpus: [{ type: 'GPU', name: 'NVIDIA H100 80GB HBM3', memoryMiB: 78910 }, { type: 'GPU', name: 'Tesla T4', memoryMiB: 15360 }],
      missing: ['libcudnn.so.9'],
    });
    assert.deepEqual(parseTfLog('W… gpu_device.cc:2344] Cannot dlopen some GPU libraries. Please make sure …').missing, ['some GPU libraries (TensorFlow named none)']);
    assert.deepEqual(parseTfLog(''), { gpus: [], missing: [] });
  });

  it('a failed probe is described by the error it threw, not Node\'s closing version line', () => {
    // What Node writes for an uncaught error (the addon missing), after TensorFlow's start-up lines.
    const stderr = [
      'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
      'I0000 00:00:1796415772.602889   12341 port.cc:153] oneDNN custom operations are on.',
      'node:internal/modules/cjs/loader:1210', '  throw err;', '  ^', '',
      "Error: Cannot find module '/x/lib/napi-v8/tfjs_binding.node'", 'Require stack:', '- /x/dist/tfjs_binding.js',
      '    at Module._resolveFilename (node:internal/modules/cjs/loader:1207:15) {', "  code: 'MODULE_NOT_FOUND',", '}', '', 'Node.js v20.20.2', '',
    ].join('\n');
    assert.equal(probeFailure(stderr), "Error: Cannot find module '/x/lib/napi-v8/tfjs_binding.node'");
    assert.equal(probeFailure('Error [ERR_DLOPEN_FAILED]: libtensorflow.so.2: cannot open shared object file\n\nNode.js v20.20.2\n'), 'Error [ERR_DLOPEN_FAILED]: libtensorflow.so.2: cannot open shared object file');
    assert.equal(probeFailure('W0000 00:00:1.0 x.cc:1] a warning\nSegmentation fault (core dumped)\n'), 'Segmentation fault (core dumped)');
    assert.equal(probeFailure(''), undefined);
  });

  it('--threads takes whole numbers from 1 and names the argument otherwise', () => {
    assert.equal(parseThreads(undefined), undefined);
    assert.equal(parseThreads('4'), 4);
    assert.equal(parseThreads(2, 'threads'), 2);
    for (const bad of ['0', '-1', '1.5', 'two', '']) assert.throws(() => parseThreads(bad), /--threads: expected a whole number of threads from 1 to 1024/);
  });
});
