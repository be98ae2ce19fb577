// AudioWorklet: microphone audio (any context rate, any channel count) -> mono PCM s16le at 16 kHz, in chunks.
//
// Resampling is windowed-sinc interpolation (Hann window) with its cut-off below the lower of the two Nyquist
// rates, so downsampling 48 kHz or 44.1 kHz to 16 kHz does not alias. Every chunk is posted with the context time
// (seconds) of its first sample, from the worklet's own frame counter, so chunk times are exact and gap-free.

const HALF_TAPS = 8; // zero crossings of the sinc kept on each side

class Pcm16Resampler extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.outRate = o.targetRate || 16000;
    this.step = sampleRate / this.outRate; // input samples per output sample
    this.fc = Math.min(1, this.outRate / sampleRate) * 0.92; // cut-off, as a fraction of the input Nyquist rate
    this.reach = Math.ceil(HALF_TAPS / this.fc); // input samples on each side of an output sample
    this.chunk = Math.max(1, Math.round(this.outRate * (o.chunkMs || 100) / 1000));
    this.buf = new Float32Array(16384);
    this.len = 0;
    this.pos = 0; // position of the next output sample, in input samples from buf[0]
    this.startFrame = null; // context frame of buf[0]
    this.out = new Int16Array(this.chunk);
    this.outLen = 0;
    this.outFrame = 0; // context frame of the first sample of the chunk being filled
  }

  append(mono) {
    if (this.len + mono.length > this.buf.length) {
      const drop = Math.max(0, Math.floor(this.pos) - this.reach);
      this.buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.pos -= drop;
      this.startFrame += drop;
      if (this.len + mono.length > this.buf.length) {
        const bigger = new Float32Array(2 * (this.len + mono.length));
        bigger.set(this.buf.subarray(0, this.len));
        this.buf = bigger;
      }
    }
    this.buf.set(mono, this.len);
    this.len += mono.length;
  }

  sampleAt(x) {
    const centre = Math.floor(x);
    let acc = 0;
    for (let k = centre - this.reach + 1; k <= centre + this.reach; k++) {
      if (k < 0 || k >= this.len) continue;
      const d = x - k;
      const u = this.fc * d;
      const sinc = u === 0 ? 1 : Math.sin(Math.PI * u) / (Math.PI * u);
      const w = 0.5 * (1 + Math.cos(Math.PI * d / this.reach));
      acc += this.buf[k] * this.fc * sinc * w;
    }
    return acc;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    const mono = new Float32Array(n);
    for (const ch of channels) for (let i = 0; i < n; i++) mono[i] += ch[i] / channels.length;
    if (this.startFrame === null) {
      this.startFrame = currentFrame - this.reach; // `reach` samples of silence before the first one
      this.append(new Float32Array(this.reach));
      this.pos = this.reach;
    }
    this.append(mono);
    while (this.pos + this.reach < this.len) {
      if (this.outLen === 0) this.outFrame = this.startFrame + this.pos;
      const v = Math.max(-1, Math.min(1, this.sampleAt(this.pos)));
      this.out[this.outLen++] = Math.round(v < 0 ? v * 32768 : v * 32767);
      this.pos += this.step;
      if (this.outLen === this.chunk) {
        this.port.postMessage({ time: this.outFrame / sampleRate, pcm: this.out.buffer }, [this.out.buffer]);
        this.out = new Int16Array(this.chunk);
        this.outLen = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm16-resampler", Pcm16Resampler);
