// Prime Brain's policy model, for the Studio: the features of a window of
// snapshots, the model's inputs and outputs, and the decoding of its
// outputs into a DAWCommand and calm guidance. Written by Fabric beside the
// model it belongs to (`model.onnx`), with test vectors (`test-vectors.json`)
// that this module must reproduce. Do not edit: the constants below come
// from Fabric's definitions, and the functions mirror Fabric's.

/** The model's input: a [batch, 94] float32 tensor of features. */
export const INPUT = "features";
export const MODES = ["passive","active","learning","optimizing"] as const;
export const ALS_CHANNELS = ["temperature","energy","pulse","pressure"] as const;
export const FLAG_CATEGORIES = ["mix","tonal","performance","arrangement","health"] as const;
export const SEVERITIES = ["info","low","medium","high","critical"] as const;
export const COMMANDS: { type: string; needsTarget: boolean; args: string[] }[] = [{"args":[],"needsTarget":false,"type":"transport.play"},{"args":[],"needsTarget":false,"type":"transport.stop"},{"args":[],"needsTarget":false,"type":"transport.toggleCycle"},{"args":["bpm"],"needsTarget":false,"type":"transport.setTempo"},{"args":[],"needsTarget":true,"type":"track.mute"},{"args":[],"needsTarget":true,"type":"track.solo"},{"args":[],"needsTarget":true,"type":"track.freeze"},{"args":["size"],"needsTarget":false,"type":"engine.setBufferSize"},{"args":["amount"],"needsTarget":true,"type":"mix.eqCut"},{"args":["amount"],"needsTarget":true,"type":"mix.compress"},{"args":["amount"],"needsTarget":true,"type":"mix.addReverb"},{"args":[],"needsTarget":false,"type":"mix.balanceLevels"},{"args":[],"needsTarget":false,"type":"arrange.loopSection"},{"args":[],"needsTarget":false,"type":"arrange.duplicateSection"}];
/** How each argument head's classes map to values. */
export const ARGUMENTS: Record<string, { kind: string; min?: number; max?: number }> = {"amount":{"kind":"words"},"bpm":{"kind":"range","max":400.0,"min":20.0},"size":{"kind":"integers"}};
export const BLOOM_OUTCOMES = ["accepted","dismissed","ignored"] as const;
/** The list limits sanitize keeps to (the newest items). */
export const LIMITS = {"bloomTrace":24,"issuedCommands":20,"recentActions":10};
/** Each head's classes, in the order of its `<head>_probs` output. */
export const HEADS: Record<string, string[]> = {"amount":["gentle","moderate","strong"],"bpm":["-8","-4","-2","+2","+4","+8"],"channel":["temperature","energy","pulse","pressure"],"command":["none","transport.play","transport.stop","transport.toggleCycle","transport.setTempo","track.mute","track.solo","track.freeze","engine.setBufferSize","mix.eqCut","mix.compress","mix.addReverb","mix.balanceLevels","arrange.loopSection","arrange.duplicateSection"],"intensity":["whisper","nudge","call"],"next_mode":["passive","active","learning","optimizing"],"size":["32","64","128","256","512","1024","2048","4096","8192"],"target":["none","drums","bass","keys","vocals","guitar","synth","fx","bus","master"]};
/** The calm phrase for each guidance channel and intensity. */
export const PHRASES: Record<string, Record<string, string>> = {"energy":{"call":"The energy is spilling over; bring it back to center.","nudge":"The energy wants somewhere to go; open a little space.","whisper":"Energy is rising; let it carry you."},"pressure":{"call":"The session is overheating; ease the load now.","nudge":"The session is running warm; easing the load keeps you in flow.","whisper":"The room feels a little warm."},"pulse":{"call":"The pulse is slipping; steady the groove.","nudge":"The pulse could loop here and settle.","whisper":"All calm; the pulse is steady."},"temperature":{"call":"The mix is running hot; let it cool before going on.","nudge":"The low end feels crowded; a gentle cut would let it breathe.","whisper":"The mix feels a touch warm."}};
/** The name of each feature, in input order. */
export const FEATURE_LAYOUT = ["mode.passive","mode.active","mode.learning","mode.optimizing","als.temperature.last","als.energy.last","als.pulse.last","als.pressure.last","als.temperature.mean","als.energy.mean","als.pulse.mean","als.pressure.mean","health.cpuLoad.last","health.cpuLoad.max","health.dropouts.last","health.dropouts.window","health.latency","health.bufferSize","harmonic.consonance","harmonic.tension","harmonic.velocityEnergy","transport.playing","transport.cycle","transport.tempo","flags.mix.info","flags.mix.low","flags.mix.medium","flags.mix.high","flags.mix.critical","flags.tonal.info","flags.tonal.low","flags.tonal.medium","flags.tonal.high","flags.tonal.critical","flags.performance.info","flags.performance.low","flags.performance.medium","flags.performance.high","flags.performance.critical","flags.arrangement.info","flags.arrangement.low","flags.arrangement.medium","flags.arrangement.high","flags.arrangement.critical","flags.health.info","flags.health.low","flags.health.medium","flags.health.high","flags.health.critical","recent.transport.play","recent.transport.stop","recent.transport.toggleCycle","recent.transport.setTempo","recent.track.mute","recent.track.solo","recent.track.freeze","recent.engine.setBufferSize","recent.mix.eqCut","recent.mix.compress","recent.mix.addReverb","recent.mix.balanceLevels","recent.arrange.loopSection","recent.arrange.duplicateSection","history.transport.play","history.transport.stop","history.transport.toggleCycle","history.transport.setTempo","history.track.mute","history.track.solo","history.track.freeze","history.engine.setBufferSize","history.mix.eqCut","history.mix.compress","history.mix.addReverb","history.mix.balanceLevels","history.arrange.loopSection","history.arrange.duplicateSection","new.transport.play","new.transport.stop","new.transport.toggleCycle","new.transport.setTempo","new.track.mute","new.track.solo","new.track.freeze","new.engine.setBufferSize","new.mix.eqCut","new.mix.compress","new.mix.addReverb","new.mix.balanceLevels","new.arrange.loopSection","new.arrange.duplicateSection","bloom.accepted","bloom.dismissed","bloom.ignored"];

