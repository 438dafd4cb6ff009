// The layering of the edge agent, checked by dependency-cruiser in `npm test`
// (npm run check:layers). As CONVENTIONS.md puts it, dependencies
// flow one way, from the top (main, app, cli) down to certs/.
//
// Layers, lowest first. A module may import from its own layer or a lower
// one; the peers of layers 3, 4 and 5 do not import each other (except where
// a rule below says so). scripts/ and test/ may import anything; nothing in
// agent/ or certs/ imports them.
const LAYERS = [
  { id: 'certs', name: 'certs', path: '^certs/' },
  {
    id: 'core',
    name: 'core',
    // errors/, events/ as directories too, should the error model or the event bus grow into one
    path: '^agent/(errors|error[^/]*|log|events|metrics|failpoints|version|secrets)\\.ts$|^agent/(config|inventory|lifecycle|errors|events)/',
  },
  { id: 'store', name: 'store', path: '^agent/store/' },
  { id: 'services', name: 'transport, broker, ca', path: '^agent/(transport|broker|ca)/' },
  // report (the device report) reads what the others record; it may use onboarding's patterns (globToRegExp), nothing imports it but app.
  {
    id: 'features',
    name: 'discovery, onboarding, sync, runs, directory, configuration, report',
    path: '^agent/(discovery|onboarding|sync|runs|directory|configuration|report)/',
  },
  { id: 'protocols', name: 'protocols', path: '^agent/protocols/' },
  { id: 'api', name: 'api', path: '^agent/api/' },
  { id: 'top', name: 'top (app, main, cli)', path: '^agent/(app|main)\\.ts$|^agent/(app|cli)/' },
];
const any = (layers) => layers.map((l) => `(?:${l.path})`).join('|');

// Libraries whose types stop at agent/transport/ (CONVENTIONS, habit 6).
const TRANSPORT_LIBRARIES = '(^|/)node_modules/(@types/)?(mqtt|mqtt-packet|aedes|aedes-[^/]+|node-opcua[^/]*|multicast-dns|dns-packet|ldapts)/';

/** A module of layer i imports nothing from a higher layer (store: see the exception below). */
const upward = LAYERS.slice(0, -1).map((layer, i) => ({
  name: `layer-${i}-${layer.id}-upward`,
  comment: `${layer.name} (layer ${i}) imports only from layers 0-${i}: ${LAYERS.slice(0, i + 1)
    .map((l) => l.name)
    .join('; ')}`,
  severity: 'error',
  from: { path: layer.path },
  to:
    i === 2
      ? { path: any(LAYERS.slice(6)) } // store -> api, top; store -> layers 3-5: rule layer-2-store-upward-runtime
      : { path: any(LAYERS.slice(i + 1)) },
}));

module.exports = {
  forbidden: [
    {
      name: 'certs-standalone',
      comment: 'certs/ is a library: it imports nothing from agent/, scripts/ or test/',
      severity: 'error',
      from: { path: '^certs/' },
      to: { path: '^(agent|scripts|test)/' },
    },
    ...upward.slice(1),
    {
      name: 'layer-2-store-upward-runtime',
      comment:
        'store (layer 2) implements the small storage interfaces their users own (CONVENTIONS: "the modules that use ' +
        'storage own a small interface that store/ implements"), so it may import their types (import type) from ' +
        'layers 3-5, and nothing else from above',
      severity: 'error',
      from: { path: LAYERS[2].path },
      to: { path: any(LAYERS.slice(3, 6)), dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'layer-3-peers',
      comment:
        'transport (library adapters), broker (Mosquitto configuration and ACL files) and ca (the CA service over certs/ ' +
        'and store) are independent; only transport may use broker: the Mosquitto gate rewrites the ACL file broker renders',
      severity: 'error',
      from: { path: '^agent/(ca|broker)/' },
      to: { path: '^agent/(transport|broker|ca)/', pathNot: '^agent/$1/' },
    },
    {
      name: 'layer-3-transport-not-to-ca',
      comment: 'transport adapts libraries; it does not call the CA service',
      severity: 'error',
      from: { path: '^agent/transport/' },
      to: { path: '^agent/ca/' },
    },
    {
      name: 'layer-4-peers',
      comment:
        'discovery reports facts and onboarding decides: neither imports the other; sync imports neither; runs and directory (Active Directory logins) ' +
        'are on their own. Facts travel on the event bus, and the composition root wires the rest',
      severity: 'error',
      from: { path: '^agent/(discovery|onboarding|sync|runs|directory|configuration)/' },
      to: { path: '^agent/(discovery|onboarding|sync|runs|directory|configuration)/', pathNot: '^agent/$1/' },
    },
    {
      name: 'layer-5-peers',
      comment: 'each protocol service (protocols/mqtt, protocols/opcua) stands alone',
      severity: 'error',
      from: { path: '^agent/protocols/([^/]+)/' },
      to: { path: '^agent/protocols/', pathNot: '^agent/protocols/$1/' },
    },
    {
      name: 'not-in-a-layer',
      comment: 'every module under agent/ belongs to a layer: add a new directory to LAYERS in .dependency-cruiser.cjs',
      severity: 'error',
      from: { path: '^agent/', pathNot: any(LAYERS) },
      to: {},
    },
    {
      name: 'shipped-not-to-tests-or-scripts',
      comment: 'fakes and helpers live in test/ and scripts/, never in shipped code',
      severity: 'error',
      from: { path: '^(agent|certs)/' },
      to: { path: '^(test|scripts)/' },
    },
    {
      name: 'library-types-stop-at-transport',
      comment: 'mqtt, aedes, node-opcua*, multicast-dns, dns-packet and ldapts are used only in agent/transport/ (CONVENTIONS, habit 6)',
      severity: 'error',
      from: { path: '^(agent|certs)/', pathNot: '^agent/transport/' },
      to: { path: TRANSPORT_LIBRARIES },
    },
    {
      name: 'sqlite-only-in-store',
      comment: 'SQL lives only in agent/store/ (the SQL text itself: scripts/check/sql.mjs)',
      severity: 'error',
      from: { path: '^(agent|certs)/', pathNot: '^agent/store/' },
      to: { path: '(^|/)node_modules/(@types/)?better-sqlite3/' },
    },
    {
      name: 'no-circular',
      comment: 'no import cycles; a cycle with an `import type` in it is none at run time (the compiler erases the import)',
      severity: 'error',
      from: {},
      to: { circular: true, dependencyTypesNot: ['type-only'], viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'an import that does not resolve',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'shipped-not-to-dev-dependencies',
      comment: 'agent/ and certs/ run from a production install: no devDependency at run time',
      severity: 'error',
      from: { path: '^(agent|certs)/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-non-package-json',
      comment: 'every package imported is in package.json, not only present as a dependency of a dependency',
      severity: 'error',
      from: {},
      to: { dependencyTypes: ['npm-no-pkg', 'npm-unknown'] },
    },
  ],
  options: {
    doNotFollow: { path: '(^|/)node_modules/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.test.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.d.ts', '.js', '.cjs', '.mjs', '.json'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
