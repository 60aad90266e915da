// Figures for benchmark reports: exact percentiles over recorded samples, Prometheus text
// lookups, per-process CPU time, and a plain-text table.
import fs from 'node:fs';
import os from 'node:os';

export interface LatencySummary {
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  maxMs: number;
}

/** Nearest-rank percentiles over every sample (an exact sort; sample counts here are small). */
export function summarizeLatencies(samplesMs: readonly number[]): LatencySummary {
  if (samplesMs.length === 0) return { p50Ms: NaN, p99Ms: NaN, meanMs: NaN, maxMs: NaN };
  const sorted = Float64Array.from(samplesMs).sort();
  const at = (fraction: number) => sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)];
  const sum = sorted.reduce((total, value) => total + value, 0);
  return { p50Ms: at(0.5), p99Ms: at(0.99), meanMs: sum / sorted.length, maxMs: sorted[sorted.length - 1] };
}

/** The value of an unlabelled sample (e.g. `x_sum`) in Prometheus text, or null. */
export function prometheusValue(text: string, sampleName: string): number | null {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sampleName} `)) return Number(line.slice(sampleName.length + 1).split(' ')[0]);
  }
  return null;
}

/** CPU seconds (user + system) a process has used so far, from /proc; null off Linux. */
export function cpuSecondsOfPid(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticksPerSecond = 100; // USER_HZ, 100 on every mainstream Linux
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
  } catch {
    return null;
  }
}

/** CPU seconds every process on the machine has used so far (all cores), from /proc; null off Linux. */
export function cpuSecondsOfMachine(): number | null {
  try {
    const total = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal: busy is everything but idle and iowait.
    const [user, nice, system, , , irq, softirq, steal] = total;
    return (user + nice + system + irq + softirq + (steal ?? 0)) / 100;
  } catch {
    return null;
  }
}

export function cpuSecondsOfSelf(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

export interface MachineInfo {
  cpuCount: number;
  cpuModel: string;
  totalMemoryGiB: number;
  platform: string;
  release: string;
  nodeVersion: string;
  loadAverage1mAtStart: number;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpuCount: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    totalMemoryGiB: round(os.totalmem() / 2 ** 30, 1),
    platform: os.platform(),
    release: os.release(),
    nodeVersion: process.version,
    loadAverage1mAtStart: round(os.loadavg()[0], 2),
  };
}

/** statfs magic numbers of memory-backed filesystems, where fsync costs nothing. */
const memoryFilesystems = new Set([0x01021994 /* tmpfs */, 0x858458f6 /* ramfs */]);

export function isMemoryBacked(dir: string): boolean {
  try {
    return memoryFilesystems.has(fs.statfsSync(dir).type);
  } catch {
    return false;
  }
}

export function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** Left-aligned first column, right-aligned others. */
export function formatTable(rows: string[][]): string {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows
    .map((row) => row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column]))).join('  '))
    .join('\n');
}
