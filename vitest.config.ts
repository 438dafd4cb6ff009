import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/globalSetup.ts'],
    pool: 'forks',
    // Two test files at a time. Most integration files spend their time
    // waiting (a daemon's start, TLS handshakes, a broker, an OPC UA server),
    // so two on two cores halve the suite (about 13 min against 17 run one at
    // a time). Every file uses its own ports (chosen by the kernel), temporary
    // directories and, for the Samba DCs, a loopback address of its own, so
    // two files never share anything but the CPU.
    maxWorkers: 2,
    minWorkers: 1,
    // A bound for a hung test, not a speed check: on a loaded 2-core CI
    // machine one CLI run (a Node.js start) takes 2-5 s and many tests make
    // ten of them, or start a daemon, Mosquitto and OPC UA servers.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/helpers/summaryReporter.ts'],
  },
});