/** The fields of a (sanitized) snapshot the features read. */
export interface Snapshot {
  mode: string;
  transport: { isPlaying: boolean; tempo: number; cycle: { enabled: boolean } };
  alsChannels: { channel: string; normalized: number }[];
  audioMetrics: { latencyMs: number; cpuLoad: number; dropouts: number; bufferSize: number };
  harmonicState: { consonance: number; tension: number; velocityEnergy: number };
  aiAnalysisFlags: { category: string; severity: string }[];
  userMemorySummary?: { recentActions: string[] } | null;
  bloomTrace: { outcome: string }[];
  issuedCommands?: IssuedCommand[] | null;
}

/** A command the user issued, as a snapshot lists it. */
export interface IssuedCommand {
  type: string;
  target?: string | null;
  args?: Record<string, unknown> | null;
}

/** A DAWCommand as the Studio executes it. */
export interface DawCommand {
  type: string;
  target?: string;
  args?: Record<string, number | string>;
}

/** What the model says about a window. */
export interface Decision {
  command: DawCommand;
  /** Up to three command types, best first. */
  top3: string[];
  guidance: { channel: string; intensity: string; text: string };
}

/** Rounds like Fabric: four decimals. */
function round4(x: number): number {
  return Math.round(x * 10000) / 10000;
}

function share<T>(items: T[], matches: (item: T) => boolean): number {
  return items.filter(matches).length / Math.max(items.length, 1);
}

const lower = (text: unknown) => (typeof text === "string" ? text.toLowerCase() : "");
const known = (names: readonly string[], text: unknown) => names.includes(lower(text));
const newest = <T>(items: T[] | null | undefined, limit: number) => (items ?? []).slice(-limit);

/**
 * What Fabric's sanitize does to the fields the features read, so that a
 * snapshot as the Studio builds it gives the features of its sanitized
 * form: items with unknown channels, categories or outcomes dropped, lists
 * cut to their newest LIMITS, unknown command types dropped, values clamped
 * and rounded to four decimals. Sanitized snapshots pass through unchanged.
 */
