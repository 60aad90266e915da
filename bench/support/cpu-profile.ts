// Reads a V8 .cpuprofile (written by `node --cpu-prof`) and ranks where the time went: by
// function (self time) and by where the code lives (our src/, a package, node internals).
// Run alone as `node dist/bench/support/cpu-profile.js FILE.cpuprofile [top]`.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface TimeShare {
  name: string;
  selfMs: number;
  percent: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** Sampled time the thread had work (total minus idle); the percentages are of this. */
  busyMs: number;
  byFunction: TimeShare[];
  byPlace: TimeShare[];
}

export function summarizeProfile(file: string, top = 25): ProfileSummary {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const nodesById = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUsById = new Map<number, number>();
  profile.samples.forEach((id, index) => selfUsById.set(id, (selfUsById.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0)));
  const totalUs = [...selfUsById.values()].reduce((sum, value) => sum + value, 0);
  let idleUs = 0;
  const byFunction = new Map<string, number>();
  const byPlace = new Map<string, number>();
  for (const [id, selfUs] of selfUsById) {
    const frame = nodesById.get(id)!.callFrame;
    // Idle is time waiting for the event loop, not work; it is left out of the ranking.
    if (frame.functionName === '(idle)') {
      idleUs += selfUs;
      continue;
    }
    const fn = `${frame.functionName || '(anonymous)'} ${shortUrl(frame.url)}${frame.url ? `:${frame.lineNumber + 1}` : ''}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + selfUs);
    const place = placeOf(frame);
    byPlace.set(place, (byPlace.get(place) ?? 0) + selfUs);
  }
  const busyUs = totalUs - idleUs;
  const ranked = (shares: Map<string, number>) =>
    [...shares.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, selfMs: Math.round(us / 100) / 10, percent: Math.round((1000 * us) / busyUs) / 10 }));
  return { totalMs: Math.round(totalUs / 1000), busyMs: Math.round(busyUs / 1000), byFunction: ranked(byFunction), byPlace: ranked(byPlace) };
}

/** Our own files by path, packages by name, node's own code as `node:…`, the rest as V8 shows it. */
function placeOf(frame: ProfileNode['callFrame']): string {
  const { url, functionName } = frame;
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const inPackage = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (inPackage) return inPackage[1];
  if (url.startsWith('node:')) return url.split('/').slice(0, 2).join('/');
  const ours = /\/dist\/(.+)$/.exec(url);
  return ours ? ours[1] : url;
}

function shortUrl(url: string): string {
  return url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, '').replace(/^file:\/\//, '');
}

export function formatProfileSummary(summary: ProfileSummary): string {
  const lines = [`sampled ${summary.totalMs} ms, busy ${summary.busyMs} ms (percentages are of busy time)`, '', 'self time by place:'];
  for (const share of summary.byPlace) lines.push(`  ${share.percent.toFixed(1).padStart(5)}%  ${String(share.selfMs).padStart(8)} ms  ${share.name}`);
  lines.push('', 'self time by function:');
  for (const share of summary.byFunction) lines.push(`  ${share.percent.toFixed(1).padStart(5)}%  ${String(share.selfMs).padStart(8)} ms  ${share.name}`);
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    console.error('usage: node dist/bench/support/cpu-profile.js FILE.cpuprofile [top]');
    process.exitCode = 2;
  } else {
    console.log(formatProfileSummary(summarizeProfile(file, top ? Number(top) : 25)));
  }
}

/** Finds the .cpuprofile a child wrote into `profileDir`, prints its hot spots and returns them. */
export function reportProfile(profileDir: string): { file: string; top: ProfileSummary } | null {
  const file = fs.existsSync(profileDir) ? fs.readdirSync(profileDir).find((name) => name.endsWith('.cpuprofile')) : undefined;
  if (!file) {
    console.error(`no .cpuprofile was written in ${profileDir}`);
    return null;
  }
  const fullPath = path.join(profileDir, file);
  const top = summarizeProfile(fullPath, 20);
  console.log(`\ncoordinator CPU profile (${fullPath}):\n${formatProfileSummary(top)}`);
  return { file: fullPath, top };
}
