/**
 * The audio front end against hand computations (a pure tone's DFT, a mel filterbank from its
 * formula, regression deltas of a ramp), decoding through ffmpeg, the VoxCeleb and ASVspoof
 * readers, the speaker and light-CNN networks (convolution and pooling by hand, gradients by
 * finite differences on wasm), and tiny end-to-end speaker and anti-spoofing runs.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { access, mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { tf } from '../src/backend/tf.js';
import {
  AudioFileError, audioFeatures, decodeAudio, deltas, encodeWav, featureConfig, frameCount, lfcc, linearFilterbank, loadAudio, logMel, melFilterbank,
  parseWav, powerSpectrogram, randomCrop, writeWav,
} from '../src/audio/index.js';
import { parseAsvspoofProtocol, parseTrials, scanVoxCeleb } from '../src/data/index.js';
import { generateSynthSpeakers, generateSynthSpoof } from '../src/data/synthSpeech.js';
import { conv3x3, embedLightCnn, initLightCnn, lightCnnConfigSchema, maxFeatureMap, maxPool2x2 } from '../src/nn/lightCnn.js';
import { embedSpeakers, initSpeakerNet, speakerNetConfigSchema } from '../src/nn/speakerNet.js';
import { ffmpegBinary } from '../src/video/binaries.js';
import { parseSpeakerConfig, runEvalSpeaker, runTrainSpeaker } from '../pipelines/speaker.js';
import { parseSpoofConfig, runEvalSpoof, runTrainSpoof } from '../pipelines/spoof.js';
import { streamingSource } from '../pipelines/lib/audioTraining.js';
import { fdGrad, relErr } from './helpers/fd.js';
import { tidyData } from './helpers/read.js';

const run = promisify(execFile);
const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void => {
  const e = relErr(a, b);
  assert.ok(e < tol, `${what}: rel. error ${e.toExponential(2)} ≥ ${tol}\n got ${Array.from(a).slice(0, 12)}\n want ${Array.from(b).slice(0, 12)}`);
};

describe('audio: features', () => {
  it('a 1 kHz tone: the power spectrum peaks at bin 32 with the hand-computed DFT power', async () => {
    const A = 0.5;
    const x = Float32Array.from({ length: 1600 }, (_, n) => A * Math.sin((2 * Math.PI * 1000 * n) / 16000));
    const cfg = featureConfig();
    const P = (await powerSpectrogram(x, cfg).array()) as number[][];
    assert.equal(P.length, frameCount(1600, cfg));
    assert.equal(P.length, 1 + Math.floor((1600 - 400) / 160));
    // Frame 2 by hand: Σ_n w(n)·x(320 + n)·e^(−2πi·k·n/512), periodic Hann over 400 samples.
    const byHand = (k: number) => {
      let re = 0; let im = 0;
      for (let n = 0; n < 400; n++) {
        const v = (0.5 - 0.5 * Math.cos((2 * Math.PI * n) / 400)) * A * Math.sin((2 * Math.PI * 1000 * (320 + n)) / 16000);
        re += v * Math.cos((2 * Math.PI * k * n) / 512);
        im -= v * Math.sin((2 * Math.PI * k * n) / 512);
      }
      return re * re + im * im;
    };
    const row = P[2];
    assert.equal(row.indexOf(Math.max(...row)), 32);
    for (const k of [0, 20, 31, 32, 33, 100]) assert.ok(Math.abs(row[k] - byHand(k)) <= 1e-4 * byHand(32) + 1e-3 * byHand(k), `bin ${k}: ${row[k]} vs ${byHand(k)}`);
    // And the textbook value: (A·Σw/2)² = (0.5·200/2)² = 2500.
    assert.ok(Math.abs(row[32] / 2500 - 1) < 0.01, `peak ${row[32]}`);
  });

  it('the FFT path (cpu backend) and the DFT-matmul path (wasm) give the same spectrum', async () => {
    const x = Float32Array.from({ length: 4000 }, (_, n) => Math.sin(n * 0.37) * 0.3 + Math.cos(n * 0.011) * 0.2);
    // Which kernels ran: tfjs's rfft is built on the FFT kernel (there is no RFFT kernel), the
    // fallback on two MatMuls; each path must be the one its backend can run.
    const spectrum = async () => {
      let out: Float32Array | undefined;
      const prof = await tf.profile(async () => { out = (await powerSpectrogram(x, featureConfig()).data()) as Float32Array; });
      return { out: out!, kernels: prof.kernelNames };
    };
    const here = tf.getBackend();
    const mine = await spectrum();
    if (tf.getKernel('FFT', here) === undefined) {
      assert.ok(!mine.kernels.includes('FFT') && mine.kernels.includes('BatchMatMul'), `${here}: DFT as matmuls, ran ${mine.kernels}`);
    }
    await tf.setBackend('cpu');
    let viaFft: Awaited<ReturnType<typeof spectrum>>;
    try {
      assert.ok(tf.getKernel('FFT', 'cpu'), 'the cpu backend has an FFT kernel');
      viaFft = await spectrum();
      // And tfjs's own STFT (periodic Hann window, frames without end padding) on the same signal.
      const stft = (await tidyData(() => tf.square(tf.abs(tf.signal.stft(tf.tensor1d(x), 400, 160, 512))))) as Float32Array;
      close(viaFft.out, stft, 1e-5, 'powerSpectrogram vs |tf.signal.stft|²');
    } finally {
      await tf.setBackend(here);
    }
    assert.ok(viaFft.kernels.includes('FFT') && !viaFft.kernels.includes('BatchMatMul'), `cpu: rfft, ran ${viaFft.kernels}`);
    close(mine.out, viaFft.out, 1e-5, 'FFT vs DFT');
  });

  it('mel and linear filterbanks from their formulas (fft 8 at 16 kHz, 2 filters)', () => {
    // Bins at 0, 2, 4, 6, 8 kHz. Mel edges equally spaced between mel(0) and mel(8000).
    const mel = (f: number) => 2595 * Math.log10(1 + f / 700);
    const hz = (m: number) => 700 * (10 ** (m / 2595) - 1);
    const top = mel(8000);
    const e = [0, hz(top / 3), hz((2 * top) / 3), 8000]; // ≈ 0, 921.8, 3055.8, 8000 Hz
    const want = [
      [0, 0], // 0 Hz: foot of filter 1
      [(e[2] - 2000) / (e[2] - e[1]), (2000 - e[1]) / (e[2] - e[1])],
      [0, (8000 - 4000) / (8000 - e[2])],
      [0, (8000 - 6000) / (8000 - e[2])],
      [0, 0],
    ];
    close(melFilterbank({ numFilters: 2, fftLength: 8, sampleRate: 16000 }), want.flat(), 1e-6, 'mel');
    // Linear: edges 0, 2667, 5333, 8000 Hz.
    const l = [0, 8000 / 3, 16000 / 3, 8000];
    const lin = [[0, 0], [2000 / l[1], 0], [(l[2] - 4000) / (l[2] - l[1]), (4000 - l[1]) / (l[2] - l[1])], [0, (8000 - 6000) / (8000 - l[2])], [0, 0]];
    close(linearFilterbank({ numFilters: 2, fftLength: 8, sampleRate: 16000 }), lin.flat(), 1e-6, 'linear');
    assert.throws(() => melFilterbank({ numFilters: 2, fftLength: 7, sampleRate: 16000 }), /'fftLength' must be an even integer/);
  });

  it('log-mel and LFCC shapes, per-utterance mean normalisation, deltas of a ramp, no leaks', async () => {
    const x = Float32Array.from({ length: 8000 }, (_, n) => Math.sin(n * 0.3) * 0.3 + Math.sin(n * 0.05) * 0.2);
    const before = tf.memory().numTensors;
    const m = logMel(x);
    const c = lfcc(x);
    assert.deepEqual(m.shape, [frameCount(8000, featureConfig()), 80]);
    assert.deepEqual(c.shape, [m.shape[0], 60]);
    for (const t of [m, c]) {
      const means = await tidyData(() => tf.mean(t, 0));
      assert.ok(Math.max(...Array.from(means, Math.abs)) < 1e-4, 'column means ≈ 0');
    }
    tf.dispose([m, c]);
    assert.equal(tf.memory().numTensors, before);
    // Interior deltas of c_t = t are exactly 1 (Σ n·2n / 2Σn² = 1); edges replicate.
    const ramp = tf.tensor2d(Array.from({ length: 7 }, (_, t) => [t, 2 * t]));
    const d = (await deltas(ramp).array()) as number[][];
    close(d.slice(2, 5).flat(), [1, 2, 1, 2, 1, 2], 1e-6, 'interior');
    close(d[0], [(1 * (1 - 0) + 2 * (2 - 0)) / 10, (2 * (1 - 0) + 4 * (2 - 0)) / 10], 1e-6, 'first frame (edge replicated)');
  });

  it('random crops have a fixed length; a short signal repeats', () => {
    const x = Float32Array.from([1, 2, 3]);
    assert.deepEqual(Array.from(randomCrop(x, 7, () => 0)), [1, 2, 3, 1, 2, 3, 1]);
    assert.deepEqual(Array.from(randomCrop(Float32Array.from([1, 2, 3, 4, 5]), 2, () => 0.99)), [4, 5]);
  });
});

describe('audio: decoding and readers', () => {
  let tmp: string;
  before(async () => { tmp = await mkdtemp(path.join(os.tmpdir(), 'vlm-audio-')); });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  it('WAV round trip, ffmpeg decoding of FLAC and of a 44.1 kHz stereo WAV, clear errors for bad files', async () => {
    const x = Float32Array.from({ length: 4000 }, (_, n) => 0.4 * Math.sin(n / 7));
    const wav = path.join(tmp, 'a.wav');
    await writeWav(wav, x);
    const back = await loadAudio(wav);
    close(back, x, 1e-4, 'wav');
    assert.deepEqual(parseWav(encodeWav(x, 8000)), undefined, 'another rate is left to ffmpeg');
    const flac = path.join(tmp, 'a.flac');
    await run(ffmpegBinary().path, ['-v', 'error', '-y', '-i', wav, flac]);
    close(await decodeAudio(flac), back, 1e-6, 'flac decoded by ffmpeg');
    // 44.1 kHz stereo: ffmpeg resamples and downmixes; the tone survives (length 16000/44100 of the input).
    const stereo = path.join(tmp, 's.wav');
    await run(ffmpegBinary().path, ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'sine=frequency=1000:sample_rate=44100:duration=0.5', '-ac', '2', stereo]);
    const s = await loadAudio(stereo);
    assert.ok(Math.abs(s.length - 8000) <= 16, `resampled length ${s.length}`);
    await writeFile(path.join(tmp, 'bad.wav'), 'not audio');
    await assert.rejects(() => loadAudio(path.join(tmp, 'bad.wav')), (e: unknown) => e instanceof AudioFileError && /bad\.wav/.test((e as Error).message));
    await assert.rejects(() => loadAudio(path.join(tmp, 'missing.flac')), /missing\.flac/);
  });

  it('streaming crops: a file that fails to decode is reported and replaced by one of its class', async () => {
    const cfg = featureConfig({ numFilters: 16 });
    const T = 5;
    const n = (T - 1) * cfg.hop + cfg.winLength; // exactly one crop: the whole file
    const good0 = Float32Array.from({ length: n }, (_, i) => 0.3 * Math.sin(i / 5));
    const good1 = Float32Array.from({ length: n }, (_, i) => 0.3 * Math.sin(i / 9));
    const files = [path.join(tmp, 'g0.wav'), path.join(tmp, 'broken0.wav'), path.join(tmp, 'g1.wav')];
    await writeWav(files[0], good0);
    await writeFile(files[1], 'RIFF not really');
    await writeWav(files[2], good1);
    const skips: string[] = [];
    const src = streamingSource(files, Int32Array.from([0, 0, 1]), cfg, { onSkip: (p) => skips.push(p) });
    const batch = await src.batch(Int32Array.from([1, 2]), T, () => 0.5);
    assert.equal(batch.length, 2 * T * 16);
    assert.deepEqual(skips, [files[1]]);
    const pcm0 = await loadAudio(files[0]);
    const want0 = await tidyData(() => audioFeatures(pcm0, cfg));
    close(batch.subarray(0, T * 16), want0, 1e-4, 'the replacement is class 0\'s other file');
    const want1 = await logMel(await loadAudio(files[2]), { numFilters: 16 }).data();
    close(batch.subarray(T * 16), want1, 1e-4, 'the good file');
  });

  it('VoxCeleb layout and trial lists; ASVspoof protocols; bad lines named', async () => {
    const root = path.join(tmp, 'vox');
    for (const [spk, sess, utt] of [['id1', 's1', '1.wav'], ['id1', 's2', '2.wav'], ['id2', 's1', '1.wav']]) {
      await mkdir(path.join(root, spk, sess), { recursive: true });
      await writeWav(path.join(root, spk, sess, utt), new Float32Array(800));
    }
    await writeFile(path.join(root, 'id2', 'loose.wav'), '');
    await mkdir(path.join(root, 'empty'));
    const scan = await scanVoxCeleb(root);
    assert.deepEqual(scan.speakers, ['id1', 'id2']);
    assert.deepEqual(scan.utterances.map((u) => [u.rel, u.label]), [['id1/s1/1.wav', 0], ['id1/s2/2.wav', 0], ['id2/s1/1.wav', 1]]);
    assert.deepEqual(scan.skipped.map((s) => path.basename(s.path)).sort(), ['empty', 'loose.wav']);
    assert.deepEqual(parseTrials('1 id1/s1/1.wav id1/s2/2.wav\n# c\n0 id1/s1/1.wav id2/s1/1.wav\n'), [
      { label: 1, enrol: 'id1/s1/1.wav', test: 'id1/s2/2.wav' }, { label: 0, enrol: 'id1/s1/1.wav', test: 'id2/s1/1.wav' }]);
    assert.throws(() => parseTrials('1 a b\n2 a b\n', 't.txt'), /t\.txt:2: label '2'/);
    assert.throws(() => parseTrials('1 ../x b\n', 't.txt'), /t\.txt:1: path '\.\.\/x'/);
    assert.throws(() => parseTrials('1 a\n', 't.txt'), /t\.txt:1: expected 'label path path'/);
    assert.deepEqual(parseAsvspoofProtocol('LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_2 - A01 spoof\n'), [
      { speaker: 'LA_0079', utt: 'LA_T_1', attack: '-', label: 1 }, { speaker: 'LA_0079', utt: 'LA_T_2', attack: 'A01', label: 0 }]);
    assert.throws(() => parseAsvspoofProtocol('a b - - fake\n', 'p.txt'), /p\.txt:1: label 'fake'/);
    await assert.rejects(() => scanVoxCeleb(path.join(tmp, 'nope')), /--audio .*nope.*cannot list/);
  });
});

describe('audio: networks', () => {
  it('max-feature-map, 2×2 max pooling and the im2col 3×3 convolution by hand; conv gradient by finite differences', async () => {
    close(await maxFeatureMap(tf.tensor2d([[1, 5, 3, 2]])).data(), [3, 5], 1e-9, 'mfm');
    const img = tf.tensor4d(Array.from({ length: 16 }, (_, i) => (i * 7) % 11), [1, 4, 4, 1]);
    const v = await img.data();
    const pooled = [[0, 0], [0, 2], [2, 0], [2, 2]].map(([r, c]) => Math.max(v[r * 4 + c], v[r * 4 + c + 1], v[(r + 1) * 4 + c], v[(r + 1) * 4 + c + 1]));
    close(await maxPool2x2(img).data(), pooled, 1e-9, 'pool');
    // Convolution with zero 'same' padding, weight row order (dy, dx, cin).
    const W = Array.from({ length: 9 }, (_, k) => [(k % 3) - 1 + 0.1 * k, 0.5 - 0.05 * k]);
    const params = { 'c.weight': tf.tensor2d(W), 'c.bias': tf.tensor1d([0.25, -0.5]) };
    const out = await conv3x3(params, 'c', img).data();
    const hand: number[] = [];
    for (let r = 0; r < 4; r++) for (let c = 0; c < 4; c++) for (let o = 0; o < 2; o++) {
      let s = o === 0 ? 0.25 : -0.5;
      for (let dy = 0; dy < 3; dy++) for (let dx = 0; dx < 3; dx++) {
        const rr = r + dy - 1; const cc = c + dx - 1;
        if (rr >= 0 && rr < 4 && cc >= 0 && cc < 4) s += v[rr * 4 + cc] * W[dy * 3 + dx][o];
      }
      hand.push(s);
    }
    close(out, hand, 1e-6, 'conv');
    const f = (w: tf.Tensor) => tf.sum(tf.square(maxFeatureMap(conv3x3({ 'c.weight': w, 'c.bias': params['c.bias'] }, 'c', tf.div(img, 10)))));
    close(await tf.grad(f)(params['c.weight']).data(), await fdGrad(f, params['c.weight'], 1e-3), 2e-2, 'conv weight gradient (no Conv2DBackpropFilter needed)');
  });

  it('speaker net and light CNN: shapes, too-short inputs refused, gradients flow to every parameter', async () => {
    const scfg = speakerNetConfigSchema.parse({ inputDim: 8, channels: 6, embedDim: 4, attentionDim: 3 });
    const store = initSpeakerNet(scfg, 1);
    const x = tf.randomNormal([2, 20, 8], 0, 1, 'float32', 3);
    assert.deepEqual(embedSpeakers(store.snapshot(), x, scfg).shape, [2, 4]);
    assert.throws(() => embedSpeakers(store.snapshot(), tf.zeros([1, 10, 8]), scfg), /needs at least 15/);
    const grads = tf.grads((...ws: tf.Tensor[]) => {
      const p = Object.fromEntries(store.names().map((n, i) => [n, ws[i]]));
      return tf.sum(tf.square(embedSpeakers(p, x, scfg)));
    })(store.names().map((n) => store.get(n)));
    for (const [i, g] of grads.entries()) assert.ok((await tidyData(() => tf.sum(tf.abs(g))))[0] > 0, `${store.names()[i]} has a gradient`);
    const lcfg = lightCnnConfigSchema.parse({ inputDim: 12, channels: [2, 4], poolAfter: [0], hidden: 4, embedDim: 3 });
    const lstore = initLightCnn(lcfg, 2);
    assert.deepEqual(embedLightCnn(lstore.snapshot(), tf.randomNormal([3, 9, 12]), lcfg).shape, [3, 3]);
    store.dispose();
    lstore.dispose();
  });
});

describe('audio: speaker verification and anti-spoofing end to end (tiny)', function () {
  let tmp: string;
  // The jobs start the backend they are given; the files after this one run on the suite's.
  let suiteBackend: string;
  before(async () => { tmp = await mkdtemp(path.join(os.tmpdir(), 'vlm-speech-')); suiteBackend = tf.getBackend(); });
  after(async () => { await rm(tmp, { recursive: true, force: true }); await tf.setBackend(suiteBackend); });

  it('synthetic speakers → train speaker (AAM-softmax) → eval speaker: eval.json, DET plot, the CLI prints the same object', async () => {
    const corpus = await generateSynthSpeakers({ out: path.join(tmp, 'spk'), trainSpeakers: 4, testSpeakers: 3, sessions: 2, uttsPerSession: 2, seconds: 0.6 });
    assert.equal(corpus.utterances, 28);
    assert.equal((await generateSynthSpeakers({ out: path.join(tmp, 'spk'), trainSpeakers: 4, testSpeakers: 3, sessions: 2, uttsPerSession: 2, seconds: 0.6 })).reused, true);
    const trials = (await readFile(corpus.trials, 'utf8')).trim().split('\n');
    assert.equal(trials.length, (12 * 11) / 2);
    // A file that cannot be decoded is skipped in training, not fatal.
    await writeFile(path.join(corpus.train, 'spk000', 'sess0', 'broken.wav'), 'RIFF????');
    const cfg = parseSpeakerConfig({
      backend: 'wasm', features: { numFilters: 24 }, model: { channels: 16, embedDim: 8, attentionDim: 8 },
      train: { steps: 6, batchSize: 8, cropFrames: 40, warmupSteps: 1 },
    });
    assert.equal(cfg.loss.name, 'aam-softmax');
    const before = tf.memory().numTensors;
    const r = await runTrainSpeaker(cfg, { audio: corpus.train, out: path.join(tmp, 'run'), quiet: true });
    assert.equal(tf.memory().numTensors, before, 'no tensors left after training');
    assert.equal(r.speakers, 4);
    assert.equal(r.utterances, 16);
    assert.ok(r.skipped.some((s) => s.path.endsWith('broken.wav')));
    assert.ok(Number.isFinite(r.lossEnd));
    // Without the feature cache each step decodes its batch (the broken file is counted, not drawn again).
    const streamed = await runTrainSpeaker(parseSpeakerConfig({ ...cfg, train: { ...cfg.train, steps: 2, cacheFeatures: false } }), { audio: corpus.train, out: path.join(tmp, 'run-stream'), quiet: true });
    assert.equal(streamed.steps, 2);
    assert.equal(streamed.utterances, 17);
    const e = await runEvalSpeaker({ checkpoint: path.join(tmp, 'run'), trials: corpus.trials, audio: corpus.test, backend: 'wasm' });
    assert.equal(e.trials, 66);
    assert.equal(e.targets, 3 * 6);
    assert.ok(e.eer >= 0 && e.eer <= 100 && e.minDCF >= 0 && e.minDCF <= 1.0001, `eer ${e.eer} minDCF ${e.minDCF}`);
    await access(e.det);
    const saved = JSON.parse(await readFile(path.join(path.dirname(e.det), 'eval.json'), 'utf8'));
    assert.equal(saved.eer, e.eer);
    const cli = await run(process.execPath, [path.resolve('dist/pipelines/cli/main.js'), 'eval', 'speaker', '--checkpoint', path.join(tmp, 'run'),
      '--trials', corpus.trials, '--audio', corpus.test, '--json', '--backend', 'wasm', '--out', path.join(tmp, 'cli-eval')]);
    const printed = JSON.parse(cli.stdout);
    assert.equal(printed.eer, e.eer);
    assert.deepEqual(printed, JSON.parse(await readFile(path.join(tmp, 'cli-eval', 'eval.json'), 'utf8')));
    await assert.rejects(() => runEvalSpeaker({ checkpoint: path.join(tmp, 'run'), trials: path.join(tmp, 'none.txt'), audio: corpus.test, backend: 'wasm' }), /--trials .*none\.txt: cannot read/);
  });

  it('synthetic bona fide / spoof → train spoof (LFCC, light CNN, AM-softmax) → eval spoof with EER per attack', async () => {
    const s = await generateSynthSpoof({ out: path.join(tmp, 'cm'), trainSpeakers: 2, evalSpeakers: 2, perSpeaker: 4, seconds: 0.5 });
    const proto = (await readFile(s.train.protocol, 'utf8')).trim().split('\n');
    assert.equal(proto.length, 16);
    assert.deepEqual(proto.slice(0, 2).map((l) => l.split(' ').slice(3)), [['-', 'bonafide'], ['A01', 'spoof']]);
    const cfg = parseSpoofConfig({ backend: 'wasm', model: { channels: [4, 8], poolAfter: [0, 1], hidden: 8, embedDim: 8 }, train: { steps: 4, batchSize: 8, cropFrames: 24, warmupSteps: 1 } });
    assert.equal(cfg.loss.name, 'am-softmax');
    assert.equal(cfg.train.sampling, 'balanced');
    const r = await runTrainSpoof(cfg, { protocol: s.train.protocol, audio: s.train.audio, out: path.join(tmp, 'cmrun'), quiet: true });
    assert.deepEqual([r.bonafide, r.spoof], [8, 8]);
    const e = await runEvalSpoof({ checkpoint: path.join(tmp, 'cmrun'), protocol: s.eval.protocol, audio: s.eval.audio, backend: 'wasm' });
    assert.deepEqual([e.bonafide, e.spoof], [8, 8]);
    assert.deepEqual(Object.keys(e.eerByAttack), ['A01', 'A02']);
    assert.ok(e.eer >= 0 && e.eer <= 100);
    assert.equal((await readFile(e.scores, 'utf8')).trim().split('\n').length, 16);
    await assert.rejects(() => runEvalSpoof({ checkpoint: path.join(tmp, 'cmrun'), protocol: s.eval.protocol, audio: path.join(tmp, 'nowhere'), backend: 'wasm' }), /needs both bona fide and spoof/);
  });
});