export function normalize(s: Snapshot): Snapshot {
  const commandTypes = COMMANDS.map((c) => c.type);
  return {
    ...s,
    mode: lower(s.mode),
    transport: { ...s.transport, tempo: round4(s.transport.tempo) },
    alsChannels: (s.alsChannels ?? [])
      .filter((r) => known(ALS_CHANNELS, r?.channel) && typeof r.normalized === "number")
      .map((r) => ({ channel: lower(r.channel), normalized: round4(Math.min(Math.max(r.normalized, 0), 1)) })),
    audioMetrics: {
      ...s.audioMetrics,
      latencyMs: round4(Math.min(s.audioMetrics.latencyMs, 999999)),
      cpuLoad: round4(s.audioMetrics.cpuLoad),
      dropouts: Math.min(s.audioMetrics.dropouts, 999999),
    },
    harmonicState: {
      consonance: round4(s.harmonicState.consonance),
      tension: round4(s.harmonicState.tension),
      velocityEnergy: round4(s.harmonicState.velocityEnergy),
    },
    aiAnalysisFlags: (s.aiAnalysisFlags ?? []).filter(
      (f) => known(FLAG_CATEGORIES, f?.category) && known(SEVERITIES, f?.severity),
    ),
    userMemorySummary: s.userMemorySummary
      ? { recentActions: newest(s.userMemorySummary.recentActions, LIMITS.recentActions) }
      : s.userMemorySummary,
    bloomTrace: newest((s.bloomTrace ?? []).filter((b) => known(BLOOM_OUTCOMES, b?.outcome)), LIMITS.bloomTrace),
    issuedCommands:
      s.issuedCommands == null
        ? s.issuedCommands
        : newest(s.issuedCommands, LIMITS.issuedCommands).filter((c) => commandTypes.includes(c?.type)),
  };
}

/** A command as compared across snapshots: type, target and arguments. */
function commandKey(c: IssuedCommand): string {
  const args = c.args ?? {};
  return JSON.stringify([c.type, c.target ?? null, Object.keys(args).sort().map((k) => [k, args[k]])]);
}

/**
 * Items of `next` that were not in `current`: both keep the newest items,
 * so `next` is `current` minus some oldest ones plus new ones.
 */
function newItems(current: IssuedCommand[], next: IssuedCommand[]): IssuedCommand[] {
  for (let dropped = 0; dropped <= current.length; dropped++) {
    const kept = current.slice(dropped);
    if (next.length >= kept.length && kept.every((c, i) => commandKey(c) === commandKey(next[i]))) {
      return next.slice(kept.length);
    }
  }
  return next;
}

/**
 * The feature vector of a window of snapshots (oldest first): FEATURE_LAYOUT,
 * in order. Each snapshot is first normalized as sanitize would; what
 * sanitize rewrites beyond that (free text, records it drops whole) is not
 * redone here.
 */
export function features(rawWindow: Snapshot[]): Float32Array {
  const window = rawWindow.map(normalize);
  const last = window[window.length - 1];
  const v: number[] = [];
  for (const mode of MODES) v.push(last.mode === mode ? 1 : 0);
  const als = (s: Snapshot, channel: string) => s.alsChannels.find((r) => r.channel === channel)?.normalized ?? 0;
  for (const channel of ALS_CHANNELS) v.push(als(last, channel));
  for (const channel of ALS_CHANNELS) v.push(window.reduce((sum, s) => sum + als(s, channel), 0) / window.length);
  const m = last.audioMetrics;
  v.push(m.cpuLoad);
  v.push(window.reduce((max, s) => Math.max(max, s.audioMetrics.cpuLoad), 0));
  v.push(m.dropouts > 0 ? 1 : 0);
  v.push(Math.log(1 + window.reduce((sum, s) => sum + s.audioMetrics.dropouts, 0)) / 3);
  v.push(Math.min(m.latencyMs / 50, 2));
  v.push((Math.log2(m.bufferSize) - 5) / 8);
  const h = last.harmonicState;
  v.push(h.consonance, h.tension, h.velocityEnergy);
  const t = last.transport;
  v.push(t.isPlaying ? 1 : 0, t.cycle.enabled ? 1 : 0, t.tempo / 200);
  for (const category of FLAG_CATEGORIES) {
    for (const severity of SEVERITIES) {
      const count = last.aiAnalysisFlags.filter(
        (f) => lower(f.category) === category && lower(f.severity) === severity,
      ).length;
      v.push(Math.min(count, 3) / 3);
    }
  }
  const actions = last.userMemorySummary?.recentActions ?? [];
  for (const command of COMMANDS) v.push(share(actions, (a) => a === command.type));
  const history = last.issuedCommands ?? [];
  for (const command of COMMANDS) v.push(share(history, (c) => c.type === command.type));
  // What the user did at the last step: the commands new in its history.
  const before = window.length >= 2 ? (window[window.length - 2].issuedCommands ?? []) : null;
  const fresh = before === null ? [] : newItems(before, history);
  for (const command of COMMANDS) v.push(fresh.some((c) => c.type === command.type) ? 1 : 0);
  for (const outcome of BLOOM_OUTCOMES) v.push(share(last.bloomTrace, (b) => lower(b.outcome) === outcome));
  return Float32Array.from(v.map(round4));
}

