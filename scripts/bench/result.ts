/** One figure of `npm run bench`; its own module so that run.ts and the benchmarks it runs form no import cycle. */
export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  /** What bounds this figure, for comparison. */
  limit: string;
  /** The same work per CPU-second of the process that did it (where the row measures a rate): what a per-CPU figure is compared with. */
  perCpuSecond?: number;
}
