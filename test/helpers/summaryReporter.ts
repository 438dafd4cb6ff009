import type { Reporter } from 'vitest/reporters';

type Task = { type: string; mode?: string; result?: { state?: string }; tasks?: Task[] };

/**
 * Prints one plain closing line, `tests: N passed, N failed, N skipped`,
 * after vitest's own report, so that CI logs state the count in a form any
 * reader (or tool) can take without parsing colours.
 */
export default class SummaryReporter implements Reporter {
  onFinished(files: Task[] = []): void {
    const counts = { passed: 0, failed: 0, skipped: 0 };
    const walk = (task: Task) => {
      if (task.type === 'test') {
        if (task.mode === 'skip' || task.mode === 'todo') counts.skipped++;
        else if (task.result?.state === 'pass') counts.passed++;
        else if (task.result?.state === 'fail') counts.failed++;
        else counts.skipped++;
      }
      task.tasks?.forEach(walk);
    };
    files.forEach(walk);
    process.stdout.write(`\ntests: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped\n`);
  }
}