/** Class indices of one head's probabilities, best first (ties: lower index). */
function ranked(probs: ArrayLike<number>): number[] {
  return Array.from(probs, (_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
}

/**
 * The value an argument head's class stands for in the window with
 * `input` features: a discrete argument's value, or for a range (the tempo)
 * the window's tempo changed by the class's step, checked against the range
 * (undefined when out of it).
 */
function argumentValue(name: string, cls: string, input: ArrayLike<number>): number | string | undefined {
  const spec = ARGUMENTS[name];
  if (spec.kind === "words") return cls;
  if (spec.kind === "integers") return Number(cls);
  const tempo = Math.round(input[FEATURE_LAYOUT.indexOf("transport.tempo")] * 200 * 10) / 10;
  const value = tempo + Number(cls);
  return value >= spec.min! && value <= spec.max! ? value : undefined;
}

/**
 * Decodes the model's `<head>_probs` outputs (one row) for the window with
 * `input` features into a decision: the best command, its best target and
 * the best value of each argument it requires (a tempo out of range leaves
 * no executable command: `none`).
 */
export function decode(outputs: Record<string, ArrayLike<number>>, input: ArrayLike<number>): Decision {
  const commands = ranked(outputs.command_probs);
  let command: DawCommand = { type: HEADS.command[commands[0]] };
  const spec = COMMANDS.find((c) => c.type === command.type);
  // A command that needs a target takes the best archetype; others take none.
  if (spec?.needsTarget) {
    const target = ranked(outputs.target_probs).find((i) => i !== 0);
    if (target !== undefined) command.target = HEADS.target[target];
  }
  for (const name of spec?.args ?? []) {
    const best = ranked(outputs[`${name}_probs`])[0];
    const value = best === undefined ? undefined : argumentValue(name, HEADS[name][best], input);
    if (value === undefined) {
      command = { type: "none" };
      break;
    }
    command.args = { ...command.args, [name]: value };
  }
  const channel = HEADS.channel[ranked(outputs.channel_probs)[0]];
  const intensity = HEADS.intensity[ranked(outputs.intensity_probs)[0]];
  return {
    command,
    top3: commands.slice(0, 3).map((i) => HEADS.command[i]),
    guidance: { channel, intensity, text: PHRASES[channel][intensity] },
  };
}

/** The parts of onnxruntime-web (or onnxruntime-node) this module uses. */
export interface Runtime {
  Tensor: new (type: "float32", data: Float32Array, dims: number[]) => unknown;
}
export interface Session {
  run(feeds: Record<string, unknown>): Promise<Record<string, { data: unknown }>>;
}

/** Runs the model on one window and decodes its answer. */
export async function decide(runtime: Runtime, session: Session, window: Snapshot[]): Promise<Decision> {
  const input = features(window);
  const outputs = await session.run({ [INPUT]: new runtime.Tensor("float32", input, [1, input.length]) });
  const probs: Record<string, ArrayLike<number>> = {};
  // The `<head>_probs` outputs are float32 tensors.
  for (const head of Object.keys(HEADS)) probs[`${head}_probs`] = outputs[`${head}_probs`].data as ArrayLike<number>;
  return decode(probs, input);
}
