import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/globalSetup.ts'],
    pool: 'forks',
    // A bound for a hung test, not a speed check: on a loaded 2-core CI
    // machine one CLI run (a Node.js start) takes 2-5 s and many tests make
    // ten of them, or start a daemon, Mosquitto and OPC UA servers.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/helpers/summaryReporter.ts'],
  },
});
